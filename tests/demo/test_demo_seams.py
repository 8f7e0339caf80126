"""Seam statistics of outpainted canvases."""

import numpy as np
import pytest
import torch

from arpg.demo.seams import KNOWN, matched_seam_contrast, origin_map, seam_stats


def _brute(px, origin, f):
    groups = {"seam": [], "inside": [], "edge": []}
    H, W = px.shape
    for y in range(H):
        for x in range(W):
            for dy, dx in ((0, 1), (1, 0)):
                y2, x2 = y + dy, x + dx
                if y2 >= H or x2 >= W:
                    continue
                a, b = origin[y // f, x // f], origin[y2 // f, x2 // f]
                d = abs(px[y, x] - px[y2, x2])
                if a != b and (a != KNOWN or b != KNOWN):
                    groups["seam"].append(d)
                elif a == b and a != KNOWN:
                    groups["inside"].append(d)
                    if (y2 // f, x2 // f) != (y // f, x // f):
                        groups["edge"].append(d)
    return {k: np.mean(v) for k, v in groups.items()}


def test_seam_stats_match_a_pair_by_pair_count():
    rng = np.random.default_rng()
    f = 3
    origin = rng.integers(-1, 3, size=(4, 5))
    # Pin a few cells so that every group has pairs: with all 20 cells random, about 1 draw in 200 has no
    # two neighbouring cells from the same window, so the "edge" group is empty and both means are NaN.
    origin[0, :2] = 0  # same window across a cell boundary: "inside" and "edge" pairs
    origin[1, 0] = KNOWN  # next to a decoded cell: "seam" pairs
    px = rng.uniform(0, 255, size=(4 * f, 5 * f))
    st = seam_stats(px, origin, f)
    ref = _brute(px, origin, f)
    assert st.seam == pytest.approx(ref["seam"]) and st.inside == pytest.approx(ref["inside"])
    assert st.inside_cell_edges == pytest.approx(ref["edge"])


def test_piecewise_constant_patches_have_seams_only_at_borders():
    rng = np.random.default_rng()
    origin = np.array([[-1, -1, 0, 0, 1, 1]] * 4)
    values = {o: rng.uniform(0, 255) for o in (-1, 0, 1)}
    px = np.vectorize(values.get)(np.repeat(np.repeat(origin, 4, 0), 4, 1))
    st = seam_stats(px[..., None].repeat(3, axis=2), origin, 4)  # colour input is averaged
    assert st.inside == 0.0 and st.inside_cell_edges == 0.0
    assert st.seam == pytest.approx((abs(values[-1] - values[0]) + abs(values[0] - values[1])) / 2)


def test_origin_map_follows_the_window_log_and_rejects_gaps():
    known = np.zeros((2, 6), dtype=bool)
    known[:, :2] = True
    new0 = torch.ones(2, 4, dtype=torch.bool)
    new0[:, :2] = False
    log = [(0, 0, torch.zeros(2, 4, dtype=torch.bool)), (0, 0, new0), (0, 2, torch.tensor([[False, False, True, True]] * 2))]
    np.testing.assert_array_equal(origin_map(known, log), [[-1, -1, 1, 1, 2, 2]] * 2)
    with pytest.raises(ValueError, match="neither known nor decoded"):
        origin_map(known, log[:2])


def test_matched_contrast_compares_the_same_pairs_under_two_plans():
    rng = np.random.default_rng()
    f = 2
    known = np.zeros((3, 6), dtype=bool)
    known[:, :2] = True
    plan_a = np.where(known, KNOWN, np.array([[0, 0, 0, 0, 1, 1]] * 3))  # seam between cells 3|4
    plan_b = np.where(known, KNOWN, np.array([[0, 0, 0, 1, 1, 1]] * 3))  # seam between cells 2|3
    px_a, px_b = rng.uniform(0, 255, (2, 3 * f, 6 * f))
    seam, inside, n = matched_seam_contrast([(px_a, plan_a), (px_b, plan_b)], f)
    # matched pairs: the column pair straddling cells 3|4 (seam in a, inside in b) and 2|3 (vice versa)
    assert n == 2 * 3 * f
    a_cols, b_cols = 4 * f - 1, 3 * f - 1
    exp_seam = np.concatenate([abs(px_a[:, a_cols] - px_a[:, a_cols + 1]), abs(px_b[:, b_cols] - px_b[:, b_cols + 1])])
    exp_inside = np.concatenate([abs(px_b[:, a_cols] - px_b[:, a_cols + 1]), abs(px_a[:, b_cols] - px_a[:, b_cols + 1])])
    assert seam == pytest.approx(exp_seam.mean()) and inside == pytest.approx(exp_inside.mean())
