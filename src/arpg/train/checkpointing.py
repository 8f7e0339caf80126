"""Training checkpoints: atomic writes, keep-last-K, finding the latest, RNG capture, resume checks.

A checkpoint is one ``.pt`` file ``RUN/checkpoints/step-XXXXXXXX.pt`` holding plain tensors and
Python literals only (read back with ``torch.load(weights_only=True)``)::

    format, version, step, world_size
    model        full state dict (gathered on rank 0 under FSDP: portable across world sizes and
                 between DDP and FSDP; see docs/training.md)
    ema          full state dict of the EMA weights, or None
    optimizer    full optimizer state dict keyed by parameter names
    scheduler    the lr schedule's parameters (the schedule is a pure function of the step)
    rng          one dict per rank: python / numpy / torch (and CUDA) generator states
    data         position in the sample stream (samples consumed) and epoch
    config       the model's ARPGConfig as a dict
    args         the training settings (JSON-compatible)

It is also a model checkpoint for the rest of the package: ``arpg.model.weights.load_model`` reads it
(the EMA weights when present).

Writes go to a temp file in the same folder, are fsynced, then renamed over the final name, so a crash
or ``kill -9`` mid-save leaves every earlier checkpoint intact; old ones are pruned only after the new
one is in place.
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ..util.files import atomic_write, load_torch_file
from ..errors import CheckpointError

FORMAT = "arpg-train"
VERSION = 1
CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})\.pt$")
#: train-vq's names before both trainers shared this module (``step_XXXXXXX.pt``): still found.
_LEGACY_NAME = re.compile(r"^step_(\d{7})\.pt$")

#: Test-only hook: seconds to sleep after the temp file is written and before it is renamed, so tests
#: can kill a process in the middle of a save. Never set it in real runs.
SLOW_SAVE_ENV = "ARPG_TEST_SLOW_SAVE_S"


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CKPT_DIR


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Completed checkpoints ``[(step, path), ...]`` oldest first (temp files are never listed)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    out = [(int(m.group(1)), d / name) for name in os.listdir(d)
           if (m := _NAME.match(name) or _LEGACY_NAME.match(name))]
    return sorted(out)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_stale_temp_files(run_dir: str | os.PathLike) -> int:
    """Delete temp files left by an interrupted save; returns how many were removed."""
    d = checkpoint_dir(run_dir)
    n = 0
    if d.is_dir():
        for p in d.glob(".step-*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def save_checkpoint(state: Mapping[str, Any], run_dir: str | os.PathLike, step: int, keep: int = 3,
                    kind: str = "arpg") -> Path:
    """Write ``state`` atomically as the step's checkpoint (tagged with the format, version and ``kind`` of
    run: ``arpg`` or ``vq``), then delete all but the newest ``keep`` (0 = keep all)."""
    path = checkpoint_path(run_dir, step)
    delay = float(os.environ.get(SLOW_SAVE_ENV, "0") or 0)
    tagged = {**state, "format": FORMAT, "version": VERSION, "kind": kind}

    def write(tmp: str) -> None:
        torch.save(tagged, tmp)
        if delay > 0:
            time.sleep(delay)

    atomic_write(path, write)
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


#: Formats of files written before both trainers shared this module (kind -> format tag).
_LEGACY_FORMATS = {"vq": "arpg-train-vq"}


def load_checkpoint(path: str | os.PathLike, kind: str = "arpg") -> dict[str, Any]:
    """Read a training checkpoint of this ``kind`` (no code is unpickled); one-line :class:`CheckpointError`
    otherwise."""
    path = Path(path)
    obj = load_torch_file(path, "training checkpoint", mmap=True)
    legacy = _LEGACY_FORMATS.get(kind)
    ok = isinstance(obj, dict) and ((obj.get("format") == FORMAT and obj.get("kind", "arpg") == kind)
                                    or (legacy is not None and obj.get("format") == legacy))
    if not ok:
        what = "an ARPG training checkpoint (use it with --init or arpg convert)" if kind == "arpg" else \
            "an arpg train-vq checkpoint (cannot resume from it)"
        raise CheckpointError(f"{path} is not {what}")
    return obj


# ------------------------------------------------------------------------------------------------
# RNG states
# ------------------------------------------------------------------------------------------------
def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """This process's python / numpy / torch (and current CUDA device) generator states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Mapping[str, Any], device: torch.device | None = None) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ------------------------------------------------------------------------------------------------
# Resume compatibility
# ------------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return repr(v) if isinstance(v, str) else str(v)


def describe_differences(saved: Mapping[str, Any], now: Mapping[str, Any], keys: Iterable[str] | None = None,
                         prefix: str = "") -> list[str]:
    """``["lr 0.0001 (checkpoint) vs 0.0002 (now)", ...]`` for the keys whose values differ."""
    keys = sorted(set(saved) | set(now)) if keys is None else list(keys)
    out = []
    for k in keys:
        a, b = saved.get(k), now.get(k)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            same = len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
        else:
            same = _close(a, b)
        if not same:
            out.append(f"{prefix}{k} {_fmt(a)} (checkpoint) vs {_fmt(b)} (now)")
    return out


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))
    return a == b
