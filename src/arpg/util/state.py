"""Loading state dicts strictly, with one line that names what does not fit."""

from __future__ import annotations

import os
from typing import Mapping

import torch

from ..errors import CheckpointError


def describe_mismatch(model_sd: Mapping[str, torch.Tensor], file_sd: Mapping[str, torch.Tensor], limit: int = 4) -> str:
    """One line naming missing, unexpected and mis-shaped tensors (or '' when the two match)."""
    missing = sorted(set(model_sd) - set(file_sd))
    unexpected = sorted(set(file_sd) - set(model_sd))
    shaped = sorted(k for k in set(model_sd) & set(file_sd) if tuple(model_sd[k].shape) != tuple(file_sd[k].shape))

    def fmt(names, f=str):
        more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
        return ", ".join(f(n) for n in names[:limit]) + more

    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {fmt(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {fmt(unexpected)}")
    if shaped:
        parts.append("mis-shaped {}: {}".format(len(shaped), fmt(
            shaped, lambda k: f"{k} file {list(file_sd[k].shape)} vs model {list(model_sd[k].shape)}")))
    return "; ".join(parts)


def load_state_strict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], path: str | os.PathLike,
                      suggest=None) -> None:
    """``load_state_dict(strict=True)`` with a one-line :class:`CheckpointError` on any mismatch."""
    problems = describe_mismatch(model.state_dict(), sd)
    if problems:
        hint = f"; the file's shapes suggest preset {suggest(sd)}" if suggest else ""
        raise CheckpointError(f"{path} does not fit the architecture: {problems}{hint}")
    model.load_state_dict(sd, strict=True)


def savable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` as CPU tensors that each own their memory, as safetensors needs: a parameter
    that is a view of a larger tensor (fused projections) is copied out, the rest are not copied."""
    out = {}
    for k, v in module.state_dict().items():
        t = v.detach().contiguous().cpu()
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        out[k] = t
    return out
