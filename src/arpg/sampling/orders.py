"""Generation orders over a ``g x g`` grid (cell ``t`` is row ``t // g``, column ``t % g``).

Named orders (all permutations of ``range(g*g)``):

* ``raster``: row by row, left to right.
* ``alternate``: boustrophedon -- rows alternate direction (left-to-right, then right-to-left, ...).
* ``z-curve``: Morton order (bits of row and column interleaved); for non-power-of-two grids, cells are
  sorted by their Morton code.
* ``spiral-in``: clockwise from the top-left corner along the border, inwards to the centre.
* ``spiral-out``: ``spiral-in`` reversed (centre outwards).
* ``random``: an independent uniform permutation per sample (the default).
* ``shared-random``: one uniform permutation for the whole batch (what the published sampler does).
* ``halton``, ``locality``, ``farthest-first``: per-sample orders that spread the cells of each step
  (:mod:`arpg.sampling.spread_orders`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ARPGError
from .spread_orders import SPREAD_ORDERS, spread_orders

FIXED_ORDERS = ("raster", "alternate", "z-curve", "spiral-in", "spiral-out")
ORDERS = ("random", "shared-random") + FIXED_ORDERS + SPREAD_ORDERS


def _spiral_in(g: int) -> list[int]:
    top, bottom, left, right = 0, g - 1, 0, g - 1
    out: list[int] = []
    while top <= bottom and left <= right:
        out += [top * g + c for c in range(left, right + 1)]
        out += [r * g + right for r in range(top + 1, bottom + 1)]
        if top < bottom:
            out += [bottom * g + c for c in range(right - 1, left - 1, -1)]
        if left < right:
            out += [r * g + left for r in range(bottom - 1, top, -1)]
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return out


def _morton(r: int, c: int) -> int:
    code = 0
    for bit in range(16):
        code |= ((c >> bit) & 1) << (2 * bit) | ((r >> bit) & 1) << (2 * bit + 1)
    return code


def fixed_order(name: str, grid: int) -> torch.Tensor:
    """The named deterministic order as a LongTensor [grid*grid]."""
    n = grid * grid
    if name == "raster":
        seq = list(range(n))
    elif name == "alternate":
        seq = [r * grid + (c if r % 2 == 0 else grid - 1 - c) for r in range(grid) for c in range(grid)]
    elif name == "z-curve":
        seq = sorted(range(n), key=lambda t: _morton(t // grid, t % grid))
    elif name == "spiral-in":
        seq = _spiral_in(grid)
    elif name == "spiral-out":
        seq = _spiral_in(grid)[::-1]
    else:
        raise ARPGError(f"unknown order {name!r}; choose one of {', '.join(ORDERS)} or pass a permutation")
    return torch.tensor(seq, dtype=torch.long)


def is_permutation(orders: torch.Tensor, n: int) -> bool:
    if orders.shape[-1] != n:
        return False
    return bool((orders.sort(dim=-1).values == torch.arange(n, device=orders.device)).all())


def make_orders(order: str | Sequence[int] | torch.Tensor, batch: int, grid: int,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                counts: Sequence[int] | None = None) -> torch.Tensor:
    """Resolve ``order`` into a LongTensor [batch, grid*grid], one permutation per row (``counts``: the
    step sizes, which the ``locality`` order is built for)."""
    n = grid * grid
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if isinstance(order, str):
        if order == "random":
            out = torch.rand(batch, n, generator=generator, device=gen_device).argsort(dim=1)
        elif order == "shared-random":
            out = torch.rand(1, n, generator=generator, device=gen_device).argsort(dim=1).expand(batch, n)
        elif order in SPREAD_ORDERS:
            out = spread_orders(order, batch, grid, generator, gen_device, counts)
        else:
            out = fixed_order(order, grid).expand(batch, n)
        return out.to(device).contiguous()
    out = torch.as_tensor(order, dtype=torch.long)
    if out.dim() == 1:
        out = out.expand(batch, -1)
    if out.dim() != 2 or out.shape[0] != batch or not is_permutation(out.cpu(), n):
        raise ARPGError(f"an explicit order must be a permutation of 0..{n - 1}, shaped [{n}] or [{batch}, {n}] "
                        f"(got shape {list(torch.as_tensor(order).shape)})")
    return out.to(device).contiguous()
