"""Static-shape decoding steps: Pass 1 and Pass 2 over a KV cache attended at full capacity.

:meth:`ARPG.extend` and :meth:`ARPG.query` slice the cache to its filled length, so every step has new
shapes and a Python int position: fine in eager mode, but a compiled graph would be rebuilt at every step.
Here the position of a step is a tensor, new keys/values are written with ``index_copy_`` at tensor
positions, and attention always covers the whole cache with a mask of the positions that may be seen. A
step's shapes then depend only on the number of rows and the (padded) number of new tokens / queries, so
``torch.compile`` builds one graph per such pair and CUDA graphs can replay them.

Padding: a step of ``c`` tokens may be padded to ``T >= c`` (to share a graph with other steps). The padded
tokens are copies of the first one; their keys/values land in cache slots past the valid ones, which no
valid token sees and a later step overwrites, so the cache needs ``T - 1`` spare slots past the last cell
(:func:`static_capacity`). Padded queries are simply dropped by the caller.

The cache must start zeroed (``KVCache.allocate(..., zeroed=True)``): a masked key still enters the
attention product with weight 0, and ``0 * NaN`` from uninitialised memory would poison every row.
"""

from __future__ import annotations

import torch

from .model.cache import KVCache
from .model.rope import position_index


def static_capacity(n_cells: int, widest: int) -> int:
    """Cache slots for the class token, every cell and the padding of the widest padded step."""
    return n_cells + 1 + max(widest - 1, 0)


def key_windows(capacity: int, parts: int = 4) -> tuple[int, ...]:
    """The attended prefix lengths a static step may use: ``parts`` steps up to the full capacity (each a
    multiple of 8). Attending to the smallest window that holds every valid key, instead of always to the
    whole cache, keeps attention near its eager cost for a few more graphs."""
    sizes = set()
    for k in range(1, parts + 1):
        share = -(-capacity * k // parts)  # ceil(capacity * k / parts)
        sizes.add(min(capacity, -(-share // 8) * 8))
    return tuple(sorted(sizes))


def window_for(needed: int, windows: tuple[int, ...]) -> int:
    """The smallest window holding ``needed`` positions."""
    return next(w for w in windows if w >= needed)


def static_extend(model, ids: torch.Tensor, cells: torch.Tensor, cache: KVCache, start: torch.Tensor,
                  n_valid: torch.Tensor, causal: bool, window: int | None = None) -> None:
    """Pass 1 over ``ids``/``cells`` [R, T] (the first ``n_valid`` real, the rest padding), writing their
    keys/values at cache positions ``start .. start+T-1``. ``start`` and ``n_valid`` are 0-d long tensors.
    Block attention (``causal=False``): every new token sees the cache up to ``start + n_valid``; causal: new
    token ``t`` sees up to ``start + t``. Attention reads the first ``window`` slots (default: all; it must
    hold ``start + n_valid``). Does not touch ``cache.length`` (the caller tracks it)."""
    T = ids.shape[1]
    window = window or cache.capacity
    positions = start + torch.arange(T, device=ids.device)
    slots = torch.arange(window, device=ids.device)
    if causal:
        visible = slots[None, :] <= positions[:, None]
    else:
        visible = (slots < start + n_valid)[None, :].expand(T, window)
    rope = model.rope[position_index(cells)]
    h = model.embeddings(ids)
    for i, blk in enumerate(model.layers.self_dec):
        h = blk.forward_static(h, rope, cache.self_k[i], cache.self_v[i], positions, visible)
    k, v = model._shared_kv(h, rope)
    cache.shared_k.index_copy_(2, positions, k.to(cache.shared_k.dtype))
    cache.shared_v.index_copy_(2, positions, v.to(cache.shared_v.dtype))


def static_query(model, cells: torch.Tensor, cache: KVCache, length: torch.Tensor,
                 window: int | None = None, guidance: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Pass 2: float32 logits [R, Q, vocab] for target ``cells`` [R, Q], attending to the first ``length``
    (0-d long tensor) cache positions, read from the first ``window`` slots (default: all); the same values
    :meth:`ARPG.query` gives with ``cache.length == length`` (and the same ``guidance``)."""
    Q = cells.shape[1]
    window = window or cache.capacity
    visible = (torch.arange(window, device=cells.device) < length)[None, :].expand(Q, window)
    k, v = cache.shared_k[:, :, :window], cache.shared_v[:, :, :window]
    rope = model.rope[position_index(cells)]
    x = model.query_inputs(cache.class_ids, Q, cells, cache.condition, cache.condition_active)
    for blk in model.layers.cross_dec:
        x = blk(x, rope, k, v, is_causal=False, attn_mask=visible)
    return model._logits(x, guidance)
