"""Inception Score from classifier logits: ``exp(E_x KL(p(y|x) || p(y)))``, averaged over splits.

Matches the reference computation: softmax over all classes of the network (1008 for the 2015-12-05
Inception), the samples cut into ``splits`` consecutive equal parts (10 by default; a remainder of
``N mod splits`` rows is dropped, as in the reference code), one score per part, mean and std.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ARPGError


class InceptionScore(NamedTuple):
    mean: float
    std: float


def inception_score(logits: np.ndarray, splits: int = 10) -> InceptionScore:
    """IS of ``logits`` ``[N, C]`` (unnormalised); computed in float64 with a stable log-softmax."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ARPGError(f"logits must be [N, C] with C >= 2, got shape {x.shape}")
    if splits < 1 or x.shape[0] < splits:
        raise ARPGError(f"need at least splits={splits} samples for the Inception Score, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ARPGError("logits contain NaN or inf")
    x = x - x.max(axis=1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))  # log p(y|x)
    p = np.exp(logp)
    size = x.shape[0] // splits
    scores = []
    for i in range(splits):
        lp, pp = logp[i * size:(i + 1) * size], p[i * size:(i + 1) * size]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_marginal = np.log(pp.mean(axis=0))  # -inf only for columns that are 0 in every row here
            kl = np.where(pp > 0, pp * (lp - log_marginal), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return InceptionScore(float(np.mean(scores)), float(np.std(scores)))
