"""Optimizer, learning-rate schedule and EMA, following the published ARPG recipe.

* AdamW with betas (0.9, 0.95); weight decay (0.05) only on parameters with >= 2 dimensions (matmul
  weights and embeddings), never on norms.
* The learning rate is given per 256 samples and scaled linearly with the global batch:
  ``lr = lr_per_256 * global_batch / 256`` (1e-4 at batch 1024 -> 4e-4).
* Linear warm-up over the first ``warmup`` steps (a fraction of all steps when < 1; 25% published), then a
  half cosine down to ``min_lr`` (1e-5) at the last step. The schedule is a pure function of the step, so
  a resumed run needs nothing but the step number to continue it exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from ..errors import ARPGError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed (>= 2-D parameters) and not decayed (the rest)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.95),
                    weight_decay: float = 0.05, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; fused kernels on CUDA unless ``fused=False``."""
    if fused is None:
        fused = all(p.is_cuda for p in model.parameters())
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), **extra)


def scaled_lr(lr_per_256: float, global_batch: int) -> float:
    """Linear scaling rule used by the paper: the base lr is quoted per 256 samples."""
    return lr_per_256 * global_batch / 256.0


def warmup_steps(warmup: float, total_steps: int) -> int:
    """``warmup`` < 1 is a fraction of ``total_steps``; >= 1 is a step count."""
    if warmup < 0:
        raise ARPGError(f"warm-up must be >= 0, got {warmup}")
    steps = int(round(warmup * total_steps)) if warmup < 1 else int(warmup)
    return min(steps, total_steps)


@dataclass
class WarmupCosine:
    """lr at step ``s`` (0-based, the step about to be taken): linear warm-up, then cosine to ``min_lr``."""

    base_lr: float
    min_lr: float
    warmup: int
    total: int

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup  # never exactly 0: the first step counts
        span = max(1, self.total - self.warmup - 1)
        t = min(1.0, (step - self.warmup) / span)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def state_dict(self) -> dict:
        return asdict(self)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP) or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


class EMA:
    """Exponential moving average of the parameters: ``ema = decay * ema + (1 - decay) * param``.

    Works on local tensors, so under FSDP it holds (and updates) only this rank's shards. To save or
    sample it, :meth:`swapped_in` temporarily puts the averaged values into the model, where the usual
    (gathering) state-dict helpers can read them.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ARPGError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = [p for p in model.parameters()]
        self.shadow = [_local(p).detach().clone().float() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        cur = [_local(p).detach().float() for p in self.params]
        torch._foreach_lerp_(self.shadow, cur, 1.0 - self.decay)

    @torch.no_grad()
    def copy_from_model(self) -> None:
        for s, p in zip(self.shadow, self.params):
            s.copy_(_local(p).detach())

    def swapped_in(self):
        """Context manager: the model holds the EMA weights inside, its own weights again after."""
        ema = self

        class _Swap:
            def __enter__(self_inner):
                self_inner.saved = [_local(p).detach().clone() for p in ema.params]
                with torch.no_grad():
                    for s, p in zip(ema.shadow, ema.params):
                        _local(p).copy_(s)

            def __exit__(self_inner, *exc):
                with torch.no_grad():
                    for v, p in zip(self_inner.saved, ema.params):
                        _local(p).copy_(v)
                return False

        return _Swap()
