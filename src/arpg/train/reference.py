"""The published training forward, written out plainly: a yardstick for tests and ``benchmarks/train_step.py``.

It computes ARPG's teacher-forced loss the way the authors' model class does (LlamaGen-style blocks):
separate q / k / v matmuls, the real-valued RoPE formula, RMSNorm as ``x * rsqrt(mean(x^2) + eps)`` in
float32, SwiGLU ``w2(silu(w1 x) * w3 x)``, causal SDPA in both passes, then the whole logits
``head(norm(x)).float()`` and ``F.cross_entropy`` over them. It reads the weights of an :class:`~arpg.ARPG`
(published conditioning: no condition encoder), so both give the same loss from the same weights;
:meth:`ARPG.forward` must only be faster and leaner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import ARPG
from ..model.rope import position_index, real_rope


def _norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def _rotate(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:  # x [B, T, H, D], rope [B, T, D/2, 2]
    return real_rope(x.float(), rope[:, :, None].float()).type_as(x)


def _ffn(blk, x: torch.Tensor) -> torch.Tensor:
    f = blk.ffn
    return f.dropout(f.w2(F.silu(f.w1(x)) * f.w3(x)))


def reference_loss(model: ARPG, tokens: torch.Tensor, labels: torch.Tensor, orders: torch.Tensor,
                   drop_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of every cell, as the published training forward computes it."""
    cfg = model.config
    B, n = tokens.shape
    H, D, eps = cfg.n_head, cfg.head_dim, cfg.norm_eps
    cls = model.class_ids(labels)
    if drop_labels is not None:
        cls = torch.where(drop_labels, torch.full_like(cls, cfg.null_class_id), cls)
    ordered = tokens.gather(1, orders)
    inp = torch.cat([cls[:, None], ordered[:, :-1]], dim=1)
    rope_in = model.rope[position_index(torch.cat([torch.full_like(orders[:, :1], -1), orders[:, :-1]], dim=1))]
    rope_q = model.rope[position_index(orders)]

    h = model.embed_dropout(model.embeddings(inp))
    for blk in model.layers.self_dec:
        a, x = blk.attn, _norm(h, blk.attn_norm.weight, eps)
        q = _rotate(a.to_q(x).view(B, n, H, D), rope_in).transpose(1, 2)
        k = _rotate(a.to_k(x).view(B, n, H, D), rope_in).transpose(1, 2)
        v = a.to_v(x).view(B, n, H, D).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, n, -1)
        h = h + blk.resid_dropout(a.proj(y))
        h = h + blk.resid_dropout(_ffn(blk, _norm(h, blk.ffn_norm.weight, eps)))
    hn = _norm(h, model.layers.norm.weight, eps)
    k = _rotate(model.layers.to_k(hn).view(B, n, H, D), rope_in).transpose(1, 2)
    v = model.layers.to_v(hn).view(B, n, H, D).transpose(1, 2)

    x = model.embed_dropout(model.query_inputs(cls, n))
    for blk in model.layers.cross_dec:
        a, xn = blk.attn, _norm(x, blk.attn_norm.weight, eps)
        q = _rotate(a.to_q(xn).view(B, n, H, D), rope_q).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, n, -1)
        x = x + blk.resid_dropout(a.proj(y))
        x = x + blk.resid_dropout(_ffn(blk, _norm(x, blk.ffn_norm.weight, eps)))
    logits = model.head(_norm(x, model.norm.weight, eps)).float()
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), ordered.reshape(-1))
