import pickle

import numpy as np
import pytest

from arpg import ARPGError
from arpg.data import animal_mnist as am

pytest.importorskip("animal_mnist", reason="bundled data set not installed (scripts/setup.sh installs it)")


def test_split_shapes_labels_and_disjointness():
    xt, yt = am.load_split("train")
    xh, yh = am.load_split("heldout")
    assert xt.shape == (9000, 28, 28) and xh.shape == (1000, 28, 28)
    assert xt.dtype == np.uint8 and yt.dtype == np.int64
    assert np.bincount(yt).tolist() == [900] * 10 and np.bincount(yh).tolist() == [100] * 10
    it, ih = am.split_indices("train"), am.split_indices("heldout")
    assert len(set(it) & set(ih)) == 0 and len(set(it) | set(ih)) == 10000
    assert np.array_equal(it, am.split_indices("train"))  # fixed split
    assert len(am.CLASS_NAMES) == 10 and am.CLASS_NAMES[0] == "bear" and am.CLASS_NAMES[9] == "zebra"


def test_padding_keeps_pixels():
    x, _ = am.load_split("heldout")
    p = am.padded(x[:5])
    assert p.shape == (5, 32, 32, 1)
    assert np.array_equal(p[:, 2:30, 2:30, 0], x[:5]) and p[:, :2].max() == 0
    with pytest.raises(ARPGError, match=">= 28"):
        am.padded(x[:1], 20)


def test_unknown_split():
    with pytest.raises(ARPGError, match="unknown split"):
        am.load_split("validation")


def test_restricted_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    import io

    blob = pickle.dumps(Evil())
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        am._NumpyOnlyUnpickler(io.BytesIO(blob)).load()
    arr = np.arange(6, dtype=np.int64)
    assert np.array_equal(am._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arr))).load(), arr)
