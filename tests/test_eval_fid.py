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
    # Identical statistics give 0 up to the matrix square root's rounding, which scales with the
    # covariance's size (a random 24x24 mixing matrix is sometimes nearly singular).
    assert values[0] < 1e-9 * np.trace(sigma)
    assert all(a < b for a, b in zip(values, values[1:])), values
    shifts = [frechet_distance(mu, sigma, mu + t, sigma) for t in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([24 * t ** 2 for t in (0.5, 1.0, 2.0)], rel=1e-9)


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
    np.testing.assert_allclose(st.mu - 1e6, centred.mean(0), rtol=0, atol=1e-9)
    # The textbook sum(x x^T) - n mu mu^T would be off by ~(1e6)^2 * 1e-16 = 1e-4 here.
    np.testing.assert_allclose(st.sigma, np.cov(centred, rowvar=False), rtol=1e-8, atol=1e-9)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ARPGError, match="same feature network"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ARPGError, match="NaN"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))
    with pytest.raises(ARPGError, match="at least 2"):
        FeatureStats().update(np.ones((1, 3))) or feature_stats(np.ones((1, 3)))
