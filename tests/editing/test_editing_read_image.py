"""read_image: the one image conversion of the CLI, the app and the API."""

import numpy as np
import pytest

from arpg.editing.images import read_image
from arpg.errors import ARPGError


def test_fit_undoes_a_whole_factor_nearest_enlargement():
    rng = np.random.default_rng()
    small = rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)
    k = int(rng.integers(2, 9))
    assert np.array_equal(read_image(small.repeat(k, 0).repeat(k, 1), 3, fit=(32, 24)), small)


def test_fit_crops_the_centre_to_the_aspect():
    rng = np.random.default_rng()
    img = rng.integers(0, 256, (20, 60), dtype=np.uint8)
    out = read_image(img, 1, fit=(20, 20))  # no resize needed: only the centre square is kept
    assert np.array_equal(out[..., 0], img[:, 20:40])
    assert read_image(img, 3, fit=(64, 64)).shape == (64, 64, 3)  # enlarged (bicubic), grey -> RGB


def test_without_fit_the_size_is_kept_and_alpha_dropped():
    rgba = np.random.default_rng().integers(0, 256, (12, 8, 4), dtype=np.uint8)
    out = read_image(rgba, 3)
    assert out.shape == (12, 8, 3) and np.array_equal(out, rgba[..., :3])
    with pytest.raises(ARPGError, match="positive"):
        read_image(rgba, 3, fit=(0, 4))


def test_cli_fit_takes_any_image_size(tmp_path):
    from PIL import Image

    from arpg.cli import main
    rng = np.random.default_rng()
    src = tmp_path / "odd.png"
    Image.fromarray(rng.integers(0, 256, (90, 70), dtype=np.uint8)).save(src)
    out = tmp_path / "out.png"
    assert main(["inpaint", str(src), "--fit", "--box", "0,0,16,16", "--label", "2", "--steps", "4",
                 "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (32, 32)  # the shipped demo model's size
    assert main(["inpaint", str(src), "--box", "0,0,16,16", "--label", "2", "--out", str(out)]) == 2
