"""The global sample stream: which sample, crop, order and class dropout every training slot gets.

Training consumes an endless stream of *positions* ``0, 1, 2, ...``; step ``s`` of a run with global
batch ``G`` takes positions ``[s*G, (s+1)*G)``, and rank ``r`` of ``W`` with ``A`` accumulation
micro-steps of ``b = G / (W*A)`` samples takes, in micro-step ``m``, positions
``s*G + m*W*b + r*b + [0, b)``. Everything random about a position is a pure function of
``(seed, position)``:

* sample index: epoch ``e = p // N`` shuffles the ``N`` samples with ``numpy.random.default_rng([seed, e])``;
* crop: :meth:`arpg.data.codes.CodeDataset.crops_for` of ``(seed, e, index)``;
* generation order: the argsort of per-cell hashes of ``(seed, p, cell)`` -- a uniform permutation;
* class dropout: ``hash(seed, p) < class_dropout`` marks the label for the null class (the model drops it).

So the data seen, the orders and the class dropout do not depend on the number of processes, on
gradient accumulation, or on where a run was interrupted: 2 processes with batch ``b`` each see
exactly what 1 process with batch ``2b`` sees, and a resumed run continues the very same stream.
(Dropout layers, used only by the published presets, still draw from each rank's torch generator.)
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..data.codes import STREAM_CAPTION_DROP, STREAM_CONDITION_DROP, STREAM_DROP, STREAM_ORDER, CodeDataset, hash64, hash_uniform


class SampleStream:
    def __init__(self, dataset: CodeDataset, seed: int, class_dropout: float = 0.0, condition_dropout: float = 0.0,
                 caption_dropout: float = 0.0):
        self.dataset = dataset
        self.seed = int(seed)
        self.class_dropout = float(class_dropout)
        self.condition_dropout = float(condition_dropout)
        self.caption_dropout = float(caption_dropout)
        self.n = len(dataset)
        self._perm = functools.lru_cache(maxsize=2)(self._permutation)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.n)

    def positions(self, step: int, micro: int, rank: int, world: int, accum: int, batch: int) -> np.ndarray:
        """Stream positions of one rank's micro-batch (``batch`` = per-rank micro-batch size)."""
        start = (step * accum + micro) * world * batch + rank * batch
        return np.arange(start, start + batch, dtype=np.int64)

    def indices(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dataset indices and epochs of ``positions``."""
        epochs = positions // self.n
        idx = np.empty_like(positions)
        for e in np.unique(epochs):  # a batch may straddle an epoch boundary
            sel = epochs == e
            idx[sel] = self._perm(int(e))[positions[sel] % self.n]
        return idx, epochs

    def orders(self, positions: np.ndarray, n_cells: int) -> torch.Tensor:
        """One uniform random permutation of the cells per position: LongTensor [B, n_cells]."""
        keys = hash64(self.seed, STREAM_ORDER, positions[:, None], np.arange(n_cells)[None, :])
        return torch.from_numpy(np.argsort(keys, axis=1, kind="stable").astype(np.int64))

    def dropped(self, positions: np.ndarray) -> torch.Tensor:
        """BoolTensor [B]: which labels become the null class (classifier-free guidance training)."""
        if self.class_dropout <= 0:
            return torch.zeros(len(positions), dtype=torch.bool)
        return torch.from_numpy(hash_uniform(self.seed, STREAM_DROP, positions) < self.class_dropout)

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(tokens [B, n], labels [B], orders [B, n], drop [B])`` on the CPU; ``drop`` marks the labels the
        model replaces by the null class (``ARPG.forward(..., drop_labels=drop)``)."""
        idx, epochs = self.indices(positions)
        crops = self.dataset.crops_for(epochs, idx)
        tokens, labels = self.dataset.get(idx, crops)
        return tokens, labels, self.orders(positions, tokens.shape[1]), self.dropped(positions)

    def conditions(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """ControlARPG: ``(maps [B, C, S, S] of the same crops :meth:`batch` reads, drop [B])``; ``drop`` marks
        the conditions the model leaves out (``ARPG.forward(..., drop_condition=drop)``), drawn independently
        of the class dropout."""
        idx, epochs = self.indices(positions)
        maps = self.dataset.get_conditions(idx, self.dataset.crops_for(epochs, idx))
        if self.condition_dropout <= 0:
            return maps, torch.zeros(len(positions), dtype=torch.bool)
        drop = hash_uniform(self.seed, STREAM_CONDITION_DROP, positions) < self.condition_dropout
        return maps, torch.from_numpy(drop)

    def captions(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Caption sets: ``(features [B, L, D], mask [B, L], drop [B])`` of the samples :meth:`batch` reads;
        ``drop`` marks the captions the model replaces by its null caption (``ARPG.forward(..., drop_text=drop)``),
        a pure function of ``(seed, position)`` like everything else here."""
        idx, _ = self.indices(positions)
        feats, mask = self.dataset.get_text(idx)
        if self.caption_dropout <= 0:
            return feats, mask, torch.zeros(len(positions), dtype=torch.bool)
        drop = hash_uniform(self.seed, STREAM_CAPTION_DROP, positions) < self.caption_dropout
        return feats, mask, torch.from_numpy(drop)
