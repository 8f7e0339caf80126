"""Fréchet distance and streaming feature statistics."""

import numpy as np
import pytest
import scipy.linalg

from arpg.errors import ARPGError
from arpg.eval.fid import FeatureStats, feature_stats, frechet_distance, trace_sqrt_product


def _spd(rng, d, scale=1.0):
    a = rng.standard_normal((d, d + 3))
    return scale * (a @ a.T) / d


def test_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng()
    d = 50
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) * 3
    s1, s2 = rng.uniform(0.01, 5, d), rng.uniform(0.01, 5, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_matches_independent_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng()
    d = 40
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _spd(rng, d), _spd(rng, d, scale=2.0)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)  # symmetric


def test_trace_sqrt_product_of_commuting_matrices():
    rng = np.random.default_rng()
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    a, b = rng.uniform(0, 3, 20), rng.uniform(0, 3, 20)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.sqrt(a * b).sum(), rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_even_when_singular():
    rng = np.random.default_rng()
    for n, d in [(500, 16), (20, 64)]:  # second case: fewer samples than dimensions -> singular covariance
        x = rng.standard_normal((n, d)) * rng.uniform(0.1, 3, d) + rng.standard_normal(d)
        mu, sigma = feature_stats(x)
        assert frechet_distance(mu, sigma, mu, sigma) < 1e-8 * max(1.0, np.trace(sigma))


def test_fid_grows_monotonically_with_perturbation():
    rng = np.random.default_rng()
    x = rng.standard_normal((400, 24)) @ rng.standard_normal((24, 24))
    noise = rng.standard_normal(x.shape)
    mu, sigma = feature_stats(x)
    values = [frechet_distance(mu, sigma, *feature_stats(x + eps * noise)) for eps in (0.0, 0.1, 0.3, 1.0, 3.0)]
    # Identical statistics give 0 up to the rounding of tr((S S)^{1/2}): an eigenvalue lam of S enters as
    # sqrt(lam^2 + O(eps lam_max^2)), so each one can be off by ~sqrt(eps) lam_max when S is nearly singular
    # (a random 24x24 mixing matrix sometimes is). Bound: d sqrt(eps) lam_max. The former 1e-9 tr(S) was
    # exceeded about 1 run in 4000; over 20000 runs the largest value was 1/26 of this bound.
    lam_max = np.linalg.eigvalsh(sigma)[-1]
    tol = 24 * np.sqrt(np.finfo(np.float64).eps) * lam_max
    assert values[0] < tol, (values[0], tol)
    assert all(a < b for a, b in zip(values, values[1:])), values
    shifts = [frechet_distance(mu, sigma, mu + t, sigma) for t in (0.5, 1.0, 2.0)]
    # Same covariance on both sides: the trace terms carry exactly the rounding of values[0], which an
    # absolute tolerance must allow for (rel=1e-9 alone failed about 1 run in 35).
    assert shifts == pytest.approx([24 * t ** 2 for t in (0.5, 1.0, 2.0)], rel=1e-9, abs=tol)


def test_streaming_stats_equal_numpy_and_survive_a_large_offset():
    rng = np.random.default_rng()
    x = rng.standard_normal((1000, 12)) * rng.uniform(0.01, 2, 12) + 1e6  # large mean, small spread
    st = FeatureStats()
    start = 0
    for size in rng.integers(1, 200, 100):
        st.update(x[start:start + size])
        start += size
        if start >= len(x):
            break
    st.update(x[start:])
    assert st.count == len(x)
    centred = x - 1e6  # exact shift in float64, so np.cov here is a faithful reference
    # Values near 1e6 are spaced 1.2e-10 apart, and the batch means round at that scale: the error reached
    # 0.76e-9 in 60000 runs, too close to a 1e-9 limit. 1e-8 (~1e-14 relative) still rules out any real
    # mistake in the merge.
    np.testing.assert_allclose(st.mu - 1e6, centred.mean(0), rtol=0, atol=1e-8)
    # The textbook sum(x x^T) - n mu mu^T would be off by ~(1e6)^2 * 1e-16 = 1e-4 here.
    np.testing.assert_allclose(st.sigma, np.cov(centred, rowvar=False), rtol=1e-8, atol=1e-9)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ARPGError, match="same feature network"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ARPGError, match="NaN"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))
    with pytest.raises(ARPGError, match="at least 2"):
        FeatureStats().update(np.ones((1, 3))) or feature_stats(np.ones((1, 3)))
