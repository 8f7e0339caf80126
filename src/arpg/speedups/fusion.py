"""Exact projection fusions: one q|k|v matmul per Pass-1 attention, one w1|w3 matmul per FFN.

:func:`fuse_projections` swaps each Pass-1 :class:`~arpg.model.blocks.SelfAttention` for a
:class:`FusedSelfAttention` and each :class:`~arpg.model.blocks.FeedForward` for a :class:`FusedFeedForward`.
The swapped-in module keeps the very same projection Linears as children (so ``state_dict()`` keys and values
are the published ones) and concatenates their weights into one tensor whose row blocks the parameters then
*view*: nothing is duplicated, and in-place updates of a parameter (``load_state_dict``, an optimizer step)
show in the fused weight at once. A parameter replaced instead (``.to()``, ``p.data = ...``) no longer lies
inside the fused weight: the module then runs the separate matmuls, never stale weights.
:func:`unfuse_projections` puts the original modules back.

Whether fusing pays depends on the device: on our 2-core CPUs it did not (``benchmarks/results/linear_packing.md``);
it is meant for GPUs, where it saves kernel launches and reads of the input. Packed weights
(:mod:`.packing`) take unfused models.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.blocks import FeedForward, SelfAttention


def _aliases(fused: torch.Tensor, parts: list[torch.Tensor]) -> bool:
    """True while ``parts`` are the consecutive row blocks of ``fused`` (same memory, dtype, device)."""
    offset = fused.data_ptr()
    for p in parts:
        if p.dtype != fused.dtype or p.device != fused.device or p.data_ptr() != offset or not p.is_contiguous():
            return False
        offset += p.numel() * p.element_size()
    return offset == fused.data_ptr() + fused.numel() * fused.element_size()


def _fuse(linears: list[nn.Linear]) -> torch.Tensor:
    """One tensor holding the weights of ``linears`` as row blocks; each parameter becomes a view of it."""
    with torch.no_grad():
        fused = torch.cat([lin.weight.detach() for lin in linears], dim=0).contiguous()
        row = 0
        for lin in linears:
            n = lin.weight.shape[0]
            lin.weight.data = fused[row:row + n]  # the parameter object stays; its data is a view now
            row += n
    return fused


class _Fused:
    """What both fused modules share: the fused weight over ``parts()`` and the check that it still holds them."""

    def parts(self) -> list[nn.Linear]:
        raise NotImplementedError

    def fused_weight(self) -> torch.Tensor | None:
        """The fused weight while every part still lies inside it, else None (and it is let go). Inside
        ``torch.compile`` the check is skipped: :func:`refresh_fusions` runs before graphs are built."""
        fused = self.__dict__["fused"]
        if fused is None or torch.compiler.is_compiling():
            return fused
        if not _aliases(fused, [lin.weight for lin in self.parts()]):
            self.__dict__["fused"] = fused = None
        return fused


class FusedSelfAttention(_Fused, SelfAttention):
    """A :class:`~arpg.model.blocks.SelfAttention` computing q, k and v with one matmul."""

    def __init__(self, attn: SelfAttention):
        nn.Module.__init__(self)
        self.n_head, self.head_dim = attn.n_head, attn.head_dim
        self.to_q, self.to_k, self.to_v, self.proj = attn.to_q, attn.to_k, attn.to_v, attn.proj
        self.__dict__["plain"] = attn  # what unfuse_projections puts back
        self.__dict__["fused"] = _fuse(self.parts())

    def parts(self) -> list[nn.Linear]:
        return [self.to_q, self.to_k, self.to_v]

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fused = self.fused_weight()
        return super().project_qkv(x) if fused is None else F.linear(x, fused).chunk(3, dim=-1)


class FusedFeedForward(_Fused, FeedForward):
    """A :class:`~arpg.model.blocks.FeedForward` computing ``w1 x`` and ``w3 x`` with one matmul."""

    def __init__(self, ffn: FeedForward):
        nn.Module.__init__(self)
        self.w1, self.w3, self.w2, self.dropout = ffn.w1, ffn.w3, ffn.w2, ffn.dropout
        self.__dict__["plain"] = ffn
        self.__dict__["fused"] = _fuse(self.parts())

    def parts(self) -> list[nn.Linear]:
        return [self.w1, self.w3]

    def gate_up(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.fused_weight()
        return super().gate_up(x) if fused is None else F.linear(x, fused).chunk(2, dim=-1)


def _blocks(model: nn.Module) -> list[nn.Module]:
    return list(model.layers.self_dec) + list(model.layers.cross_dec)


def fuse_projections(model: nn.Module) -> nn.Module:
    """Fuse every Pass-1 block's q|k|v and every FFN's w1|w3 of ``model`` (exact, no extra memory); returns it.
    (A packed model refuses in one line: its Linears keep no plain weight to fuse.)"""
    for blk in model.layers.self_dec:
        if not isinstance(blk.attn, FusedSelfAttention):
            blk.attn = FusedSelfAttention(blk.attn)
    for blk in _blocks(model):
        if not isinstance(blk.ffn, FusedFeedForward):
            blk.ffn = FusedFeedForward(blk.ffn)
    return model


def unfuse_projections(model: nn.Module) -> nn.Module:
    """Put the original modules back (the parameters keep their values); returns ``model``."""
    for blk in _blocks(model):
        for name in ("attn", "ffn"):
            m = getattr(blk, name)
            if isinstance(m, _Fused):
                setattr(blk, name, m.__dict__["plain"])
    return model


def is_fused(model: nn.Module) -> bool:
    """True while some of ``model``'s attentions or FFNs are fused."""
    return any(isinstance(m, _Fused) for m in model.modules())


def refresh_fusions(model: nn.Module) -> int:
    """Let go of every fused weight that no longer holds its parts (before compiling); returns how many still do."""
    return sum(m.fused_weight() is not None for m in model.modules() if isinstance(m, _Fused))
