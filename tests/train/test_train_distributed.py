"""torchrun with 2 CPU processes (gloo): DDP and FSDP match one process with the same global batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from arpg.data.codes import write_code_set
from arpg.train import checkpointing as ck
from arpg.train.metrics import read_log
from arpg.train.config import TrainConfig
from arpg.train.trainer import train

REPO = Path(__file__).resolve().parents[2]
# 8 global samples = 4 per rank; class dropout stays at the preset's 0.1 (decided per sample position).
ARGS = dict(preset="ARPG-nano", batch_size=8, steps=6, lr=0.05, min_lr=1e-3, warmup=0.2, save_every=3,
            log_every=1, seed=5, ema=0.9)



@pytest.fixture(scope="module")
def codes(tmp_path_factory):
    root = tmp_path_factory.mktemp("codes")
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 4, 40)
    codes = rng.integers(0, 16, (40, 2, 16))
    write_code_set(root, codes, labels, vocab_size=16, class_names=list("abcd"), shard_size=16)
    return root


@pytest.fixture(scope="module")
def single(codes, tmp_path_factory):
    """The reference: one process, global batch 8."""
    out = tmp_path_factory.mktemp("single")
    torch.set_num_threads(1)
    return train(TrainConfig(codes=str(codes), out=str(out), progress=False, **ARGS)), out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(codes, out, *extra, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "arpg.cli", "train", "--codes", str(codes), "--out", str(out),
           "--no-progress", "--device", "cpu"]
    for k, v in ARGS.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    p = subprocess.run(cmd + list(extra), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return {r["step"]: r["loss"] for r in read_log(out)}


def _assert_same_losses(got, want, rtol=1e-4):
    assert sorted(got) == sorted(want)
    for s in want:
        assert got[s] == pytest.approx(want[s], rel=rtol, abs=1e-6), f"step {s}: {got[s]} vs {want[s]}"


def test_ddp_two_processes_match_one_process_with_double_batch(codes, single, tmp_path):
    ref, ref_out = single
    losses = _torchrun(codes, tmp_path / "ddp")
    _assert_same_losses(losses, ref.losses)
    state = ck.load_checkpoint(ck.latest_checkpoint(tmp_path / "ddp"))
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    ref_state = ck.load_checkpoint(ck.latest_checkpoint(ref_out))
    for k, v in ref_state["model"].items():
        torch.testing.assert_close(state["model"][k], v, rtol=1e-3, atol=1e-5)


def test_fsdp_two_processes_match_and_checkpoints_are_portable(codes, single, tmp_path):
    ref, _ = single
    out = tmp_path / "fsdp"
    losses = _torchrun(codes, out, "--fsdp")
    _assert_same_losses(losses, ref.losses)
    # The FSDP checkpoint holds full (gathered) state: a single process resumes from it.
    (out / "checkpoints" / "step-00000006.pt").unlink()
    resumed = train(TrainConfig(codes=str(codes), out=str(out), progress=False, resume="auto", **ARGS))
    _assert_same_losses(resumed.losses, {s: ref.losses[s] for s in (4, 5, 6)})
