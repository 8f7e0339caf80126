"""The output head and the training loss computed together, a chunk of rows at a time.

Why: the plain formula ``F.cross_entropy(head(h).float(), targets)`` materialises the logits
``[B * n, vocab]`` in float32 (16384 columns for the published vocabulary), their log-softmax and, in
backward, their gradient: three buffers the size of the whole batch's logits, the largest tensors of a
training step. Here the logits of at most ``chunk`` rows exist at once.

How: the loss is a scalar, so the gradient of the mean cross-entropy with respect to a chunk's logits is
known as soon as they are: ``(softmax - onehot) / N``. The forward pass computes, per chunk, the logits,
their log-sum-exp and that gradient, and turns it straight into the chunk's share of the gradients of the
hidden states and of the head weight (the two matmuls backward would do anyway). Backward only scales the
stored gradients by the incoming one. Three head-sized matmuls per chunk, the same count as the plain
formula; nothing is recomputed.

Precision follows the plain formula: the matmuls run in the autocast dtype when autocast is on (else the
inputs' dtype) and the softmax in float32; the head's gradient is accumulated in float32 across chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ARPGError

#: Rows per chunk by default: 1024 rows of 16384 float32 logits are 64 MB.
DEFAULT_CHUNK_ROWS = 1024


def _compute_dtype(h: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(h.device.type):
        return torch.get_autocast_dtype(h.device.type)
    return h.dtype


class _ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, chunk: int, dtype: torch.dtype, want_grad: bool):
        N = h.shape[0]
        w = weight.to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if want_grad and ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if want_grad and ctx.needs_input_grad[1] else None
        for s in range(0, N, chunk):
            hc, t = h[s:s + chunk].to(dtype), targets[s:s + chunk, None]
            logits = (hc @ w.t()).float()
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            total += (lse - logits.gather(1, t)).sum()
            if grad_h is None and grad_w is None:
                continue
            g = logits.sub_(lse).exp_()  # softmax, in place of the logits
            g.scatter_add_(1, t, torch.full_like(t, -1, dtype=g.dtype)).div_(N)
            g = g.to(dtype)
            if grad_h is not None:
                grad_h[s:s + chunk] = (g @ w).to(h.dtype)
            if grad_w is not None:
                grad_w += (g.t() @ hc).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total / N

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = None if grad_h is None else grad_h * grad_out.to(grad_h.dtype)
        gw = None if grad_w is None else (grad_w * grad_out).to(ctx.weight_dtype)
        return gh, gw, None, None, None, None


def head_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                       chunk: int | None = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Mean cross-entropy of the logits ``h @ weight.T`` against ``targets``, as
    ``F.cross_entropy(F.linear(h, weight).float(), targets)`` computes it, with the float32 logits of at most
    ``chunk`` rows in memory at once (forward and backward).

    Args:
        h: final hidden states, already normalised, [N, d] (or [..., d]; flattened).
        weight: the head's weight [vocab, d] (no bias).
        targets: LongTensor [N] (or [...]) of target ids.
        chunk: rows per chunk; ``None`` or 0 runs the plain formula (the whole logits at once).
    """
    h = h.reshape(-1, h.shape[-1])
    targets = targets.reshape(-1)
    if h.shape[0] != targets.shape[0]:
        raise ARPGError(f"head_cross_entropy: {h.shape[0]} rows of hidden states but {targets.shape[0]} targets")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0):
        raise ARPGError(f"loss chunk must be a non-negative number of rows, got {chunk!r}")
    if not chunk:
        return F.cross_entropy(F.linear(h, weight).float(), targets)
    dtype = _compute_dtype(h)
    want_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    with torch.autocast(h.device.type, enabled=False):  # the dtypes are chosen above, as autocast would
        return _ChunkedHeadLoss.apply(h, weight, targets, int(chunk), dtype, want_grad)
