"""Text conditioning: prompt features become the prefix of Pass 1 in place of the class token.

The paper's later version (ICLR 2026) conditions ARPG-XL on FLAN-T5-XL prompt embeddings and says only that
they "condition the token sequence"; the authors have not released that code. What is built here follows the
text-to-image pieces the published code still carries from LlamaGen, and is our inference:

* a caption projector (2-layer MLP with a tanh-GELU, ``text_dim -> dim -> dim``) turns the ``L = text_len``
  prompt features into ``L`` prefix tokens of Pass 1, all at the class token's RoPE slot (text models use the
  identity rotation there, so prefix keys are attendable by content; the features carry their own order);
* a padding mask: padded prefix slots are never attended (each padded slot sees only itself, so it stays
  finite and nothing else reads it);
* a learned null caption (``L`` feature vectors, every slot valid), substituted with probability
  ``caption_dropout`` in training and used by the unconditional half of guidance;
* Pass-2 queries see the prefix through the shared keys/values, as they see the class token.

A prompt's features are ``[B, L, text_dim]`` with a mask ``[B, L]`` (True = a real token), left-padded as
LlamaGen stores T5 features (the real tokens at the end); any padding side works.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import ARPGError


class CaptionProjector(nn.Module):
    """Prompt features ``[B, L, text_dim]`` -> prefix tokens ``[B, L, dim]``; holds the learned null caption."""

    def __init__(self, text_dim: int, dim: int, length: int):
        super().__init__()
        self.fc1 = nn.Linear(text_dim, dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(dim, dim)
        self.null_caption = nn.Parameter(torch.empty(length, text_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.fc1, self.fc2):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        nn.init.normal_(self.null_caption, std=1 / math.sqrt(self.null_caption.shape[1]))

    def forward(self, text: torch.Tensor, mask: torch.Tensor,
                drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefix tokens and their mask; rows where ``drop`` [B] is True get the null caption (all valid)."""
        if drop is not None:
            d = drop.to(text.device)
            text = torch.where(d[:, None, None], self.null_caption.to(text.dtype).expand_as(text), text)
            mask = mask | d[:, None]
        return self.fc2(self.act(self.fc1(text.to(self.fc1.weight.dtype)))), mask

    def null(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The null caption's features and mask for ``rows`` rows."""
        L = self.null_caption.shape[0]
        return (self.null_caption.expand(rows, -1, -1),
                torch.ones(rows, L, dtype=torch.bool, device=self.null_caption.device))


def check_text(text: torch.Tensor, mask: torch.Tensor | None, batch: int | None, length: int,
               width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-line errors for prompt features that do not fit the model; returns (features, mask) with a full mask
    when none was given."""
    if not isinstance(text, torch.Tensor) or not text.is_floating_point() or text.dim() != 3:
        raise ARPGError(f"prompt features must be a float tensor [B, {length}, {width}], got "
                        f"{type(text).__name__ if not isinstance(text, torch.Tensor) else list(text.shape)}")
    if tuple(text.shape[1:]) != (length, width) or (batch is not None and text.shape[0] != batch):
        want = f"[{batch if batch is not None else 'B'}, {length}, {width}]"
        raise ARPGError(f"prompt features must be shaped {want} (rows, text_len, text_dim), got {list(text.shape)}")
    if mask is None:
        mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    mask = torch.as_tensor(mask, dtype=torch.bool, device=text.device)
    if tuple(mask.shape) != tuple(text.shape[:2]):
        raise ARPGError(f"the prompt mask must be shaped {list(text.shape[:2])}, got {list(mask.shape)}")
    if not bool(mask.any(dim=1).all()):
        raise ARPGError("every prompt needs at least one real token (an empty prompt has none)")
    if not bool(torch.isfinite(text).all()):
        raise ARPGError("prompt features must be finite (found NaN or inf)")
    return text, mask


def key_mask(valid: torch.Tensor, queries: torch.Tensor, keys: int) -> torch.Tensor:
    """``[R, 1, Q, keys]`` mask from the per-row valid keys ``valid`` [R, K <= keys] (slots past K are valid):
    key ``j`` is visible to query position ``queries[q]`` when it is valid or is that query's own slot (so a
    padded slot still attends to something and stays finite)."""
    R, K = valid.shape
    full = torch.ones(R, keys, dtype=torch.bool, device=valid.device)
    full[:, :min(K, keys)] = valid[:, :keys]
    own = torch.arange(keys, device=valid.device)[None, :] == queries[:, None]  # [Q, keys]
    return (full[:, None, :] | own[None]).unsqueeze(1)


def prefix_masks(valid: torch.Tensor, L: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced masks with a prompt prefix of ``L`` slots (``valid`` [B, L]): Pass 1 over ``L + n - 1``
    inputs, causal, never a padded prompt slot; Pass 2's query ``i`` sees the prompt and the first ``i`` tokens."""
    T = L + n - 1
    pos = torch.arange(T, device=valid.device)
    causal = pos[None, :] <= pos[:, None]  # [T, T]
    mask_1 = key_mask(valid, pos, T) & causal
    sees = pos[None, :] <= (L - 1 + torch.arange(n, device=valid.device))[:, None]  # [n, T]
    mask_2 = key_mask(valid, torch.full((n,), -1, device=valid.device), T) & sees
    return mask_1, mask_2
