"""Autograd functions of the training forward that keep fewer activations for backward.

Why: a training step's memory is mostly the activations autograd keeps for backward. Three patterns of the
ARPG blocks keep tensors that backward can rebuild for the price of an elementwise pass:

* RMSNorm followed by projections (``attn_norm -> to_q/to_k/to_v``, ``ffn_norm -> w1/w3``,
  ``layers.norm -> to_k/to_v``): the norm keeps its input and each projection keeps the norm's output.
  :func:`norm_linears` keeps only the input and recomputes the norm in backward.
* SwiGLU ``w2(silu(w1 x) * w3 x)``: autograd keeps ``a = w1 x``, ``b = w3 x``, ``silu(a)`` and the product.
  :func:`norm_swiglu` keeps ``a`` and ``b`` (and the block input, for the norm) and recomputes the rest.
* The attention output projection reads the heads ``[B, H, T, D]`` through a transposed copy, which it keeps
  beside the attention's own saved output. :func:`heads_linear` keeps only the attention output (the
  attention keeps it anyway) and redoes the copy in backward.

Each computes the formula with the same kernels in the same dtypes (F.rms_norm, F.linear, silu and its
backward; the norm's backward written out), so values and gradients match the plain modules to float rounding
(tested), and none calls autograd inside its backward, so a compiled training step traces through them. They run on float32
weights (the training case), under autocast as ``F.linear`` would: matmuls in the autocast dtype, the norm
in float32, weight gradients in the weights' dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype


def _norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def _renorm(x: torch.Tensor, norm_w: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The norm recomputed for backward: its output and the per-row ``rsqrt(mean(x^2) + eps)``."""
    r = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return _norm(x, norm_w, eps), r


def _norm_backward(ctx, x, norm_w, r, grad_xn):
    """Gradients of ``x * r * w`` (RMSNorm) for the input and the weight, written out (no autograd call inside
    a backward, so the whole step can be compiled): ``dx = r * gw - x * r^3 * mean(gw * x)`` with
    ``gw = grad * w``, and ``dw = sum(grad * x * r)`` over rows."""
    g, xf = grad_xn.float(), x.float()
    gw = g * norm_w.float()
    gx = (r * gw - xf * r.pow(3) * (gw * xf).mean(-1, keepdim=True)).to(x.dtype) if ctx.needs_input_grad[0] else None
    gnw = (g * xf * r).flatten(0, -2).sum(0).to(norm_w.dtype) if ctx.needs_input_grad[1] else None
    return gx, gnw


