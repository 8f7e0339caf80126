"""Text-to-image end to end on tiny data the test makes: a caption folder (and WebDataset shards) -> codes and
prompt features -> arpg train -> arpg t2i and arpg sample --prompts (GenEval's layout)."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from arpg import ARPGError, load_model
from arpg.cli import main
from arpg.data.captions import read_caption_folder, read_webdataset
from arpg.data.codes import CodeDataset
from arpg.text import load_text_encoder

pytest.importorskip("transformers")

CAPTIONS = ["a red cat", "a blue dog", "two zebras", "a green horse to the left of a red cat", "a dog above a cat",
            "two sheep"]


def _png(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def caption_folder(tmp_path):
    rng = np.random.default_rng(int(np.random.SeedSequence().entropy % 2**32))
    root = tmp_path / "captioned"
    (root / "img").mkdir(parents=True)
    lines = []
    for i in range(12):
        (root / "img" / f"{i}.png").write_bytes(_png(rng))
        lines.append(json.dumps({"file_name": f"img/{i}.png", "text": CAPTIONS[i % len(CAPTIONS)]}))
    lines.append(json.dumps({"file_name": "img/0.png", "text": "  "}))  # an empty caption: skipped, counted
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_folder_to_codes_to_training_to_t2i(caption_folder, tiny_weights, tiny_t5, tmp_path, capsys):
    vq = str(tiny_weights / "vq.safetensors")
    codes = tmp_path / "codes"
    assert main(["extract-codes", "--data", str(caption_folder), "--tokenizer", vq, "--out", str(codes),
                 "--captions", "--text-encoder", str(tiny_t5), "--text-len", "6", "--single-crop",
                 "--image-size", "16", "--workers", "0", "--no-progress"]) == 0
    data = CodeDataset(codes)
    assert len(data) == 12 and data.index.text == {"dim": 24, "length": 6, "encoder": str(tiny_t5)}
    assert data.index.skipped == 1
    feats, mask = data.get_text([0, 3])
    want, want_mask = load_text_encoder(tiny_t5, 6).encode([CAPTIONS[0], CAPTIONS[3]])
    assert torch.equal(mask, want_mask)
    torch.testing.assert_close(feats, want.half().float())  # stored in half precision
    run = tmp_path / "run"
    assert main(["train", "--codes", str(codes), "--out", str(run), "--preset", "ARPG-tiny-T2I", "--steps", "3",
                 "--batch-size", "4", "--device", "cpu", "--no-progress", "--sample-every", "3", "--sample-steps", "2",
                 "--sample-count", "2", "--tokenizer", vq]) == 0
    model = load_model(run / "final.safetensors")
    assert model.config.texted and model.config.text_dim == 24 and model.text_encoder == str(tiny_t5)
    assert (run / "samples" / "step-00000003.png").exists()  # the preview drew from the set's captions
    out = tmp_path / "t2i"
    assert main(["t2i", "a red cat", "--model", str(run / "final.safetensors"), "--tokenizer", vq, "--num", "3",
                 "--out", str(out), "--steps", "2", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.glob("0*.png")) == ["0000.png", "0001.png", "0002.png"]
    assert json.loads((out / "t2i.json").read_text())["prompt"] == "a red cat"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"tag": "single_object", "prompt": "a cat"}) + "\n" +
                       json.dumps({"tag": "colors", "prompt": "a blue dog"}) + "\n")
    gen = tmp_path / "geneval"
    assert main(["sample", "--prompts", str(prompts), "--model", str(run / "final.safetensors"), "--tokenizer", vq,
                 "--num", "2", "--out", str(gen), "--steps", "2", "--device", "cpu"]) == 0
    assert json.loads((gen / "00001" / "metadata.jsonl").read_text()) == {"tag": "colors", "prompt": "a blue dog"}
    assert sorted(p.name for p in (gen / "00000" / "samples").iterdir()) == ["0000.png", "0001.png"]
    # a text model refuses labels, a class model refuses prompts, in one line each
    capsys.readouterr()
    assert main(["sample", "--model", str(run / "final.safetensors"), "--tokenizer", vq, "--device", "cpu",
                 "--out", str(tmp_path / "s")]) != 0
    assert "text-to-image model: use arpg t2i" in capsys.readouterr().err
    assert main(["t2i", "a cat", "--model", str(tiny_weights / "arpg.safetensors"), "--tokenizer", vq,
                 "--device", "cpu"]) != 0
    assert "class-conditional model: use arpg sample --labels" in capsys.readouterr().err


def test_webdataset_shards_with_corrupt_members(tmp_path, tiny_weights, tiny_t5):
    rng = np.random.default_rng(0)
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for i in range(5):
            add(f"{i:04d}.png", _png(rng))
            add(f"{i:04d}.txt", CAPTIONS[i].encode())
        add("0005.png", _png(rng))  # no caption
        add("0006.json", json.dumps({"caption": "a cat"}).encode())  # no image
        add("0007.png", _png(rng))
        add("0007.txt", b"\xff\xfe not utf-8")  # unreadable caption
        add("0008.jpg", b"not an image at all")  # readable caption, unreadable image: skipped by extraction
        add("0008.json", json.dumps({"text": "a dog"}).encode())
    cs = read_webdataset(shard)
    assert cs.captions == CAPTIONS[:5] + ["a dog"] and len(cs.skipped) == 3
    codes = tmp_path / "codes"
    assert main(["extract-codes", "--data", str(shard), "--tokenizer", str(tiny_weights / "vq.safetensors"),
                 "--out", str(codes), "--captions", "--text-encoder", str(tiny_t5), "--text-len", "6",
                 "--single-crop", "--image-size", "16", "--workers", "0", "--no-progress"]) == 0
    data = CodeDataset(codes)
    assert len(data) == 5 and data.index.skipped == 4  # 3 while reading the shard, 1 unreadable image
    assert "0008" in (codes / "skipped.txt").read_text()


def test_caption_folder_refusals(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    with pytest.raises(ARPGError, match="no metadata.jsonl"):
        read_caption_folder(root)
    (root / "metadata.jsonl").write_text('{"file_name": "x.png", "text": "a cat"}\n')
    with pytest.raises(ARPGError, match="metadata.jsonl:1 names x.png, which is not in"):
        read_caption_folder(root)
    (root / "metadata.jsonl").write_text('{"file_name": "x.png"\n')
    with pytest.raises(ARPGError, match="metadata.jsonl:1 is not JSON"):
        read_caption_folder(root)


def test_caption_extraction_by_two_ranks_equals_one(caption_folder, tiny_weights, tiny_t5, tmp_path):
    """Ranks take disjoint chunks (run here one after the other, as two processes of torchrun would): the codes,
    prompt features and index equal a one-process extraction's."""
    from arpg.data.extract import ExtractConfig, extract_codes
    from arpg.util.distributed import DistInfo

    def cfg(out):
        return ExtractConfig(data=str(caption_folder), out=str(out), tokenizer=str(tiny_weights / "vq.safetensors"),
                             image_size=16, crops="single", shard_size=5, workers=0, device="cpu", progress=False,
                             captions=True, text_encoder=str(tiny_t5), text_len=6)

    two = tmp_path / "two"
    assert extract_codes(cfg(two), dist_info=DistInfo(rank=1, world_size=2)).index is None
    s0 = extract_codes(cfg(two), dist_info=DistInfo(rank=0, world_size=2))
    extract_codes(cfg(tmp_path / "one"))
    a, b = CodeDataset(two), CodeDataset(tmp_path / "one")
    assert s0.num_samples == 12 and a.index.shards == b.index.shards and a.index.text == b.index.text
    idx = np.arange(12)
    assert torch.equal(a.get(idx)[0], b.get(idx)[0])
    fa, ma = a.get_text(idx)
    fb, mb = b.get_text(idx)
    assert torch.equal(fa, fb) and torch.equal(ma, mb)


@pytest.mark.slow
def test_caption_extraction_under_torchrun_with_two_gloo_ranks(caption_folder, tiny_weights, tiny_t5, tmp_path):
    from conftest import run_torchrun

    args = ["extract-codes", "--data", str(caption_folder), "--tokenizer", str(tiny_weights / "vq.safetensors"),
            "--captions", "--text-encoder", str(tiny_t5), "--text-len", "6", "--image-size", "16", "--single-crop",
            "--shard-size", "5", "--workers", "0", "--device", "cpu", "--no-progress"]
    p = run_torchrun([*args, "--out", str(tmp_path / "two")], timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    a, b = CodeDataset(tmp_path / "two"), CodeDataset(tmp_path / "one")
    assert a.index.shards == b.index.shards
    idx = np.arange(len(b))
    assert torch.equal(a.get(idx)[0], b.get(idx)[0]) and torch.equal(a.get_text(idx)[0], b.get_text(idx)[0])
