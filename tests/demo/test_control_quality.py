"""The control-fidelity scores of the ControlARPG measurement: edge F1 with a pixel tolerance, layout IoU."""

import numpy as np

from arpg.demo.control_quality import dilate, edge_f1, layout_iou


def _line(row, n=1, size=16, lo=2, hi=14):
    m = np.zeros((n, size, size), bool)
    m[:, row, lo:hi] = True
    return m


def test_dilation_is_the_8_neighbourhood():
    m = np.zeros((1, 5, 5), bool)
    m[0, 2, 2] = True
    assert dilate(m)[0].sum() == 9 and dilate(m)[0, 1:4, 1:4].all()


def test_edge_f1_tolerates_one_pixel_and_no_more():
    ref = _line(5)
    assert edge_f1(ref, ref)[0] == 1.0
    assert edge_f1(_line(6), ref)[0] == 1.0  # one pixel off: within tolerance
    assert edge_f1(_line(8), ref)[0] == 0.0
    assert edge_f1(np.zeros_like(ref), np.zeros_like(ref))[0] == 1.0
    assert edge_f1(np.zeros_like(ref), ref)[0] == 0.0
    # half the predicted pixels on the edge, all of the reference found: P = 0.5, R = 1, F1 = 2/3
    pred = _line(5) | _line(10)
    assert np.isclose(edge_f1(pred, ref)[0], 2 / 3)


def test_layout_iou():
    rng = np.random.default_rng(0)
    a = rng.random((4, 8, 8)) < 0.5
    b = rng.random((4, 8, 8)) < 0.5
    want = (a & b).sum((1, 2)) / (a | b).sum((1, 2))
    assert np.allclose(layout_iou(a, b), want)
    assert layout_iou(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)))[0] == 1.0