def _weight_grad(g: torch.Tensor, inp: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (g.flatten(0, -2).t() @ inp.flatten(0, -2)).to(dtype)


class _NormLinears(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_w, eps: float, dtype: torch.dtype, *weights):
        xc = _norm(x, norm_w, eps).to(dtype)
        ctx.save_for_backward(x, norm_w, *weights)
        ctx.eps, ctx.dtype = eps, dtype
        return tuple(F.linear(xc, w.to(dtype)) for w in weights)

    @staticmethod
    def backward(ctx, *grads):
        x, norm_w, *weights = ctx.saved_tensors
        xn, r = _renorm(x, norm_w, ctx.eps)
        xc = xn.to(ctx.dtype)
        grad_xn, grad_ws = None, []
        for i, (g, w) in enumerate(zip(grads, weights)):
            g = g.to(ctx.dtype)
            part = (g @ w.to(ctx.dtype)).to(xn.dtype)
            grad_xn = part if grad_xn is None else grad_xn + part
            grad_ws.append(_weight_grad(g, xc, w.dtype) if ctx.needs_input_grad[4 + i] else None)
        gx, gw = _norm_backward(ctx, x, norm_w, r, grad_xn)
        return (gx, gw, None, None, *grad_ws)


def norm_linears(x: torch.Tensor, norm, layers) -> tuple[torch.Tensor, ...]:
    """``tuple(layer(norm(x)) for layer in layers)`` for an RMSNorm ``norm`` and bias-free Linears."""
    dtype = _compute_dtype(x)  # read before autocast is switched off for the function's own casts
    with torch.autocast(x.device.type, enabled=False):
        return _NormLinears.apply(x, norm.weight, norm.eps, dtype, *(m.weight for m in layers))


class _NormSwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_w, eps: float, dtype: torch.dtype, w1, w3, w2):
        xc = _norm(x, norm_w, eps).to(dtype)
        w1c, w3c, w2c = w1.to(dtype), w3.to(dtype), w2.to(dtype)
        a, b = F.linear(xc, w1c), F.linear(xc, w3c)
        ctx.save_for_backward(x, norm_w, w1, w3, w2, a, b)
        ctx.eps, ctx.dtype = eps, dtype
        return F.linear(F.silu(a) * b, w2c)

    @staticmethod
    def backward(ctx, grad):
        x, norm_w, w1, w3, w2, a, b = ctx.saved_tensors
        dt = ctx.dtype
        grad = grad.to(dt)
        silu = F.silu(a)  # the kernels and roundings of autograd's own backward of the formula
        grad_w2 = _weight_grad(grad, silu * b, w2.dtype)
        gp = grad @ w2.to(dt)
        grad_b = gp * silu
        grad_a = torch.ops.aten.silu_backward(gp * b, a)
        xn, r = _renorm(x, norm_w, ctx.eps)
        xc = xn.to(dt)
        grad_xn = (grad_a @ w1.to(dt)).to(xn.dtype) + (grad_b @ w3.to(dt)).to(xn.dtype)
        gx, gw = _norm_backward(ctx, x, norm_w, r, grad_xn)
        return gx, gw, None, None, _weight_grad(grad_a, xc, w1.dtype), _weight_grad(grad_b, xc, w3.dtype), grad_w2


def norm_swiglu(x: torch.Tensor, norm, ffn) -> torch.Tensor:
    """``ffn(norm(x))`` for an RMSNorm and a SwiGLU :class:`~arpg.model.blocks.FeedForward` (its dropout not
    included)."""
    dtype = _compute_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return _NormSwiGLU.apply(x, norm.weight, norm.eps, dtype, ffn.w1.weight, ffn.w3.weight, ffn.w2.weight)


class _HeadsLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, weight, dtype: torch.dtype):
        B, H, T, D = y.shape
        ctx.save_for_backward(y, weight)
        ctx.dtype = dtype
        return F.linear(y.transpose(1, 2).reshape(B, T, H * D).to(dtype), weight.to(dtype))

    @staticmethod
    def backward(ctx, grad):
        y, weight = ctx.saved_tensors
        B, H, T, D = y.shape
        grad = grad.to(ctx.dtype)
        grad_w = _weight_grad(grad, y.transpose(1, 2).reshape(B, T, H * D).to(ctx.dtype), weight.dtype) \
            if ctx.needs_input_grad[1] else None
        grad_y = (grad @ weight.to(ctx.dtype)).to(y.dtype).view(B, T, H, D).transpose(1, 2)
        return grad_y, grad_w, None


def heads_linear(y: torch.Tensor, layer) -> torch.Tensor:
    """``layer(y.transpose(1, 2).reshape(B, T, H * D))`` for attention heads ``y`` [B, H, T, D]."""
    dtype = _compute_dtype(y)
    with torch.autocast(y.device.type, enabled=False):
        return _HeadsLinear.apply(y, layer.weight, dtype)


def lean_applies(x: torch.Tensor, *layers) -> bool:
    """Whether these functions take the call: plain float32 ``nn.Linear`` layers (autocast or not) and a
    floating input. Swapped-in sampling modules (:mod:`arpg.speedups`) are not ``nn.Linear``: they take the
    plain path, where they refuse gradients themselves."""
    if not (x.is_floating_point() and all(isinstance(m, nn.Linear) for m in layers)):
        return False
    return all(m.weight.dtype == torch.float32 for m in layers)
