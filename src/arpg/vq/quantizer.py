"""Nearest-neighbour vector quantiser with L2-normalised codes (LlamaGen's ``quantize`` module)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQConfig

_ROWS_PER_CHUNK = 8192  # bounds the distance matrix (rows x codebook) for big batches


class VectorQuantizer(nn.Module):
    """Holds the codebook (``embedding.weight`` [K, D]) and maps latents to their nearest rows.

    With ``l2_norm`` both latents and codebook rows live on the unit sphere, and decoding uses the
    *normalised* rows, as in LlamaGen.
    """

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.l2_norm = cfg.l2_norm
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_dim)
        self.reset_codebook()
        if cfg.usage_buffer:
            # LlamaGen's rolling record of recently used codes. Kept (and saved) so its checkpoints load
            # strictly; our trainer tracks usage itself.
            self.register_buffer("codebook_used", torch.zeros(cfg.usage_buffer))

    @torch.no_grad()
    def reset_codebook(self) -> None:
        n = self.embedding.weight.shape[0]
        self.embedding.weight.uniform_(-1.0 / n, 1.0 / n)
        if self.l2_norm:
            self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))

    def normalize(self, z: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return F.normalize(z, dim=dim) if self.l2_norm else z

    def codebook(self) -> torch.Tensor:
        """The rows actually used for lookup and decoding: [K, D]."""
        return self.normalize(self.embedding.weight, dim=-1)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [B, h, w] of the rows closest (L2) to the already-normalised latents ``z`` [B, D, h, w]."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        book = self.codebook().to(flat.dtype)
        book_sq = book.pow(2).sum(1)
        out = torch.empty(flat.shape[0], dtype=torch.long, device=z.device)
        for i in range(0, flat.shape[0], _ROWS_PER_CHUNK):
            rows = flat[i:i + _ROWS_PER_CHUNK]
            dist = rows.pow(2).sum(1, keepdim=True) + book_sq - 2 * rows @ book.t()
            out[i:i + _ROWS_PER_CHUNK] = dist.argmin(1)
        return out.view(b, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantised latents [B, D, h, w] for codes [B, h, w]."""
        return F.embedding(codes, self.codebook()).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise normalised latents for training.

        Returns ``(z_st, codes, codebook_loss, commit_loss)``: ``z_st`` equals the quantised latents in
        the forward pass but passes gradients straight through to ``z``; the codebook loss pulls codes
        towards encoder outputs, the (unweighted) commitment loss pulls outputs towards their codes.
        """
        codes = self.nearest(z.detach())
        z_q = self.lookup(codes)
        codebook_loss = F.mse_loss(z_q, z.detach())
        commit_loss = F.mse_loss(z, z_q.detach())
        z_st = z + (z_q - z).detach()
        return z_st, codes, codebook_loss, commit_loss
