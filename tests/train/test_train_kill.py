"""kill -9 in the middle of a checkpoint write: the earlier checkpoint survives and resuming from it works."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from arpg.data.codes import write_code_set
from arpg.train import checkpointing as ck
from arpg.train.config import TrainConfig
from arpg.train.trainer import train

REPO = Path(__file__).resolve().parents[2]
ARGS = dict(preset="ARPG-nano", batch_size=8, steps=9, lr=0.05, min_lr=1e-3, warmup=0.2, save_every=3, log_every=1,
            seed=2, ema=0.9)



def test_kill_during_save_then_resume(tmp_path):
    rng = np.random.default_rng(5)
    codes = tmp_path / "codes"
    write_code_set(codes, rng.integers(0, 16, (32, 2, 16)), rng.integers(0, 4, 32), vocab_size=16,
                   class_names=list("abcd"))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "arpg.cli", "train", "--codes", str(codes), "--out", str(out), "--no-progress",
           "--device", "cpu"]
    for k, v in ARGS.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    # Test-only hook: every save sleeps between writing its temp file and renaming it.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"), **{ck.SLOW_SAVE_ENV: "1.5"})
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckdir = out / "checkpoints"
    deadline = time.time() + 120
    try:
        # Wait until step 3 is complete and the step-6 save is half-way (its temp file exists).
        while time.time() < deadline:
            if (ckdir / "step-00000003.pt").exists() and list(ckdir.glob(".step-00000006.pt.*.tmp")):
                break
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            time.sleep(0.05)
        else:
            pytest.fail("the training subprocess never reached the second save")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert [s for s, _ in ck.list_checkpoints(out)] == [3]  # the torn write is not a checkpoint
    assert list(ckdir.glob(".step-*.tmp"))  # ... only a temp file

    resumed = train(TrainConfig(codes=str(codes), out=str(out), progress=False, resume="auto", **ARGS))
    assert not list(ckdir.glob(".step-*.tmp"))  # stale temp files are cleaned up
    assert [s for s, _ in ck.list_checkpoints(out)] == [3, 6, 9]
    reference = train(TrainConfig(codes=str(codes), out=str(tmp_path / "ref"), progress=False, **ARGS))
    assert sorted(resumed.losses) == [4, 5, 6, 7, 8, 9]
    for s in resumed.losses:
        assert resumed.losses[s] == reference.losses[s]
