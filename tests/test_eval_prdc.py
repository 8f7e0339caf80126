"""Improved precision and recall (k-NN manifolds)."""

import numpy as np
import pytest
import torch

from arpg.eval.prdc import knn_radii, precision_recall


def test_identical_sets_have_precision_and_recall_one():
    x = np.random.default_rng().standard_normal((300, 32))
    pr = precision_recall(x, x.copy(), k=3, batch_size=64)
    assert pr.precision == 1.0 and pr.recall == 1.0


def test_knn_radii_match_brute_force():
    x = torch.randn(157, 9, dtype=torch.float64)
    d = torch.cdist(x, x) ** 2
    expected = d.sort(dim=1).values[:, 3]  # column 0 is the point itself
    for bs in (16, 1000):
        torch.testing.assert_close(knn_radii(x, k=3, batch_size=bs), expected, rtol=1e-9, atol=1e-9)


def test_precision_and_recall_fall_as_supports_separate():
    rng = np.random.default_rng()
    real = rng.standard_normal((400, 8))
    fake = rng.standard_normal((400, 8))
    direction = np.ones(8) / np.sqrt(8)
    # Shifts far enough apart that each step drops both scores by ~0.15 or more, which is several
    # standard errors of a 400-sample proportion, so the ordering is not a coin flip.
    results = [precision_recall(real, fake + s * direction, k=3) for s in (0.0, 2.5, 4.0, 12.0)]
    prec = [r.precision for r in results]
    rec = [r.recall for r in results]
    assert prec[0] > 0.7 and rec[0] > 0.7  # k=3 manifolds of 400 points in 8-D: ~0.87 +- 0.03
    assert all(a > b for a, b in zip(prec, prec[1:])) and all(a > b for a, b in zip(rec, rec[1:])), (prec, rec)
    assert prec[-1] == 0.0 and rec[-1] == 0.0


def test_mode_dropping_lowers_recall_not_precision():
    rng = np.random.default_rng()
    centres = np.stack([np.zeros(6), np.full(6, 20.0)])
    real = np.concatenate([c + rng.standard_normal((300, 6)) for c in centres])
    full = np.concatenate([c + rng.standard_normal((300, 6)) for c in centres])
    dropped = centres[0] + rng.standard_normal((600, 6))  # same count, one of the two modes only
    base = precision_recall(real, full, k=3)
    pr = precision_recall(real, dropped, k=3)
    assert pr.precision > 0.8 * base.precision
    assert 0.3 * base.recall < pr.recall < 0.6 * base.recall, (base, pr)


def test_batching_does_not_change_the_result():
    rng = np.random.default_rng()
    real, fake = rng.standard_normal((230, 5)), rng.standard_normal((170, 5)) * 1.5
    a = precision_recall(real, fake, batch_size=50)
    b = precision_recall(real, fake, batch_size=4096)
    assert a == pytest.approx(b)
