"""VQ tokenizer configuration and named presets.

``VQ-16`` is LlamaGen's tokenizer exactly: 71,883,403 parameters, 344 state-dict entries,
loads ``vq_ds16_c2i.pt``. The small presets are for 28–64 px images on a CPU; their codebook sizes match
the small ARPG presets (``VQ-demo`` ↔ ``ARPG-demo``: 256 codes, 32 px → 8×8; ``VQ-tiny`` ↔
``ARPG-tiny``: 64 codes, 32 px → 8×8).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..errors import ARPGError
from ..util.configs import from_dict_strict, preset_params


@dataclass
class VQConfig:
    """Hyper-parameters of the convolutional VQ autoencoder.

    The encoder has ``len(ch_mult)`` levels with ``enc_blocks`` residual blocks each and a stride-2
    downsample between levels, so the downsampling factor is ``2 ** (len(ch_mult) - 1)``. The decoder
    mirrors it with ``dec_blocks`` residual blocks per level. ``usage_buffer`` is the length of
    LlamaGen's ``quantize.codebook_used`` buffer (kept so its checkpoints load; 0 = no buffer).
    """

    codebook_size: int = 16384
    codebook_dim: int = 8
    in_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    z_channels: int = 256
    enc_blocks: int = 2
    dec_blocks: int = 3
    attn_lowest: bool = True  # self-attention after every res block of the lowest-resolution level
    mid_attn: bool = True  # res–attn–res in the middle stacks (else res–res)
    norm_groups: int = 32
    norm_eps: float = 1e-6
    l2_norm: bool = True  # L2-normalise encoder outputs and codebook rows before the lookup
    usage_buffer: int = 65536
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        problems = []
        if self.in_channels not in (1, 3):
            problems.append(f"in_channels must be 1 or 3 (got {self.in_channels})")
        if self.codebook_size < 2 or self.codebook_dim < 1:
            problems.append(f"codebook_size must be >= 2 and codebook_dim >= 1 "
                            f"(got {self.codebook_size}, {self.codebook_dim})")
        if not self.ch_mult or min(self.ch_mult) < 1 or self.ch < 1:
            problems.append(f"ch and ch_mult must be positive (got ch={self.ch}, ch_mult={self.ch_mult})")
        if self.enc_blocks < 1 or self.dec_blocks < 1:
            problems.append("enc_blocks and dec_blocks must be >= 1")
        widths = sorted({self.ch * m for m in self.ch_mult})
        bad = [w for w in widths if self.norm_groups < 1 or w % self.norm_groups]
        if bad:
            problems.append(f"channel widths {bad} are not divisible by norm_groups {self.norm_groups}")
        if problems:
            raise ARPGError("invalid VQConfig: " + "; ".join(problems))

    @property
    def downsample(self) -> int:
        """Side length of the image patch that one code covers."""
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VQConfig":
        return from_dict_strict(cls, d)

    @staticmethod
    def looks_like(d: Any) -> bool:
        """Whether a stored config dict describes a VQ tokenizer (rather than, say, an ARPG model)."""
        return isinstance(d, dict) and "codebook_size" in d and "ch_mult" in d


_SMALL = dict(usage_buffer=0, attn_lowest=False)

VQ_PRESETS: dict[str, dict[str, Any]] = {
    # LlamaGen VQ-16: 16x downsampling, 16384 x 8 codebook.
    "VQ-16": dict(),
    # 8x downsampling for 64 px images (-> 8x8 codes).
    "VQ-small": dict(codebook_size=1024, ch=64, ch_mult=(1, 1, 2, 2), z_channels=128, enc_blocks=2,
                     dec_blocks=2, attn_lowest=True, norm_groups=32, usage_buffer=0),
    # The demo tokenizer: 4x downsampling (64 px -> 16x16, 32 px -> 8x8), trainable on a CPU.
    # Narrow at full resolution, where convolutions cost most.
    "VQ-demo": dict(codebook_size=256, ch=16, ch_mult=(1, 2, 4), z_channels=64, enc_blocks=1,
                    dec_blocks=2, norm_groups=8, **_SMALL),
    # The text-to-image demo's tokenizer: 8x downsampling of 64 px RGB scenes (-> 8x8 codes), trainable on a CPU.
    "VQ-scenes": dict(codebook_size=512, ch=16, ch_mult=(1, 2, 4, 4), z_channels=64, enc_blocks=1,
                      dec_blocks=2, norm_groups=8, **_SMALL),
    # Test-sized: 4x downsampling, ~170k parameters.
    "VQ-tiny": dict(codebook_size=64, codebook_dim=4, ch=16, ch_mult=(1, 1, 2), z_channels=32,
                    enc_blocks=1, dec_blocks=1, norm_groups=8, **_SMALL),
}


def vq_preset_names() -> list[str]:
    return list(VQ_PRESETS)


def get_vq_preset(name: str, **overrides: Any) -> VQConfig:
    """Return the named preset's config with ``overrides`` applied (any :class:`VQConfig` field)."""
    return VQConfig(**preset_params(VQ_PRESETS, VQConfig, name, overrides, what="tokenizer preset"))
