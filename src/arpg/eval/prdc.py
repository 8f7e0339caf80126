"""Improved precision and recall (Kynkäänniemi et al., 2019) on feature vectors.

Each set is approximated by a union of balls: around every point, a ball reaching its k-th nearest
neighbour in the same set (k = 3, as in the standard ImageNet evaluator). Precision is the fraction of
generated points inside the real manifold; recall is the fraction of real points inside the generated
manifold. Distances are squared Euclidean, computed blockwise as ``|a|^2 - 2 a.b + |b|^2`` on the chosen
device so that 50k x 50k comparisons never materialise a full matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..errors import ARPGError


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


def _tensor(x: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ARPGError(f"features must be [N, D], got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype)


def _sq_dists(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    # Squared distances of a block; clamp removes the small negatives that cancellation produces.
    return (a_sq[:, None] - 2.0 * (a @ b.T) + b_sq[None, :]).clamp_(min=0.0)


def knn_radii(feats: torch.Tensor, k: int = 3, batch_size: int = 4096) -> torch.Tensor:
    """Squared distance from every row to its k-th nearest *other* row of the same set, shape ``[N]``."""
    n = feats.shape[0]
    if n <= k:
        raise ARPGError(f"k-NN radii need more than k={k} points, got {n}")
    sq = (feats * feats).sum(dim=1)
    out = torch.empty(n, dtype=feats.dtype, device=feats.device)
    for i in range(0, n, batch_size):
        rows = feats[i:i + batch_size]
        best = None
        for j in range(0, n, batch_size):  # running (k+1)-smallest over column blocks bounds memory
            d = _sq_dists(rows, feats[j:j + batch_size], sq[i:i + batch_size], sq[j:j + batch_size])
            cand = d if best is None else torch.cat([best, d], dim=1)
            best = torch.topk(cand, min(k + 1, cand.shape[1]), dim=1, largest=False).values
        out[i:i + batch_size] = best[:, k]  # index 0 is the point itself (distance 0)
    return out


def manifold_coverage(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor,
                      batch_size: int = 4096) -> float:
    """Fraction of ``queries`` that fall inside at least one ball ``(points[j], radii[j])``."""
    q_sq = (queries * queries).sum(dim=1)
    p_sq = (points * points).sum(dim=1)
    inside = torch.zeros(queries.shape[0], dtype=torch.bool, device=queries.device)
    for i in range(0, queries.shape[0], batch_size):
        hit = inside[i:i + batch_size]
        for j in range(0, points.shape[0], batch_size):
            d = _sq_dists(queries[i:i + batch_size], points[j:j + batch_size], q_sq[i:i + batch_size],
                          p_sq[j:j + batch_size])
            hit |= (d <= radii[None, j:j + batch_size]).any(dim=1)
    return float(inside.float().mean().item())


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3,
                     batch_size: int = 4096, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> PrecisionRecall:
    """Improved precision (fake inside the real manifold) and recall (real inside the fake manifold)."""
    dev = torch.device(device)
    r = _tensor(real, dev, dtype)
    f = _tensor(fake, dev, dtype)
    if r.shape[1] != f.shape[1]:
        raise ARPGError(f"feature dimensions differ: real {r.shape[1]}, fake {f.shape[1]}")
    with torch.no_grad():
        r_radii = knn_radii(r, k, batch_size)
        f_radii = knn_radii(f, k, batch_size)
        return PrecisionRecall(precision=manifold_coverage(f, r, r_radii, batch_size),
                               recall=manifold_coverage(r, f, f_radii, batch_size))
