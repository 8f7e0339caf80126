"""Exact projection fusions for sampling: one q|k|v matmul per Pass-1 block, one w1|w3 matmul per FFN.

:func:`fuse_projections` concatenates the published weights into one tensor per block and makes the
published parameters *views* of it, so nothing is duplicated, ``state_dict()`` keeps the published names
and values (checkpoints load with ``strict=True`` either way), and in-place updates of a parameter
(``load_state_dict``, an optimizer step) show in the fused weight at once. A block uses its fused weight
only while every part still lives inside it: replacing a parameter (``.to()``, ``p.data = ...``,
``load_state_dict(assign=True)``) silently falls back to the separate matmuls, never to stale weights.

Whether fusing pays depends on the device (``benchmarks/results/linear_packing.md`` has the CPU figures): it
is meant for GPUs, where it saves kernel launches and reads of the input.
"""

from __future__ import annotations

import torch
import torch.nn as nn

FUSED_ATTRIBUTE = "fused_weight"


def stand_in(like: torch.Tensor) -> torch.Tensor:
    """A weight-shaped stand-in that holds one element (every entry aliases it): what a parameter keeps
    while its values live only in a packed copy (:func:`arpg.packing.pack_weights` with ``in_place``)."""
    return torch.zeros(1, dtype=like.dtype, device=like.device).expand(like.shape)


def is_stand_in(t: object) -> bool:
    """True for a :func:`stand_in` (a matrix whose rows and columns all alias one element); False for
    anything else (an int8 layer's ``weight`` is a method)."""
    return isinstance(t, torch.Tensor) and t.dim() == 2 and t.numel() > 1 and t.stride() == (0, 0)


def _aliases(fused: torch.Tensor, parts: list[torch.Tensor]) -> bool:
    """True while ``parts`` are the consecutive row blocks of ``fused`` (same memory, dtype, device)."""
    offset = fused.data_ptr()
    for p in parts:
        if p.dtype != fused.dtype or p.device != fused.device or p.data_ptr() != offset or not p.is_contiguous():
            return False
        offset += p.numel() * p.element_size()
    return offset == fused.data_ptr() + fused.numel() * fused.element_size()


def fused_weight(module: nn.Module, parts: list[torch.Tensor]) -> torch.Tensor | None:
    """The module's fused weight if it has one and it still holds ``parts``; else None (and it is dropped).
    Inside ``torch.compile`` the check is skipped: the sampler runs :func:`check_fusions` before it."""
    fused = module.__dict__.get(FUSED_ATTRIBUTE)
    if fused is None or torch.compiler.is_compiling():
        return fused
    # Still its parts' memory, or a stand-in whose values live in a packed copy (arpg.packing, in place).
    if not (_aliases(fused, parts) or (is_stand_in(fused) and all(is_stand_in(p) for p in parts))):
        del module.__dict__[FUSED_ATTRIBUTE]
        return None
    return fused


def _fuse(module: nn.Module, linears: list[nn.Linear]) -> None:
    with torch.no_grad():
        fused = torch.cat([lin.weight.detach() for lin in linears], dim=0).contiguous()
        row = 0
        for lin in linears:
            n = lin.weight.shape[0]
            lin.weight.data = fused[row:row + n]  # the parameter object stays; its data is a view now
            row += n
    module.__dict__[FUSED_ATTRIBUTE] = fused  # a plain attribute: not a parameter, not in state_dict


def fuse_projections(model: nn.Module) -> nn.Module:
    """Fuse every Pass-1 block's q|k|v and every FFN's w1|w3 of ``model`` in place; returns it."""
    for blk in model.layers.self_dec:
        _fuse(blk.attn, [blk.attn.to_q, blk.attn.to_k, blk.attn.to_v])
    for blk in list(model.layers.self_dec) + list(model.layers.cross_dec):
        _fuse(blk.ffn, [blk.ffn.w1, blk.ffn.w3])
    return model


def unfuse_projections(model: nn.Module) -> nn.Module:
    """Drop the fused weights (the parameters keep their values); returns ``model``."""
    for m in model.modules():
        m.__dict__.pop(FUSED_ATTRIBUTE, None)
    return model


def check_fusions(model: nn.Module) -> int:
    """Drop every fused weight that no longer holds its parts; returns how many are still fused."""
    kept = 0
    for blk in model.layers.self_dec:
        kept += fused_weight(blk.attn, [blk.attn.to_q.weight, blk.attn.to_k.weight, blk.attn.to_v.weight]) is not None
    for blk in list(model.layers.self_dec) + list(model.layers.cross_dec):
        kept += fused_weight(blk.ffn, [blk.ffn.w1.weight, blk.ffn.w3.weight]) is not None
    return kept
