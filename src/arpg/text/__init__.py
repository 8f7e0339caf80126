"""Prompt encoders for text-to-image ARPG: prompts in, features ``[B, L, D]`` and a mask ``[B, L]`` out.

Every encoder answers the same interface (:class:`TextEncoder`): ``encode(prompts)`` returns float features
with the real tokens *last* (left padding, as LlamaGen stores T5 features) and the mask of real tokens, each
prompt cut to ``length`` tokens. :class:`T5TextEncoder` wraps a Hugging Face ``transformers`` T5 / UMT5 encoder
(``google/flan-t5-xl`` for the paper's setting, or a local folder) behind the ``t2i`` extra.

Prompts longer than ``length`` tokens are **truncated** (the first ``length`` tokens are kept) and the encoder
warns once per call, naming how many were cut: a long caption is a normal input, not an error.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import torch

from ..errors import ARPGError

#: The paper's prompt encoder (arXiv 2503.10568, later version): FLAN-T5-XL, 2048-wide features.
PAPER_ENCODER = "google/flan-t5-xl"


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """One-line errors for prompts that cannot be encoded; returns them as a list."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ARPGError("prompts must be a list of strings (one per image)")
    prompts = list(prompts)
    if not prompts:
        raise ARPGError("no prompts given")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ARPGError(f"prompt {i} is a {type(p).__name__}, not a string")
        if not p.strip():
            raise ARPGError(f"prompt {i} is empty: describe the image to generate")
    return prompts


def left_pad(features: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``features`` [B, l, D] / ``mask`` [B, l] (real tokens first) -> ``length`` slots with the
    real tokens last; tokens past ``length`` are cut."""
    B, l, D = features.shape
    out = features.new_zeros(B, length, D)
    keep = torch.zeros(B, length, dtype=torch.bool, device=features.device)
    counts = mask.sum(dim=1).clamp(max=length).tolist()
    for b, c in enumerate(counts):
        if c:
            out[b, length - c:] = features[b, :c]
            keep[b, length - c:] = True
    return out, keep


class TextEncoder:
    """The interface: ``dim`` (feature width), ``length`` (slots per prompt) and :meth:`encode`."""

    dim: int
    length: int

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 features [B, length, dim] (real tokens last) and the mask [B, length] of real tokens."""
        raise NotImplementedError


class T5TextEncoder(TextEncoder):
    """A Hugging Face T5 / UMT5 encoder (``transformers``, the ``t2i`` extra) and its tokenizer."""

    def __init__(self, model, tokenizer, length: int = 120, device: str | torch.device = "cpu"):
        self.model, self.tokenizer = model.eval().to(device), tokenizer
        self.dim = int(model.config.d_model)
        self.length = int(length)
        self.device = torch.device(device)

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = check_prompts(prompts)
        full = self.tokenizer(prompts, padding=True, truncation=False, return_tensors="pt")
        cut = int((full["attention_mask"].sum(dim=1) > self.length).sum())
        if cut:
            warnings.warn(f"{cut} of {len(prompts)} prompts are longer than {self.length} tokens: only their first "
                          f"{self.length} tokens condition the image", stacklevel=2)
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.length,
                               return_tensors="pt").to(self.device)
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return left_pad(hidden.float(), batch["attention_mask"].bool(), self.length)


def load_text_encoder(source: str | os.PathLike = PAPER_ENCODER, length: int = 120,
                      device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> TextEncoder:
    """A T5 / UMT5 encoder from a local folder (``save_pretrained`` layout: config, weights, tokenizer files) or a
    Hub name (through the local Hugging Face cache), or a word-level encoder folder saved by
    :mod:`arpg.text.words`. One-line errors for a missing package or files."""
    from .words import is_word_encoder, load_word_encoder

    if is_word_encoder(source):
        encoder = load_word_encoder(source, length, device)
        if dtype is not None:
            encoder.net.to(dtype)
        return encoder
    try:
        import transformers
    except ImportError:
        raise ARPGError("text encoders need the transformers package: pip install 'arpg[t2i]'") from None
    path = str(source)
    try:  # a Hub name goes through the local cache (HF_HUB_OFFLINE=1: the cache only)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        config = transformers.AutoConfig.from_pretrained(path)
        kind = transformers.UMT5EncoderModel if config.model_type == "umt5" else transformers.T5EncoderModel
        model = kind.from_pretrained(path)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ARPGError(f"cannot load the text encoder {path}: {first}. Fetch it once where there is a network "
                        f"(`huggingface-cli download {path}`) or pass a local folder") from None
    if dtype is not None:
        model = model.to(dtype)
    return T5TextEncoder(model, tokenizer, length, device)
