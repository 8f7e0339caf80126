"""Preallocated key/value cache for decoding.

One buffer per self (Pass 1) layer plus one *shared* buffer that every cross (Pass 2) layer reads: the
single K/V computed after the last self block. Everything is allocated once per ``generate`` call, sized
for the class token plus every grid cell, and filled in place; ``length`` counts the filled positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    # One [B, H, S, D] tensor per self layer, each its own allocation: a compiled step writes into them in
    # place, which torch.compile does cheaply for separate tensors and by copying whole caches for views.
    self_k: list[torch.Tensor]
    self_v: list[torch.Tensor]
    shared_k: torch.Tensor  # [B, H, S, D]
    shared_v: torch.Tensor
    length: int = 0
    class_ids: torch.Tensor | None = None  # [B] embedding rows of the class token, set by the first extend
    # ControlARPG: per-cell condition features [B, n, d] for the Pass-2 queries, and which rows use them [B]
    condition: torch.Tensor | None = None
    condition_active: torch.Tensor | None = None
    # Text models: which prompt slots [B, text_len] hold real tokens (the first slots of the cache); None: all
    key_valid: torch.Tensor | None = None

    @classmethod
    def allocate(cls, n_self_layers: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str, zeroed: bool = False) -> "KVCache":
        """``zeroed``: fill with zeros (the static-shape steps attend to unwritten slots with weight 0)."""
        shape = (batch, n_head, max_len, head_dim)
        new = torch.zeros if zeroed else torch.empty
        return cls(
            self_k=[new(shape, dtype=dtype, device=device) for _ in range(n_self_layers)],
            self_v=[new(shape, dtype=dtype, device=device) for _ in range(n_self_layers)],
            shared_k=new(shape, dtype=dtype, device=device),
            shared_v=new(shape, dtype=dtype, device=device),
        )

    @property
    def capacity(self) -> int:
        return self.shared_k.shape[2]

    @property
    def batch(self) -> int:
        return self.shared_k.shape[0]

    def rows(self, stop: int) -> "KVCache":
        """A view of the first ``stop`` rows (same memory, same length): guidance keeps the conditional rows
        first, so this is the cache without the unconditional half."""
        def head(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:stop]

        return KVCache([t[:stop] for t in self.self_k], [t[:stop] for t in self.self_v], self.shared_k[:stop],
                       self.shared_v[:stop],
                       self.length, head(self.class_ids), head(self.condition), head(self.condition_active),
                       head(self.key_valid))
