"""Reading and writing sample sets: the evaluator's .npz layout and image folders."""

import zipfile

import numpy as np
import pytest
from PIL import Image

from arpg.errors import ARPGError
from arpg.eval.npz import FolderImages, NpzImages, folder_to_npz, load_reference, open_images, write_npz


def _images(n, h=12, w=10):
    return np.random.default_rng().integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_written_npz_has_the_evaluator_layout(tmp_path):
    imgs = _images(7)
    path = write_npz(tmp_path / "samples.npz", imgs)
    with np.load(path) as z:
        assert z.files == ["arr_0"]
        arr = z["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (7, 12, 10, 3) and arr.flags.c_contiguous
    np.testing.assert_array_equal(arr, imgs)
    with zipfile.ZipFile(path) as zf:  # uncompressed like np.savez, so readers may memory-map it
        assert [i.compress_type for i in zf.infolist()] == [zipfile.ZIP_STORED]


def test_streamed_batches_and_extra_arrays(tmp_path):
    imgs = _images(10)
    labels = np.arange(10) % 3
    path = write_npz(tmp_path / "s.npz", (imgs[i:i + 3] for i in range(0, 10, 3)), num=10, extra={"arr_1": labels})
    with np.load(path) as z:
        np.testing.assert_array_equal(z["arr_0"], imgs)
        np.testing.assert_array_equal(z["arr_1"], labels)


def test_wrong_count_leaves_no_file(tmp_path):
    with pytest.raises(ARPGError, match="promised 5"):
        write_npz(tmp_path / "s.npz", iter([_images(3)]), num=5)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ARPGError, match="uint8"):
        write_npz(tmp_path / "s.npz", _images(3).astype(np.int16))


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_reader_streams_numpy_written_files(tmp_path, compressed):
    imgs = _images(23)
    (np.savez_compressed if compressed else np.savez)(tmp_path / "x.npz", imgs, mu=np.zeros(3))
    src = open_images(tmp_path / "x.npz")
    assert isinstance(src, NpzImages) and len(src) == 23 and src.shape == (23, 12, 10, 3)
    batches = list(src.batches(5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate(batches), imgs)


def test_npz_reader_rejects_non_images(tmp_path):
    np.savez(tmp_path / "f.npz", np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ARPGError, match="dtype float32"):
        open_images(tmp_path / "f.npz")
    np.savez(tmp_path / "k.npz", other=np.zeros(3))
    with pytest.raises(ARPGError, match="no array 'arr_0'"):
        open_images(tmp_path / "k.npz")


def test_folder_reader_and_packing(tmp_path):
    imgs = _images(6)
    for i, im in enumerate(imgs):
        sub = tmp_path / "pngs" / f"{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(sub / f"{i:06d}.png")
    src = open_images(tmp_path / "pngs")
    assert isinstance(src, FolderImages) and len(src) == 6
    order = [0, 2, 4, 1, 3, 5]  # sorted by path: folder 0 first
    np.testing.assert_array_equal(np.concatenate(list(src.batches(4))), imgs[order])
    out = folder_to_npz(tmp_path / "pngs", tmp_path / "packed.npz", batch_size=4)
    with np.load(out) as z:
        np.testing.assert_array_equal(z["arr_0"], imgs[order])
    Image.fromarray(_images(1, 5, 5)[0]).save(tmp_path / "pngs" / "0" / "zzz.png")
    with pytest.raises(ARPGError, match="one size"):
        list(FolderImages(tmp_path / "pngs").batches(10))


def test_reference_with_stored_statistics(tmp_path):
    rng = np.random.default_rng()
    mu, sigma = rng.standard_normal(8), np.eye(8)
    np.savez(tmp_path / "ref.npz", _images(4), mu=mu, sigma=sigma, mu_s=mu, sigma_s=sigma)
    ref = load_reference(tmp_path / "ref.npz")
    assert ref.has_stats and ref.images is not None and len(ref.images) == 4
    np.testing.assert_array_equal(ref.mu, mu)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    only = load_reference(tmp_path / "stats.npz")
    assert only.has_stats and only.images is None
    np.savez(tmp_path / "neither.npz", foo=mu)
    with pytest.raises(ARPGError, match="neither images"):
        load_reference(tmp_path / "neither.npz")
    np.savez(tmp_path / "half.npz", mu=mu)
    with pytest.raises(ARPGError, match="only one of"):
        load_reference(tmp_path / "half.npz")
