"""Inception Score from logits."""

import numpy as np
import pytest

from arpg.errors import ARPGError
from arpg.eval.inception_score import inception_score


def test_uniform_predictions_score_one():
    rng = np.random.default_rng()
    logits = np.tile(rng.standard_normal((1, 1)), (500, 7))  # identical logits in every class
    m, s = inception_score(logits)
    assert m == pytest.approx(1.0, abs=1e-12) and s == pytest.approx(0.0, abs=1e-12)


def test_confident_evenly_spread_predictions_score_the_number_of_classes():
    rng = np.random.default_rng()
    c, n = 25, 2000
    # each of the 10 splits holds every class equally often, in random order
    labels = np.stack([rng.permutation(np.repeat(np.arange(c), n // 10 // c)) for _ in range(10)]).reshape(-1)
    logits = rng.standard_normal((n, c)) * 0.1
    logits[np.arange(n), labels] += 80.0
    m, s = inception_score(logits)
    assert m == pytest.approx(c, rel=1e-9) and s < 1e-6


def test_score_lies_between_one_and_classes_and_ignores_row_offsets():
    rng = np.random.default_rng()
    logits = rng.standard_normal((300, 12)) * 2
    m, _ = inception_score(logits, splits=3)
    assert 1.0 < m < 12.0
    shifted = logits + rng.standard_normal((300, 1)) * 1000  # softmax is shift invariant per row
    assert inception_score(shifted, splits=3).mean == pytest.approx(m, rel=1e-9)


def test_extreme_logits_stay_finite():
    logits = np.full((40, 5), -1e4)
    logits[np.arange(40), np.arange(40) % 5] = 1e4
    assert inception_score(logits, splits=4).mean == pytest.approx(5.0)


def test_too_few_samples_is_an_error():
    with pytest.raises(ARPGError, match="splits=10"):
        inception_score(np.random.default_rng().standard_normal((5, 3)))
