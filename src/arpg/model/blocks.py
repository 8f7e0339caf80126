"""The transformer blocks of ARPG's two passes: RMSNorm, SwiGLU, the Pass-1 self-attention block (with its
cached decoding step) and the Pass-2 cross-attention block over the shared keys/values, plus the container
whose attribute names give the published ``layers.*`` state-dict keys."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fusion import fused_weight
from ..packing import FUSED_HANDLE, linear, project
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
            if not torch.is_grad_enabled():
                # Decoding: bit for bit the formula below (x * x is x.pow(2)), with one [rows, dim] buffer
                # instead of three; on a CPU each fresh buffer of a step's size is cold memory to write.
                scale = torch.mul(x, x).mean(-1, keepdim=True).add_(self.eps).rsqrt_()
                return torch.mul(x, scale).mul_(self.weight)
            # Training: the fused op, bit for bit the formula below in float32.
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = fused_weight(self, [self.w1.weight, self.w3.weight])
        if fused is not None:  # one matmul for w1 and w3 (arpg.fusion)
            a, b = linear(x, fused, self.__dict__.get(FUSED_HANDLE)).chunk(2, dim=-1)
        else:
            a, b = project(self.w1, x), project(self.w3, x)
        if torch.is_grad_enabled():
            return self.dropout(project(self.w2, F.silu(a) * b))
        # Decoding: a and b are scratch, so work in place (no two fresh [rows, hidden] buffers per layer).
        return self.dropout(project(self.w2, F.silu(a, inplace=True).mul_(b)))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ARPGConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.to_q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.to_k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.to_v = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def qkv(self, x: torch.Tensor, rope: torch.Tensor,
            k_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected, rotated q, k and v as [B, H, T, D]. ``k_out`` ([B, H, T, D], e.g. the KV cache's slots for
        these tokens): the rotated keys are written there and that tensor is returned as k."""
        B, T, _ = x.shape
        fused = fused_weight(self, [self.to_q.weight, self.to_k.weight, self.to_v.weight])
        if fused is not None:  # one matmul for q, k and v (arpg.fusion)
            q, k, v = (t.reshape(B, T, self.n_head, self.head_dim) for t in
                       linear(x, fused, self.__dict__.get(FUSED_HANDLE)).chunk(3, dim=-1))
        else:
            q = project(self.to_q, x).view(B, T, self.n_head, self.head_dim)
            k = project(self.to_k, x).view(B, T, self.n_head, self.head_dim)
            v = project(self.to_v, x).view(B, T, self.n_head, self.head_dim)
        q = apply_rope(q, rope)
        k = apply_rope(k, rope, out=None if k_out is None else k_out.transpose(1, 2))
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def out(self, y: torch.Tensor) -> torch.Tensor:
        B, H, T, D = y.shape
        return project(self.proj, y.transpose(1, 2).reshape(B, T, H * D))


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
        q = apply_rope(project(self.to_q, x).view(B, T, self.n_head, self.head_dim), rope).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask,
                                           is_causal=is_causal)
        return project(self.proj, y.transpose(1, 2).reshape(B, T, -1))


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
        """``x + attn_out``, then the FFN's residual. Without a gradient (decoding) each sum goes into the
        fresh branch output (``a + b == b + a`` exactly), not into a new buffer; ``x`` itself is never written
        (it may be the caller's tensor or an expanded embedding row)."""
        if torch.is_grad_enabled() or self.training or attn_out.dtype != x.dtype:  # (autocast: x is wider)
            x = x + self.resid_dropout(attn_out)
            return x + self.resid_dropout(self.ffn(self.ffn_norm(x)))
        x = attn_out.add_(x)
        out = self.ffn(self.ffn_norm(x))
        return out.add_(x) if out.dtype == x.dtype else x + out


class SelfBlock(_Block):
    def __init__(self, cfg: ARPGConfig):
        super().__init__(cfg, SelfAttention(cfg))

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: causal attention over the whole sequence."""
        a = self.attn
        if lean_applies(x, a.to_q, a.to_k, a.to_v, a.proj, self.ffn.w1, self.ffn.w3, self.ffn.w2):
            B, T, _ = x.shape
            q, k, v = (t.view(B, T, a.n_head, a.head_dim) for t in norm_linears(x, self.attn_norm, (a.to_q, a.to_k, a.to_v)))
            y = F.scaled_dot_product_attention(apply_rope(q, rope).transpose(1, 2), apply_rope(k, rope).transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True)
            x = x + self.resid_dropout(heads_linear(y, a.proj))
            return x + self.resid_dropout(self.ffn.dropout(norm_swiglu(x, self.ffn_norm, self.ffn)))
        q, k, v = a.qkv(self.attn_norm(x), rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.resid_dropout(a.out(y))
        return x + self.resid_dropout(self.ffn(self.ffn_norm(x)))

    def forward_cached(self, x: torch.Tensor, rope: torch.Tensor, cache_k: torch.Tensor,
                       cache_v: torch.Tensor, start: int, mask: torch.Tensor | None) -> torch.Tensor:
        """Append this step's keys/values at ``start`` and attend over ``[0, start + T)``."""
        T = x.shape[1]
        # the rotated keys go straight into their cache slots (no buffer of their own, no copy)
        q, _, v = self.attn.qkv(self.attn_norm(x), rope, k_out=cache_k[:, :, start:start + T])
        cache_v[:, :, start:start + T] = v
        keys, values = cache_k[:, :, :start + T], cache_v[:, :, :start + T]
        y = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=mask)
        return self.residuals(x, self.attn.out(y))

    def forward_static(self, x: torch.Tensor, rope: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
                       positions: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Static-shape step: write this step's keys/values at ``positions`` [T] (a tensor, so a compiled
        graph does not depend on where the step is) and attend over the cache's first ``W`` slots,
        ``visible`` [T, W] saying which of them each new token may see."""
        q, k, v = self.attn.qkv(self.attn_norm(x), rope)
        cache_k.index_copy_(2, positions, k.to(cache_k.dtype))
        cache_v.index_copy_(2, positions, v.to(cache_v.dtype))
        W = visible.shape[-1]
        keys, values = cache_k[:, :, :W].to(q.dtype), cache_v[:, :, :W].to(q.dtype)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
        return self.residuals(x, self.attn.out(y))


class CrossBlock(_Block):
    def __init__(self, cfg: ARPGConfig):
        super().__init__(cfg, CrossAttention(cfg))

    def forward(self, x: torch.Tensor, rope: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                is_causal: bool, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        a = self.attn
        if lean_applies(x, a.to_q, a.proj, self.ffn.w1, self.ffn.w3, self.ffn.w2):  # training
            B, T, _ = x.shape
            q = apply_rope(norm_linears(x, self.attn_norm, (a.to_q,))[0].view(B, T, a.n_head, a.head_dim), rope)
            q = q.transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask,
                                               is_causal=is_causal)
            x = x + self.resid_dropout(heads_linear(y, a.proj))
            return x + self.resid_dropout(self.ffn.dropout(norm_swiglu(x, self.ffn_norm, self.ffn)))
        return self.residuals(x, self.attn(self.attn_norm(x), rope, k, v, is_causal, attn_mask))


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
