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
