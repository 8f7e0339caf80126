"""Fréchet distance between Gaussians, and streaming feature statistics (the "F" of FID).

``FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})``.

The matrix square root is the fragile part: ``S1 S2`` is not symmetric, and with fewer samples than
dimensions (or nearly collinear features) both covariances are singular, where ``scipy.linalg.sqrtm``
warns, returns complex values, or needs an ``eps * I`` offset. We avoid it entirely:
``S1 S2`` is similar to ``A = S1^{1/2} S2 S1^{1/2}`` (symmetric, positive semi-definite), so
``tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i(A))``. Two symmetric eigen-decompositions in float64, with
round-off negatives clipped to zero, give the trace for any PSD pair, singular ones included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ARPGError


def _as_cov(sigma: np.ndarray, name: str) -> np.ndarray:
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim == 0:
        s = s.reshape(1, 1)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ARPGError(f"{name} must be a square covariance matrix, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ARPGError(f"{name} contains NaN or inf")
    return 0.5 * (s + s.T)  # stored covariances are symmetric only up to round-off


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; round-off negative eigenvalues are treated as zero."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 @ sigma2)^{1/2})`` for symmetric PSD matrices, via ``S1^{1/2} S2 S1^{1/2}``."""
    s1 = _as_cov(sigma1, "sigma1")
    s2 = _as_cov(sigma2, "sigma2")
    r = _psd_sqrt(s1)
    a = r @ s2 @ r
    w = np.linalg.eigvalsh(0.5 * (a + a.T))
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``, in float64.

    Never negative; exactly the closed form for commuting (e.g. diagonal) covariances up to round-off.
    """
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = _as_cov(sigma1, "sigma1")
    s2 = _as_cov(sigma2, "sigma2")
    if not (m1.shape == m2.shape and m1.ndim == 1 and s1.shape == s2.shape == (m1.shape[0],) * 2):
        raise ARPGError(f"statistics do not match: mu {m1.shape} vs {m2.shape}, sigma {s1.shape} vs {s2.shape} "
                        "(were they computed with the same feature network?)")
    if not (np.isfinite(m1).all() and np.isfinite(m2).all()):
        raise ARPGError("mean vector contains NaN or inf")
    diff = m1 - m2
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(d, 0.0)  # tiny negatives are round-off on identical statistics


@dataclass
class FeatureStats:
    """Streaming mean and covariance of feature rows, accumulated in float64.

    Batches are merged with Chan et al.'s pairwise update (per-batch centred sums), which does not
    lose precision the way ``sum(x x^T) - n mu mu^T`` does when means are large relative to spread.
    """

    dim: int | None = None
    count: int = 0
    _mean: np.ndarray | None = field(default=None, repr=False)
    _m2: np.ndarray | None = field(default=None, repr=False)  # sum of centred outer products

    def update(self, feats: np.ndarray) -> None:
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2:
            raise ARPGError(f"features must be [N, D], got shape {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise ARPGError(f"feature dimension changed from {self.dim} to {x.shape[1]}")
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        xc = x - mean_b
        m2_b = xc.T @ xc
        if self.count == 0:
            self._mean, self._m2, self.count = mean_b, m2_b, n_b
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    @property
    def mu(self) -> np.ndarray:
        if self.count == 0:
            raise ARPGError("no features were accumulated")
        return self._mean.copy()

    @property
    def sigma(self) -> np.ndarray:
        """Unbiased sample covariance (``ddof=1``, like ``np.cov`` and the reference evaluators)."""
        if self.count < 2:
            raise ARPGError(f"need at least 2 feature rows for a covariance, got {self.count}")
        return self._m2 / (self.count - 1)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of a full feature matrix ``[N, D]`` (float64, ``ddof=1``)."""
    st = FeatureStats()
    st.update(feats)
    return st.mu, st.sigma
