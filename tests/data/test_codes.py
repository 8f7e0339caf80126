"""Code folders on disk and the memory-mapped CodeDataset."""

import json

import numpy as np
import pytest
import torch

from arpg.data.codes import CodeDataset, CodeIndex, hash64, hash_uniform, write_code_set
from arpg.errors import ARPGError


@pytest.fixture
def code_set(tmp_path):
    rng = np.random.default_rng(3)
    N, K, n = 53, 10, 64
    codes = rng.integers(0, 1000, (N, K, n))
    labels = rng.integers(0, 7, N)
    names = [f"class{i}" for i in range(7)]
    write_code_set(tmp_path / "c", codes, labels, vocab_size=1000, class_names=names, shard_size=20,
                   image_size=128)
    return tmp_path / "c", codes, labels


def test_layout_and_index(code_set):
    root, codes, labels = code_set
    idx = json.loads((root / "index.json").read_text())
    assert idx["num_samples"] == 53 and idx["grid_size"] == 8 and idx["vocab_size"] == 1000
    assert idx["num_crops"] == 10 and idx["crop_mode"] == "ten" and idx["image_size"] == 128
    assert [s["count"] for s in idx["shards"]] == [20, 20, 13]
    first = np.load(root / idx["shards"][0]["codes"], mmap_mode="r")
    assert first.dtype == np.uint16 and first.shape == (20, 10, 64)
    assert CodeIndex.read(root).num_classes == 7


def test_get_returns_exact_codes_for_any_crop_across_shards(code_set):
    root, codes, labels = code_set
    ds = CodeDataset(root)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 53, 40)
    crops = rng.integers(0, 10, 40)
    got, y = ds.get(idx, crops)
    assert got.dtype == torch.long and got.shape == (40, 64)
    assert np.array_equal(got.numpy(), codes[idx, crops]) and np.array_equal(y.numpy(), labels[idx])


def test_crop_choice_is_seeded_per_epoch_and_uniform(code_set):
    root, codes, _ = code_set
    a, b, c = CodeDataset(root, seed=1), CodeDataset(root, seed=1), CodeDataset(root, seed=2)
    idx = np.arange(53)
    assert np.array_equal(a.crops_for(0, idx), b.crops_for(0, idx))
    assert not np.array_equal(a.crops_for(0, idx), a.crops_for(1, idx))
    assert not np.array_equal(a.crops_for(0, idx), c.crops_for(0, idx))
    many = a.crops_for(np.arange(3000)[:, None], idx[None, :]).ravel()
    counts = np.bincount(many, minlength=10)
    assert counts.min() > 0.9 * len(many) / 10 and counts.max() < 1.1 * len(many) / 10
    # __getitem__ follows the current epoch
    a.set_epoch(5)
    x, y = a[7]
    assert torch.equal(x, torch.from_numpy(codes[7, a.crops_for(5, np.array([7]))[0]].astype(np.int64)))
    # Works with a standard DataLoader.
    batch = next(iter(torch.utils.data.DataLoader(a, batch_size=8)))
    assert batch[0].shape == (8, 64) and batch[1].shape == (8,)


def test_single_crop_and_2d_input(tmp_path):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 70000, (9, 16))  # > 65536 codes -> int32 on disk
    write_code_set(tmp_path / "s", codes, rng.integers(0, 2, 9), vocab_size=70000, class_names=["a", "b"])
    ds = CodeDataset(tmp_path / "s")
    assert ds.index.num_crops == 1 and ds.index.crop_mode == "single"
    got, _ = ds.get(np.arange(9))
    assert np.array_equal(got.numpy(), codes)


def test_hash_is_deterministic_and_uniform():
    k = np.arange(100_000)
    assert np.array_equal(hash64(3, k), hash64(3, k)) and not np.array_equal(hash64(3, k), hash64(4, k))
    u = hash_uniform(7, k)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert len(np.unique(hash64(0, k))) == len(k)


def test_errors(tmp_path, code_set):
    with pytest.raises(ARPGError, match="not a code folder"):
        CodeDataset(tmp_path / "nothing")
    with pytest.raises(ARPGError, match="codes must lie in 0..9"):
        write_code_set(tmp_path / "bad", np.full((2, 4), 10), [0, 0], vocab_size=10, class_names=["a"])
    with pytest.raises(ARPGError, match="square grid"):
        write_code_set(tmp_path / "bad", np.zeros((2, 5), int), [0, 0], vocab_size=10, class_names=["a"])
    root, _, _ = code_set
    idx = json.loads((root / "index.json").read_text())
    idx["shards"][1]["count"] = 19
    (root / "index.json").write_text(json.dumps(idx))
    with pytest.raises(ARPGError, match="codes-00001.npy"):
        CodeDataset(root)
