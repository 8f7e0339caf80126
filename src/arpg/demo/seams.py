"""Seam statistics for outpainted canvases.

A canvas filled by :func:`arpg.editing.canvas.fill_canvas` is a patchwork: cells that were known and
cells decoded by each window in turn. A visible seam is a jump in pixel values where two patches meet.
We measure the mean absolute difference (MAD) between neighbouring pixels (horizontal and vertical
pairs) in three groups:

* ``seam``: the two pixels lie in cells of *different* origin (known vs decoded, or two windows);
* ``inside``: both pixels lie in cells decoded by the *same* window (within or across cells);
* ``inside_cell_edges``: the subset of ``inside`` pairs that straddle a cell boundary. Tokenizer
  artefacts make every cell boundary a little rougher than the middle of a cell, and a seam always
  lies on a cell boundary, so this is the like-for-like comparison.

Known-vs-known pairs are left out: they are the source image, not something we generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

KNOWN = -1


def origin_map(known: np.ndarray, windows: Sequence[tuple[int, int, np.ndarray]]) -> np.ndarray:
    """Per-cell origin [H, W]: ``KNOWN`` for known cells, else the index of the window that decoded it.

    ``windows`` is ``fill_canvas``'s log: ``(row, col, decoded_mask [g, g])`` in decoding order.
    """
    known = np.asarray(known, dtype=bool)
    origin = np.full(known.shape, -2, dtype=np.int64)
    origin[known] = KNOWN
    for k, (r, c, new) in enumerate(windows):
        new = np.asarray(new, dtype=bool)
        g_h, g_w = new.shape
        block = origin[r:r + g_h, c:c + g_w]
        block[new] = k
    if (origin == -2).any():
        raise ValueError("some canvas cells are neither known nor decoded by any window")
    return origin


@dataclass(frozen=True)
class SeamStats:
    seam: float
    inside: float
    inside_cell_edges: float
    n_seam: int
    n_inside: int


def _pairs(pixels: np.ndarray, origin: np.ndarray, factor: int) -> list[tuple[np.ndarray, ...]]:
    """Per axis: (|difference|, seam mask, inside mask, on-cell-edge mask) of every neighbouring pair."""
    px = np.asarray(pixels, dtype=np.float64)
    if px.ndim == 3:
        px = px.mean(axis=2)
    cell_origin = np.repeat(np.repeat(np.asarray(origin), factor, axis=0), factor, axis=1)
    if cell_origin.shape != px.shape:
        raise ValueError(f"pixels {px.shape} do not match origin {np.shape(origin)} x factor {factor}")
    out = []
    for axis in (0, 1):
        diff = np.abs(np.diff(px, axis=axis))
        a = np.take(cell_origin, np.arange(px.shape[axis] - 1), axis=axis)
        b = np.take(cell_origin, np.arange(1, px.shape[axis]), axis=axis)
        # pair i straddles a cell boundary when pixel i is the last of its cell
        pos = np.arange(px.shape[axis] - 1) % factor == factor - 1
        on_edge = np.broadcast_to(pos[:, None] if axis == 0 else pos[None, :], diff.shape)
        seam = ((a != KNOWN) | (b != KNOWN)) & (a != b)
        inside = (a == b) & (a != KNOWN)
        out.append((diff, seam, inside, on_edge))
    return out


def _mean(x: list[np.ndarray]) -> float:
    x = np.concatenate(x) if x else np.zeros(0)
    return float(x.mean()) if x.size else float("nan")


def seam_stats(pixels: np.ndarray, origin: np.ndarray, factor: int) -> SeamStats:
    """MAD of neighbouring pixel pairs in a canvas ``pixels`` [H*f, W*f] (or [.., C]) by origin group."""
    seam, inside, edge = [], [], []
    for diff, s, i, e in _pairs(pixels, origin, factor):
        seam.append(diff[s])
        inside.append(diff[i])
        edge.append(diff[i & e])
    return SeamStats(seam=_mean(seam), inside=_mean(inside), inside_cell_edges=_mean(edge),
                     n_seam=int(sum(x.size for x in seam)), n_inside=int(sum(x.size for x in inside)))


def matched_seam_contrast(runs: list[tuple[np.ndarray, np.ndarray]], factor: int) -> tuple[float, float, int]:
    """Position-matched seam test over several fillings of the *same* canvas with different window plans.

    ``runs`` holds ``(pixels, origin)`` per plan. A pixel pair that is a seam in one run and inside one
    window in another is compared at the same place, so content that is denser in some parts of the canvas
    (e.g. next to the source image) cannot bias the result. Returns (mean |diff| where the pair is a seam,
    mean |diff| at the same pairs where it is inside a window, number of matched pairs).
    """
    pairs = [_pairs(px, o, factor) for px, o in runs]
    seam, inside = [], []
    for a in range(len(pairs)):
        for b in range(len(pairs)):
            if a == b:
                continue
            for (diff_a, seam_a, _, _), (diff_b, _, inside_b, _) in zip(pairs[a], pairs[b]):
                both = seam_a & inside_b
                seam.append(diff_a[both])
                inside.append(diff_b[both])
    return _mean(seam), _mean(inside), int(sum(x.size for x in seam))
