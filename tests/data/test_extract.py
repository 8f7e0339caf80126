"""arpg extract-codes: folders and the bundled set, crops, unreadable images, resume, ranks."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from arpg.data.codes import CodeDataset
from arpg.data.crops import make_crops, to_model_input
from arpg.data.extract import ExtractConfig, extract_codes
from arpg.errors import ARPGError
from conftest import run_torchrun

REPO = Path(__file__).resolve().parents[2]


class PoolTokenizer:
    """Stand-in tokenizer: 4x4 average pooling quantised to 64 levels; counts the images it encodes."""

    downsample = 4
    codebook_size = 64

    def __init__(self, channels=3):
        self.config = SimpleNamespace(in_channels=channels, to_dict=lambda: {"stand-in": channels})
        self.encoded = 0

    def encode(self, x):
        assert x.min() >= -1 and x.max() <= 1
        self.encoded += len(x)
        p = F.avg_pool2d(x, 4).mean(1)
        return ((p + 1) / 2 * 63).round().clamp(0, 63).long().flatten(1)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c, name in enumerate(["cat", "dog", "fox"]):
        (root / name).mkdir(parents=True)
        for i in range(3):
            h, w = rng.integers(18, 40, 2)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "fox" / "empty.png").write_bytes(b"")
    return root


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), tokenizer="stand-in", image_size=16, crops="ten", batch_size=4,
                shard_size=4, workers=0, device="cpu", progress=False)
    base.update(kw)
    return ExtractConfig(**base)


def test_folder_extraction_codes_labels_and_skipped(folder, tmp_path):
    tok = PoolTokenizer()
    out = tmp_path / "codes"
    s = extract_codes(_cfg(folder, out), tokenizer=tok)
    assert s.num_samples == 9 and s.skipped == 2 and s.shards == 3  # 11 files in chunks of 4
    skipped = (out / "skipped.txt").read_text()
    assert "broken.jpg" in skipped and "empty.png" in skipped
    ds = CodeDataset(out)
    idx = ds.index
    assert (idx.grid_size, idx.vocab_size, idx.num_crops, idx.crop_mode) == (4, 64, 10, "ten")
    assert idx.class_names == ["cat", "dog", "fox"] and idx.skipped == 2
    assert sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Every stored crop is the tokenizer's code of that crop of the source image.
    good = sorted(p for p in folder.rglob("*.png") if p.stat().st_size)
    good = sorted(good, key=lambda p: (p.parent.name, p.name))
    for i, path in enumerate(good):
        want = tok.encode(to_model_input(make_crops(Image.open(path).convert("RGB"), 16, "ten")))
        for k in (0, 4, 9):
            codes, label = ds.get([i], [k])
            assert torch.equal(codes[0], want[k]) and int(label[0]) == ["cat", "dog", "fox"].index(path.parent.name)


def test_resume_skips_finished_chunks_and_refuses_other_settings(folder, tmp_path):
    out = tmp_path / "codes"
    extract_codes(_cfg(folder, out), tokenizer=PoolTokenizer())
    before = {p.name: p.read_bytes() for p in out.glob("codes-*.npy")}
    # Lose the last chunk (as if killed while writing it) and the index; rerun the same command.
    (out / "chunk-00002.json").unlink()
    (out / "index.json").unlink()
    tok = PoolTokenizer()
    s = extract_codes(_cfg(folder, out), tokenizer=tok)
    assert s.chunks_done_before == 2 and tok.encoded == 2 * 10  # chunk 2: fox/1, fox/2 (+ empty.png, unreadable)
    assert {p.name: p.read_bytes() for p in out.glob("codes-*.npy")} == before
    assert CodeDataset(out).index.num_samples == 9
    with pytest.raises(ARPGError, match="crop_mode 'ten' \\(before\\) vs 'single' \\(now\\)"):
        extract_codes(_cfg(folder, out, crops="single"), tokenizer=PoolTokenizer())


def test_bundled_set_single_and_flip(tmp_path):
    from arpg.data import animal_mnist as am

    tok = PoolTokenizer(channels=1)
    s = extract_codes(_cfg("animal-mnist", tmp_path / "a", split="heldout", image_size=None, crops="flip",
                           shard_size=400, batch_size=200), tokenizer=tok)
    ds = CodeDataset(tmp_path / "a")
    _, labels = am.load_split("heldout")
    assert s.num_samples == 1000 and s.skipped == 0 and ds.index.grid_size == 8 and ds.index.num_crops == 2
    assert np.array_equal(ds.labels, labels) and ds.index.source == "animal-mnist:heldout"
    # The mirror crop's codes are the mirror of the centre crop's (pooling commutes with flipping).
    a, _ = ds.get(np.arange(50), np.zeros(50, int))
    b, _ = ds.get(np.arange(50), np.ones(50, int))
    assert torch.equal(a.view(50, 8, 8).flip(-1), b.view(50, 8, 8))


def test_bad_image_size_is_one_line_error(folder, tmp_path):
    with pytest.raises(ARPGError, match="not a multiple of the tokenizer's downsampling factor 4"):
        extract_codes(_cfg(folder, tmp_path / "x", image_size=18), tokenizer=PoolTokenizer())


def test_ranks_take_disjoint_chunks_and_rank0_writes_the_index(folder, tmp_path):
    from arpg.data.extract import chunks_for_rank
    from arpg.util.distributed import DistInfo

    for n, w in ((1, 1), (7, 2), (5, 3), (2, 4)):
        parts = [chunks_for_rank(n, r, w) for r in range(w)]
        assert sorted(sum(parts, [])) == list(range(n))
    # Two ranks run one after the other in this process (no process group): rank 1 writes only its
    # shards, rank 0 writes its own and then the index, which equals a one-process extraction.
    out = tmp_path / "two"
    toks = [PoolTokenizer(), PoolTokenizer()]
    s1 = extract_codes(_cfg(folder, out, shard_size=3), tokenizer=toks[1], dist_info=DistInfo(rank=1, world_size=2))
    assert s1.index is None and not (out / "index.json").exists()
    assert sorted(p.name for p in out.glob("chunk-*.json")) == ["chunk-00001.json", "chunk-00003.json"]
    s0 = extract_codes(_cfg(folder, out, shard_size=3), tokenizer=toks[0], dist_info=DistInfo(rank=0, world_size=2))
    assert toks[0].encoded + toks[1].encoded == 9 * 10 and min(t.encoded for t in toks) > 0
    one = tmp_path / "one"
    extract_codes(_cfg(folder, one, shard_size=3), tokenizer=PoolTokenizer())
    assert s0.num_samples == 9 and s0.index.shards == CodeDataset(one).index.shards
    for k in range(10):
        a, la = CodeDataset(out).get(np.arange(9), np.full(9, k))
        b, lb = CodeDataset(one).get(np.arange(9), np.full(9, k))
        assert torch.equal(a, b) and torch.equal(la, lb)


@pytest.mark.slow
def test_two_ranks_split_the_work_and_match_one_process(folder, tmp_path):
    from arpg.vq import VQTokenizer, save_tokenizer

    torch.manual_seed(0)
    tok_path = tmp_path / "vq.safetensors"
    save_tokenizer(VQTokenizer.from_preset("VQ-tiny"), tok_path)
    args = ["extract-codes", "--data", str(folder), "--tokenizer", str(tok_path), "--image-size", "16",
            "--shard-size", "3", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-progress"]
    p = run_torchrun([*args, "--out", str(tmp_path / "two")])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "9 images x 10 crops" in p.stdout and "skipped 2 unreadable" in p.stdout
    from arpg.cli import main

    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two, one = CodeDataset(tmp_path / "two"), CodeDataset(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "index.json").read_text())["shards"] == \
        json.loads((tmp_path / "one" / "index.json").read_text())["shards"]
    for k in range(10):
        a, la = two.get(np.arange(9), np.full(9, k))
        b, lb = one.get(np.arange(9), np.full(9, k))
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_cli_reports_and_errors_in_one_line(folder, tmp_path, capsys):
    from arpg.cli import main
    from arpg.vq import VQTokenizer, save_tokenizer

    base = ["extract-codes", "--image-size", "16", "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main([*base, "--data", str(folder), "--tokenizer", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.pt" in err[0]
    assert main([*base, "--data", str(tmp_path / "missing"), "--tokenizer", "x", "--out", str(tmp_path / "o")]) == 2
    torch.manual_seed(0)
    save_tokenizer(VQTokenizer.from_preset("VQ-tiny"), tmp_path / "vq.safetensors")
    assert main([*base, "--data", str(folder), "--tokenizer", str(tmp_path / "vq.safetensors"), "--single-crop",
                 "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "9 images x 1 crops" in out and "skipped 2 unreadable image(s)" in out


def test_default_image_size_never_upsamples_small_images(folder, tmp_path, capsys):
    """Without --image-size, 18-40 px images are cropped at their own short side (rounded down to the token
    grid), not blown up to 256, and the command says what it chose."""
    from arpg.data.extract import PAPER_IMAGE_SIZE, default_image_size

    s = extract_codes(_cfg(folder, tmp_path / "c", image_size=None), tokenizer=PoolTokenizer())
    chosen = s.index.image_size
    assert chosen < PAPER_IMAGE_SIZE and chosen % 4 == 0 and 16 <= chosen <= 40
    assert f"cropping to {chosen} px" in capsys.readouterr().out
    big = tmp_path / "big" / "a"
    big.mkdir(parents=True)
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(big / "x.png")
    assert default_image_size([str(big / "x.png")]) == PAPER_IMAGE_SIZE


def test_default_workers_never_exceed_the_cpus(monkeypatch):
    from arpg.data import extract

    monkeypatch.setattr(extract.os, "cpu_count", lambda: 2)
    assert extract.default_workers() == 2
    monkeypatch.setattr(extract.os, "cpu_count", lambda: 64)
    assert extract.default_workers() == 4
