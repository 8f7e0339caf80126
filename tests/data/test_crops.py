"""ADM centre crop and the published ten-crop."""

import numpy as np
import pytest
import torch
from PIL import Image

from arpg.data.crops import CROP_MODES, center_crop_arr, five_crop, make_crops, ten_crop, to_model_input
from arpg.errors import ARPGError


def _img(h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.mark.parametrize("h,w,size", [(300, 500, 64), (40, 25, 32), (64, 64, 64), (17, 90, 16)])
def test_center_crop_is_square_of_requested_size(h, w, size):
    out = center_crop_arr(_img(h, w), size)
    assert out.size == (size, size)


def test_center_crop_box_halves_then_takes_the_centre():
    # Short side exactly 2x the target: one BOX halving, then the bicubic resize is the identity.
    img = _img(64, 96, seed=1)
    got = np.asarray(center_crop_arr(img, 32))
    half = np.asarray(img.resize((48, 32), resample=Image.BOX))
    assert np.array_equal(got, half[:, 8:40])


def test_center_crop_keeps_a_centred_marker_centred():
    arr = np.zeros((120, 200), dtype=np.uint8)
    arr[50:70, 90:110] = 255  # a square in the middle
    out = np.asarray(center_crop_arr(Image.fromarray(arr), 60)).astype(float)
    ys, xs = np.nonzero(out > 128)
    assert abs(ys.mean() - 29.5) < 1 and abs(xs.mean() - 29.5) < 1


def test_ten_crop_layout_and_mirrors():
    img = _img(50, 70, seed=2)
    size = 20  # base = int(22.0) = 22: even margin, so the centre crop is mirror-symmetric
    crops = ten_crop(img, size)
    assert len(crops) == 10 and all(c.size == (size, size) for c in crops)
    base = np.asarray(center_crop_arr(img, int(size * 1.1)))
    a = [np.asarray(c) for c in crops]
    S = base.shape[0]
    assert np.array_equal(a[0], base[:size, :size])  # top-left
    assert np.array_equal(a[1], base[:size, S - size:])  # top-right
    assert np.array_equal(a[2], base[S - size:, :size])  # bottom-left
    assert np.array_equal(a[3], base[S - size:, S - size:])  # bottom-right
    assert np.array_equal(a[4], base[1:1 + size, 1:1 + size])  # centre
    mirror = {5: 1, 6: 0, 7: 3, 8: 2, 9: 4}  # the mirror's tl is the mirrored tr, ...
    for k, j in mirror.items():
        assert np.array_equal(a[k], a[j][:, ::-1])


def test_five_crop_centre_rounds_like_torchvision():
    img = _img(281, 281, seed=3)
    c = np.asarray(five_crop(img, 256)[4])
    assert np.array_equal(c, np.asarray(img)[12:268, 12:268])  # round(12.5) = 12


def test_modes_and_model_input():
    img = _img(33, 47, seed=4)
    for mode, k in CROP_MODES.items():
        assert len(make_crops(img, 16, mode)) == k
    flip = make_crops(img, 16, "flip")
    assert np.array_equal(np.asarray(flip[1]), np.asarray(flip[0])[:, ::-1])
    x = to_model_input(make_crops(img, 16, "ten"), channels=3)
    assert x.shape == (10, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
    g = to_model_input(make_crops(img.convert("L"), 16, "single"), channels=1)
    assert g.shape == (1, 1, 16, 16)
    px = np.asarray(make_crops(img, 16, "single")[0])[3, 5]
    assert torch.allclose(to_model_input([make_crops(img, 16, "single")[0]])[0, :, 3, 5],
                          torch.tensor(px, dtype=torch.float32) / 127.5 - 1)


def test_errors_are_one_line():
    with pytest.raises(ARPGError, match="unknown crop mode"):
        make_crops(_img(20, 20), 16, "twelve")
    with pytest.raises(ARPGError, match="larger than the image"):
        five_crop(_img(10, 10), 16)
    with pytest.raises(ARPGError, match="channels"):
        to_model_input([_img(8, 8)], channels=4)
