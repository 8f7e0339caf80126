"""Model configurations and named presets.

The three published presets (ARPG-L / XL / XXL) match the released checkpoints exactly: parameter
names, shapes and counts. The small presets are for tests, demos and experiments on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..errors import ARPGError
from ..util.configs import check_field_types, from_dict_strict, preset_params
from .rope import CLASS_ROPE_MODES
from .control import CONDITION_MODES, ENCODERS


def swiglu_hidden(dim: int, multiple_of: int = 256) -> int:
    """FFN width used by Llama/LlamaGen/ARPG: 2/3 of 4*dim, rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class ARPGConfig:
    """Hyper-parameters of the two-pass ARPG transformer.

    ``n_layer`` counts both passes: ``n_layer // 2`` self (content) blocks and as many cross (guided)
    blocks. ``grid_size`` is the side of the token grid (16 for the published 256-token models).
    """

    dim: int = 1024
    n_layer: int = 24
    n_head: int = 16
    vocab_size: int = 16384
    num_classes: int = 1000
    grid_size: int = 16
    ffn_hidden: int | None = None  # None -> swiglu_hidden(dim, multiple_of)
    multiple_of: int = 256
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    class_dropout: float = 0.1  # training only: labels replaced by the null class (for CFG)
    embed_dropout: float = 0.1
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    # Class conditioning. The published models zero the class token's RoPE slot, so its key is exactly zero
    # and every query scores it 0: it can only be attended by pushing all other scores below 0. Models
    # trained from scratch may instead give it the identity rotation ("identity": a learned, attendable
    # key) and start every Pass-2 query from [MASK] + the class embedding (``class_queries``), so each
    # prediction sees the label directly. Defaults match the published weights.
    class_rope: str = "zero"
    class_queries: bool = False
    # ControlARPG (arpg.model.control): a condition encoder whose per-cell features enter the Pass-2 queries. Off
    # (condition_channels 0) in every preset, so published checkpoints load and behave exactly as before.
    condition_channels: int = 0  # channels of the condition map; 0 = no condition encoder
    condition_stride: int = 1  # map pixels per grid cell (a power of 2): maps are grid*stride pixels a side
    condition_kind: str = ""  # what the maps are ("canny", "layout", or a user's name): checked at use
    condition_mode: str = "add"  # "add" (to [MASK]) or "replace" ([MASK]): see arpg.model.control
    condition_encoder: str = "conv"
    condition_width: int = 64  # encoder channels
    condition_dropout: float = 0.1  # training only: conditions dropped (plain queries), for guidance "drop"
    # Text-to-image (arpg.model.text): prompt features [text_len, text_dim] become the Pass-1 prefix in place of
    # the class token. Off (text_dim 0) in every class preset, so class and ControlARPG models are unchanged.
    text_dim: int = 0  # width of the prompt features (2048 for FLAN-T5-XL); 0 = class-conditional
    text_len: int = 120  # prefix slots: prompt tokens per image (LlamaGen's T5 features: 120)
    caption_dropout: float = 0.1  # training only: captions replaced by the learned null caption (for guidance)

    def __post_init__(self) -> None:
        problems = check_field_types(self)
        if problems:
            raise ARPGError("invalid ARPGConfig: " + "; ".join(problems))
        if self.ffn_hidden is None:
            self.ffn_hidden = swiglu_hidden(self.dim, self.multiple_of)
        if min(self.dim, self.ffn_hidden, self.multiple_of) < 1:
            problems.append("dim, ffn_hidden and multiple_of must be >= 1")
        if not (self.norm_eps > 0 and self.rope_base > 0):
            problems.append(f"norm_eps and rope_base must be > 0 (got {self.norm_eps}, {self.rope_base})")
        for name in ("class_dropout", "embed_dropout", "resid_dropout", "ffn_dropout", "condition_dropout",
                     "caption_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1] (got {getattr(self, name)})")
        if self.n_layer < 2 or self.n_layer % 2:
            problems.append(f"n_layer must be even and >= 2 (got {self.n_layer})")
        if self.n_head < 1 or self.dim % self.n_head:
            problems.append(f"dim {self.dim} is not divisible by n_head {self.n_head}")
        elif (self.dim // self.n_head) % 4:
            problems.append(f"head_dim {self.dim // self.n_head} must be a multiple of 4 for 2D RoPE")
        if self.grid_size < 1:
            problems.append(f"grid_size must be >= 1 (got {self.grid_size})")
        if self.class_rope not in CLASS_ROPE_MODES:
            problems.append(f"class_rope must be one of {CLASS_ROPE_MODES} (got {self.class_rope!r})")
        if self.condition_channels < 0 or self.condition_width < 1:
            problems.append("condition_channels must be >= 0 and condition_width >= 1")
        if self.condition_stride < 1 or self.condition_stride & (self.condition_stride - 1):
            problems.append(f"condition_stride must be a power of 2 (got {self.condition_stride})")
        if self.condition_mode not in CONDITION_MODES:
            problems.append(f"condition_mode must be one of {CONDITION_MODES} (got {self.condition_mode!r})")
        if self.condition_encoder not in ENCODERS:
            problems.append(f"condition_encoder must be one of {ENCODERS} (got {self.condition_encoder!r})")
        if self.text_dim < 0 or self.text_len < 1:
            problems.append(f"text_dim must be >= 0 and text_len >= 1 (got {self.text_dim}, {self.text_len})")
        if self.text_dim and self.class_rope != "identity":
            problems.append("a text-conditioned model needs class_rope='identity' (with 'zero' every prompt key is "
                            "zero and no prompt token can be told apart)")
        if self.vocab_size < 2 or self.num_classes < 1:
            problems.append("vocab_size must be >= 2 and num_classes >= 1")
        if problems:
            raise ARPGError("invalid ARPGConfig: " + "; ".join(problems))

    # Derived quantities -------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def n_cells(self) -> int:
        """Number of image tokens (grid cells)."""
        return self.grid_size * self.grid_size

    @property
    def controlled(self) -> bool:
        """Whether the model has a condition encoder (ControlARPG)."""
        return self.condition_channels > 0

    @property
    def texted(self) -> bool:
        """Whether the model is conditioned on prompt features (text-to-image) instead of class labels."""
        return self.text_dim > 0

    @property
    def prefix_len(self) -> int:
        """Pass-1 tokens before the first cell: the prompt's slots, or the class token."""
        return self.text_len if self.texted else 1

    @property
    def condition_side(self) -> int:
        """Side in pixels of the condition maps the encoder takes."""
        return self.grid_size * self.condition_stride

    @property
    def mask_id(self) -> int:
        """Embedding row of the [MASK] query token."""
        return self.vocab_size

    @property
    def class_offset(self) -> int:
        """Embedding row of class 0; class c lives at ``class_offset + c``."""
        return self.vocab_size + 1

    @property
    def null_class_id(self) -> int:
        """Embedding row of the unconditional (null) class used for classifier-free guidance."""
        return self.vocab_size + 1 + self.num_classes

    @property
    def n_embeddings(self) -> int:
        # codes + [MASK] + classes + null class + one unused row kept so published weights load.
        return self.vocab_size + 1 + self.num_classes + 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ARPGConfig":
        return from_dict_strict(cls, d)


_NO_DROPOUT = dict(class_dropout=0.1, embed_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0)

ARPG_PRESETS: dict[str, dict[str, Any]] = {
    # Published models (arXiv 2503.10568). Parameter counts 319,845,376 / 718,997,760 / 1,302,449,664.
    "ARPG-L": dict(dim=1024, n_layer=24, n_head=16),
    "ARPG-XL": dict(dim=1280, n_layer=36, n_head=20),
    "ARPG-XXL": dict(dim=1536, n_layer=48, n_head=24),
    # Small models for CPU work. head_dim stays 64 except in the test-sized ones.
    "ARPG-S": dict(dim=512, n_layer=12, n_head=8, num_classes=1000),
    # The shipped demo model: 8x8 codes of 32x32 Animal-MNIST silhouettes, ~2.6M parameters, sized so it
    # trains in well under an hour on 2 CPU cores. Trained from scratch, so it uses the attendable class key
    # and class-aware queries (the pilots that chose this: benchmarks/results/demo_pilots.md).
    "ARPG-demo": dict(dim=192, n_layer=6, n_head=3, vocab_size=256, num_classes=10, grid_size=8,
                      multiple_of=64, class_rope="identity", class_queries=True, **_NO_DROPOUT),
    # Text-to-image: ARPG-XL on FLAN-T5-XL features (2048 wide, 120 tokens) at 512 px (a 32x32 grid of a
    # 16x-downsampling tokenizer), the paper's later version; and a tiny one for tests.
    "ARPG-XL-T2I": dict(dim=1280, n_layer=36, n_head=20, num_classes=1, grid_size=32, text_dim=2048, text_len=120,
                        class_rope="identity"),
    # The embedded text-to-image demo: ARPG-demo's trunk on 64 px scenes (8x8 codes of a 512-code tokenizer),
    # conditioned on a small word-level encoder's features (64 wide, 12 words).
    "ARPG-demo-T2I": dict(dim=192, n_layer=6, n_head=3, vocab_size=512, num_classes=1, grid_size=8, multiple_of=64,
                          text_dim=64, text_len=12, class_rope="identity", **_NO_DROPOUT),
    "ARPG-tiny-T2I": dict(dim=64, n_layer=4, n_head=4, vocab_size=64, num_classes=1, grid_size=8, multiple_of=32,
                          text_dim=24, text_len=6, class_rope="identity", **_NO_DROPOUT),
    "ARPG-tiny": dict(dim=64, n_layer=4, n_head=4, vocab_size=64, num_classes=10, grid_size=8,
                      multiple_of=32, **_NO_DROPOUT),
    "ARPG-nano": dict(dim=32, n_layer=2, n_head=2, vocab_size=16, num_classes=4, grid_size=4,
                      multiple_of=16, **_NO_DROPOUT),
}


def preset_names() -> list[str]:
    return list(ARPG_PRESETS)


def get_preset(name: str, **overrides: Any) -> ARPGConfig:
    """Return the named preset's config with ``overrides`` applied (any :class:`ARPGConfig` field)."""
    params = preset_params(ARPG_PRESETS, ARPGConfig, name, overrides)
    if "dim" in overrides and "ffn_hidden" not in overrides:
        params.pop("ffn_hidden", None)
    return ARPGConfig(**params)
