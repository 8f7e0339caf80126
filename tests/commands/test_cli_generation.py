"""End-to-end CLI tests for `arpg sample` and the editing commands on tiny random weights."""

import json

import numpy as np
import torch
import pytest

from arpg.cli import main


@pytest.fixture
def weights(tiny_weights):
    return tiny_weights


def _common(w):
    return ["--model", str(w / "arpg.safetensors"), "--tokenizer", str(w / "vq.safetensors"), "--steps", "2",
            "--device", "cpu"]


def test_sample_writes_pngs_grid_and_metadata(weights, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", *_common(weights), "--labels", "1,3", "--num", "4", "--out", str(out), "--save-codes"]) == 0
    assert sorted(p.name for p in out.glob("0*.png")) == [f"{i:06d}.png" for i in range(4)]
    assert (out / "grid.png").exists() and np.load(out / "codes.npy").shape == (4, 16)
    meta = json.loads((out / "sample.json").read_text())
    assert meta["labels"] == [1, 3, 1, 3] and meta["sampling"]["steps"] == 2


@pytest.mark.parametrize("task,extra", [
    ("inpaint", ["--mask", "MASK"]),
    ("edit", ["--box", "0,0,16,8"]),
    ("outpaint", ["--canvas", "24x32"]),
    ("expand", []),
])
def test_editing_commands(weights, tmp_path, task, extra):
    extra = [str(weights / "mask.png") if e == "MASK" else e for e in extra]
    out = tmp_path / f"{task}.png"
    rc = main([task, str(weights / "img.png"), "--label", "2", *extra, *_common(weights), "--out", str(out),
               "--save-codes", "--num", "2"])
    assert rc == 0 and out.exists() and out.with_name(f"{task}_1.png").exists()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["task"] == task and meta["known_cells"] > 0


@pytest.mark.parametrize("args,msg", [
    (["inpaint", "IMG", "--label", "2", "--box", "0,0,4"], "4 numbers"),
    (["inpaint", "IMG", "--label", "2"], "exactly one of --mask"),
    (["inpaint", "IMG", "--label", "12", "--box", "0,0,8,8"], "label must be in 0..9"),
    (["outpaint", "IMG", "--label", "1", "--canvas", "8x8"], "smaller than the source"),
    (["inpaint", "missing.png", "--label", "1", "--box", "0,0,8,8"], "file not found: missing.png"),
    (["sample", "--labels", "1,99"], "labels must be in 0..9"),
])
def test_cli_bad_input_one_line(weights, capsys, args, msg):
    args = [str(weights / "img.png") if a == "IMG" else a for a in args]
    assert main([*args, *_common(weights)]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("decode_all", [False, True])
def test_edit_keeps_pixels_outside_the_box_unless_decode_all(weights, tmp_path, decode_all):
    from PIL import Image

    out = tmp_path / "e.png"
    flag = ["--decode-all"] if decode_all else []
    assert main(["edit", str(weights / "img.png"), "--label", "3", "--box", "0,0,16,8", *flag, *_common(weights),
                 "--out", str(out)]) == 0
    src = np.asarray(Image.open(weights / "img.png"))
    res = np.asarray(Image.open(out))
    assert res.shape == src.shape
    outside = np.ones(src.shape[:2], bool)
    outside[:8, :16] = False
    # The tiny random tokenizer is far from lossless, so only pasting gives back the source pixels.
    assert np.array_equal(res[outside], src[outside]) != decode_all
    assert json.loads(out.with_suffix(".json").read_text())["keep_pixels"] == (not decode_all)


def test_sample_into_its_own_folder_replaces_the_previous_images(weights, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", *_common(weights), "--labels", "1", "--num", "5", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")  # a user's file in the folder is left alone
    assert main(["sample", *_common(weights), "--labels", "2", "--num", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png", "grid.png"]
    meta = json.loads((out / "sample.json").read_text())
    assert meta["files"] == ["000000.png", "000001.png"] and meta["labels"] == [2, 2]
    assert (out / "notes.txt").read_text() == "mine"


def test_sample_without_num_makes_one_image_per_label(weights, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", *_common(weights), "--labels", "4,5,6", "--out", str(out)]) == 0
    assert json.loads((out / "sample.json").read_text())["labels"] == [4, 5, 6]


def test_sample_records_the_settings_it_used(weights, tmp_path):
    """Explicit options win; everything else is the model's recommended settings, and the record says so."""
    from arpg import load_model
    from arpg.sampling import recommended_sampling

    out = tmp_path / "s"
    assert main(["sample", *_common(weights), "--labels", "1", "--temperature", "0.7", "--out", str(out)]) == 0
    rec = json.loads((out / "sample.json").read_text())["sampling"]
    want = recommended_sampling(load_model(weights / "arpg.safetensors")).replace(steps=2, temperature=0.7)
    assert rec == want.to_dict()


def test_edit_records_steps_it_was_given(weights, tmp_path):
    out = tmp_path / "e.png"
    assert main(["inpaint", str(weights / "img.png"), "--label", "1", "--box", "0,0,8,8", *_common(weights),
                 "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["sampling"]["steps"] == 2


def test_sample_pack_weights_moves_the_weights_and_gives_the_same_codes(weights, tmp_path, monkeypatch):
    import arpg.sampling.runtime as runtime_mod
    from arpg import speedups

    if speedups.packing_available(torch.float32):
        pytest.skip("this PyTorch build has no oneDNN")
    moved = []
    real = runtime_mod.pack_weights
    monkeypatch.setattr(runtime_mod, "pack_weights", lambda m, move=True: moved.append(move) or real(m, move))
    runs = {}
    for flag in (["--no-pack-weights"], ["--pack-weights"]):
        out = tmp_path / ("packed" if flag == ["--pack-weights"] else "plain")
        assert main(["sample", *_common(weights), "--labels", "1,2", "--out", str(out), "--save-codes", *flag]) == 0
        runs[flag == ["--pack-weights"]] = (np.load(out / "codes.npy"), json.loads((out / "sample.json").read_text()))
    assert moved == [True]  # only the --pack-weights run, and in place: the process holds one weight copy
    assert np.array_equal(runs[True][0], runs[False][0])
    assert runs[True][1]["runtime"]["pack_weights"] is True and runs[False][1]["runtime"]["pack_weights"] is False
