import json
import socket
import subprocess
import sys

import numpy as np
import pytest



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def weights(tiny_weights):
    return tiny_weights


def _run(weights, out, nproc):
    args = ["sample-fid", "--model", str(weights / "arpg.safetensors"), "--tokenizer", str(weights / "vq.safetensors"),
            "--recipe", "demo", "--num-samples", "7", "--batch-size", "2", "--steps", "3", "--out", str(out),
            "--device", "cpu"]
    if nproc == 1:
        cmd = [sys.executable, "-m", "arpg.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={_free_port()}", "-m", "arpg.cli", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]


def test_two_processes_write_the_same_images_as_one(weights, tmp_path):
    _run(weights, tmp_path / "one", 1)
    _run(weights, tmp_path / "two", 2)
    a = np.load(tmp_path / "one" / "samples.npz")
    b = np.load(tmp_path / "two" / "samples.npz")
    assert list(a.keys()) == ["arr_0"]
    assert a["arr_0"].dtype == np.uint8 and a["arr_0"].shape == (7, 16, 16, 3)
    assert np.array_equal(a["arr_0"], b["arr_0"])
    meta = json.loads((tmp_path / "one" / "recipe.json").read_text())
    assert meta["recipe"]["steps"] == 3 and meta["recipe"]["name"] == "demo+custom"
    assert meta["num_samples"] == 7


def test_resume_skips_finished_images(weights, tmp_path):
    _run(weights, tmp_path / "r", 1)
    first = (tmp_path / "r" / "samples" / "000000.png").stat().st_mtime_ns
    (tmp_path / "r" / "samples" / "000005.png").unlink()
    _run(weights, tmp_path / "r", 1)
    assert (tmp_path / "r" / "samples" / "000000.png").stat().st_mtime_ns == first
    assert (tmp_path / "r" / "samples" / "000005.png").exists()
    meta = json.loads((tmp_path / "r" / "recipe.json").read_text())
    assert meta["sampled_chunks_this_rank"] == 1


def _sample_fid(weights, out, *extra):
    from arpg.cli import main

    return main(["sample-fid", "--model", str(weights / "arpg.safetensors"), "--tokenizer",
                 str(weights / "vq.safetensors"), "--recipe", "demo", "--num-samples", "3", "--batch-size", "2",
                 "--steps", "3", "--out", str(out), "--device", "cpu", *extra])


def test_resume_with_other_settings_is_refused_and_overwrite_starts_over(weights, tmp_path, capsys):
    out = tmp_path / "f"
    assert _sample_fid(weights, out, "--temperature", "0.9") == 0
    before = json.loads((out / "recipe.json").read_text())
    assert before["complete"] and before["recipe"]["temperature"] == 0.9 and len(before["model_sha256"]) == 64
    capsys.readouterr()
    assert _sample_fid(weights, out, "--temperature", "0.5") == 2
    err = capsys.readouterr().err.strip()
    assert "temperature 0.9 (folder) vs 0.5 (now)" in err and "--overwrite" in err and "\n" not in err
    # Nothing was sampled and the record still describes the images beside it.
    assert json.loads((out / "recipe.json").read_text()) == before
    assert _sample_fid(weights, out, "--temperature", "0.5", "--overwrite") == 0
    assert json.loads((out / "recipe.json").read_text())["recipe"]["temperature"] == 0.5


def test_resume_with_other_weights_is_refused(weights, tmp_path, capsys):
    import torch

    from arpg import load_model, save_model
    from arpg.cli import main

    out = tmp_path / "f"
    assert _sample_fid(weights, out) == 0
    other = tmp_path / "other.safetensors"
    model = load_model(weights / "arpg.safetensors")
    with torch.no_grad():
        model.head.weight.add_(torch.randn_like(model.head.weight))  # same architecture, other weights
    save_model(model, other)

    capsys.readouterr()
    rc = main(["sample-fid", "--model", str(other), "--tokenizer", str(weights / "vq.safetensors"), "--recipe", "demo",
               "--num-samples", "3", "--batch-size", "2", "--steps", "3", "--out", str(out), "--device", "cpu"])
    assert rc == 2 and "model_sha256" in capsys.readouterr().err


def test_images_without_a_record_are_refused(weights, tmp_path, capsys):
    out = tmp_path / "f"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "000000.png").write_bytes(b"x")
    assert _sample_fid(weights, out) == 2
    assert "no recipe.json" in capsys.readouterr().err


def test_any_model_gets_a_recipe_from_itself(tiny_weights):
    """A model that matches no pinned recipe samples with its own class count and recommended settings."""
    from arpg import load_model
    from arpg.commands.sample_fid import recipe_for_model
    from arpg.sampling import recommended_sampling
    from arpg.vq import load_tokenizer

    model = load_model(tiny_weights / "arpg.safetensors")
    model.config.num_classes = 7  # a class count no pinned recipe has
    tok = load_tokenizer(tiny_weights / "vq.safetensors")
    r = recipe_for_model(model, tok, None)
    assert r.num_classes == 7 and r.sampling == recommended_sampling(model)
    assert r.image_size == model.config.grid_size * tok.downsample
