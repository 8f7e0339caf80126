"""Generation orders that spread the cells decoded together (training-free few-step sampling).

All are per-sample random (different for every row, reproducible from the generator) and return a
LongTensor [B, g*g] of permutations; distances are Euclidean between cell centres.

* ``halton``: the 2-D Halton sequence (bases 2 and 3), randomly shifted per sample (Cranley-Patterson
  rotation), each point mapped to its grid cell, cells taken at their first hit. Any prefix of the order
  is a low-discrepancy set, so every step's cells cover the grid evenly (the rule of the Halton scheduler
  for masked models, ICLR 2025).
* ``locality``: step-aware (needs the step sizes). Within a step, each next cell is the one farthest from
  the cells already chosen for this step (up to the ideal spacing ``sqrt(cells / step size)``), ties
  broken by closeness to the cells decoded in earlier steps, then at random: cells decoded together are
  far apart, and near what is known (the idea of locality-aware parallel decoding, LPD, ICLR 2026,
  computed here as a plain order).
* ``farthest-first``: a random first cell, then always the cell farthest from every cell so far
  (maximin / farthest-point sampling), ties at random: coarse to fine, not tied to the step sizes.
"""

from __future__ import annotations

from typing import Sequence

import torch

SPREAD_ORDERS = ("halton", "locality", "farthest-first")


def _coords(grid: int, device: torch.device) -> torch.Tensor:
    t = torch.arange(grid * grid, device=device)
    return torch.stack([t // grid, t % grid], dim=1).float()


def _radical_inverse(i: torch.Tensor, base: int) -> torch.Tensor:
    out = torch.zeros(i.shape, dtype=torch.float64, device=i.device)
    f, i = 1.0 / base, i.clone()
    while bool((i > 0).any()):
        out += f * (i % base).double()
        i = i // base
        f /= base
    return out


def halton_orders(batch: int, grid: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    n = grid * grid
    points = 8 * n  # enough for the shifted sequence to hit (almost) every cell; the rest go last
    idx = torch.arange(1, points + 1, device=device)
    base = torch.stack([_radical_inverse(idx, 2), _radical_inverse(idx, 3)], dim=1)  # [P, 2]
    shift = torch.rand(batch, 1, 2, generator=generator, device=device, dtype=torch.float64)
    pts = (base[None] + shift) % 1.0
    cells = (pts[..., 0] * grid).long().clamp_max(grid - 1) * grid + (pts[..., 1] * grid).long().clamp_max(grid - 1)
    first = torch.full((batch, n), float(points), device=device, dtype=torch.float64)
    first.scatter_reduce_(1, cells, idx.double().expand(batch, -1) - 1, reduce="amin")
    # Cells never hit (rare) go last, in random order.
    first = first + torch.rand(batch, n, generator=generator, device=device, dtype=torch.float64) * 1e-3
    return first.argsort(dim=1)


def _pick(score: torch.Tensor, taken: torch.Tensor) -> torch.Tensor:
    return score.masked_fill(taken, float("-inf")).argmax(dim=1)


def locality_orders(batch: int, grid: int, counts: Sequence[int], generator: torch.Generator | None,
                    device: torch.device) -> torch.Tensor:
    n = grid * grid
    xy = _coords(grid, device)
    dist = torch.cdist(xy, xy)  # [n, n]
    noise = torch.rand(batch, n, generator=generator, device=device)
    taken = torch.zeros(batch, n, dtype=torch.bool, device=device)
    d_known = torch.full((batch, n), float(2 * grid), device=device)
    rows = torch.arange(batch, device=device)
    out = []
    for c in counts:
        spacing = max(1.0, (n / c) ** 0.5)
        d_group = torch.full((batch, n), float(2 * grid), device=device)
        for _ in range(c):
            # Far from this step's cells first; then near the known ones; then random.
            score = d_group.clamp_max(spacing) * 1000 - d_known.clamp_max(2 * grid) * 10 + noise
            cell = _pick(score, taken)
            taken[rows, cell] = True
            d_group = torch.minimum(d_group, dist[cell])
            out.append(cell)
        chosen = torch.stack(out[-c:], dim=1)  # [B, c]
        d_known = torch.minimum(d_known, dist[chosen].min(dim=1).values)
    return torch.stack(out, dim=1)


def farthest_first_orders(batch: int, grid: int, generator: torch.Generator | None,
                          device: torch.device) -> torch.Tensor:
    n = grid * grid
    dist = torch.cdist(_coords(grid, device), _coords(grid, device))
    noise = torch.rand(batch, n, generator=generator, device=device)
    taken = torch.zeros(batch, n, dtype=torch.bool, device=device)
    d_min = torch.full((batch, n), float(2 * grid), device=device)
    rows = torch.arange(batch, device=device)
    out = []
    for _ in range(n):
        cell = _pick(d_min * 1000 + noise, taken)
        taken[rows, cell] = True
        d_min = torch.minimum(d_min, dist[cell])
        out.append(cell)
    return torch.stack(out, dim=1)


def spread_orders(name: str, batch: int, grid: int, generator: torch.Generator | None,
                  device: torch.device, counts: Sequence[int] | None = None) -> torch.Tensor:
    """One of :data:`SPREAD_ORDERS` as [batch, grid*grid] (``counts``: the step sizes, for ``locality``)."""
    if name == "halton":
        return halton_orders(batch, grid, generator, device)
    if name == "locality":
        return locality_orders(batch, grid, counts or [grid * grid], generator, device)
    return farthest_first_orders(batch, grid, generator, device)
