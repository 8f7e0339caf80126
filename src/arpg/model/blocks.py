"""The transformer blocks of ARPG's two passes: RMSNorm, SwiGLU, the Pass-1 self-attention block (with its
decoding step over a KV cache) and the Pass-2 cross-attention block over the shared keys/values, plus the
container whose attribute names give the published ``layers.*`` state-dict keys.

Every projection is called as a module (``self.to_q(x)``), and the two groups of projections that share an
input are computed by one method each (:meth:`SelfAttention.project_qkv`, :meth:`FeedForward.gate_up`): the
places where :mod:`arpg.speedups` swaps in packed, int8 or fused modules. Nothing here knows about them."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ARPGConfig
from .lean_training import heads_linear, lean_applies, norm_linears, norm_swiglu
from .rope import apply_rope


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # bit for bit the formula below
        # Normalise in float32 for stability under bf16 autocast.
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.to(x.dtype) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def gate_up(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w1 x, w3 x)``."""
        return self.w1(x), self.w3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.gate_up(x)
        return self.dropout(self.w2(F.silu(a) * b))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ARPGConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.to_q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.to_k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.to_v = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The q, k and v projections of ``x`` [B, T, dim], each [B, T, dim]."""
        return self.to_q(x), self.to_k(x), self.to_v(x)

    def qkv(self, x: torch.Tensor, rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected, rotated q, k and v as [B, H, T, D]."""
        B, T, _ = x.shape
        q, k, v = (t.reshape(B, T, self.n_head, self.head_dim) for t in self.project_qkv(x))
        return apply_rope(q, rope).transpose(1, 2), apply_rope(k, rope).transpose(1, 2), v.transpose(1, 2)

    def out(self, y: torch.Tensor) -> torch.Tensor:
        B, H, T, D = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, T, H * D))


class CrossAttention(nn.Module):
    """Queries only: keys and values come from the shared Pass-1 projection."""

    def __init__(self, cfg: ARPGConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.to_q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                is_causal: bool, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = apply_rope(self.to_q(x).view(B, T, self.n_head, self.head_dim), rope).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask,
                                           is_causal=is_causal)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class _Block(nn.Module):
    """Pre-norm block: ``attn_norm -> attn`` and ``ffn_norm -> ffn`` (SwiGLU), both residual (the names are
    the published state-dict keys)."""

    def __init__(self, cfg: ARPGConfig, attn: nn.Module):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = attn
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg.dim, cfg.ffn_hidden, cfg.ffn_dropout)
        self.resid_dropout = nn.Dropout(cfg.resid_dropout)

    def residuals(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """``x + attn_out``, then the FFN's residual."""
        x = x + self.resid_dropout(attn_out)
        return x + self.resid_dropout(self.ffn(self.ffn_norm(x)))


class SelfBlock(_Block):
    def __init__(self, cfg: ARPGConfig):
        super().__init__(cfg, SelfAttention(cfg))

    def forward(self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced: causal attention over the whole sequence (``mask``: an explicit one instead, e.g.
        causal and no padded prompt slot)."""
        a = self.attn
        if lean_applies(x, a.to_q, a.to_k, a.to_v, a.proj, self.ffn.w1, self.ffn.w3, self.ffn.w2):
            B, T, _ = x.shape
            q, k, v = (t.view(B, T, a.n_head, a.head_dim) for t in norm_linears(x, self.attn_norm, (a.to_q, a.to_k, a.to_v)))
            y = F.scaled_dot_product_attention(apply_rope(q, rope).transpose(1, 2), apply_rope(k, rope).transpose(1, 2),
                                               v.transpose(1, 2), attn_mask=mask, is_causal=mask is None)
            x = x + self.resid_dropout(heads_linear(y, a.proj))
            return x + self.resid_dropout(self.ffn.dropout(norm_swiglu(x, self.ffn_norm, self.ffn)))
        q, k, v = a.qkv(self.attn_norm(x), rope)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.residuals(x, a.out(y))

    def step(self, x: torch.Tensor, rope: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
             positions: torch.Tensor, window: int, mask: torch.Tensor | None) -> torch.Tensor:
        """The decoding step: write this step's keys/values at cache ``positions`` [T] and attend over the
        cache's first ``window`` slots (``mask`` [T, window]: which slots each new token sees; None: all)."""
        q, k, v = self.attn.qkv(self.attn_norm(x), rope)
        cache_k.index_copy_(2, positions, k.to(cache_k.dtype))
        cache_v.index_copy_(2, positions, v.to(cache_v.dtype))
        keys, values = cache_k[:, :, :window].to(q.dtype), cache_v[:, :, :window].to(q.dtype)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.residuals(x, self.attn.out(y))


class CrossBlock(_Block):
    def __init__(self, cfg: ARPGConfig):
        super().__init__(cfg, CrossAttention(cfg))

    def forward(self, x: torch.Tensor, rope: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                is_causal: bool, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced (training): through the lean autograd functions where they apply."""
        a = self.attn
        if lean_applies(x, a.to_q, a.proj, self.ffn.w1, self.ffn.w3, self.ffn.w2):
            B, T, _ = x.shape
            q = apply_rope(norm_linears(x, self.attn_norm, (a.to_q,))[0].view(B, T, a.n_head, a.head_dim), rope)
            q = q.transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask,
                                               is_causal=is_causal)
            x = x + self.resid_dropout(heads_linear(y, a.proj))
            return x + self.resid_dropout(self.ffn.dropout(norm_swiglu(x, self.ffn_norm, self.ffn)))
        return self.step(x, rope, k, v, attn_mask, is_causal)

    def step(self, x: torch.Tensor, rope: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """The decoding step (and the teacher-forced fallback): queries ``x`` attend to ``k``/``v`` (``mask``:
        which keys each query sees; None: all)."""
        return self.residuals(x, self.attn(self.attn_norm(x), rope, k, v, is_causal, mask))


class TwoPassLayers(nn.Module):
    """Container whose attribute names give the published ``layers.*`` state-dict keys."""

    def __init__(self, cfg: ARPGConfig):
        super().__init__()
        n = cfg.n_layer // 2
        self.self_dec = nn.ModuleList(SelfBlock(cfg) for _ in range(n))
        self.cross_dec = nn.ModuleList(CrossBlock(cfg) for _ in range(n))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.to_k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.to_v = nn.Linear(cfg.dim, cfg.dim, bias=False)
