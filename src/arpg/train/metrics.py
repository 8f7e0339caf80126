"""Training logs: JSON lines (always) and TensorBoard (optional extra, imported only when asked for)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ARPGError

LOG_NAME = "log.jsonl"


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of ``RUN/log.jsonl`` (a torn last line from a crash is ignored)."""
    path = Path(run_dir) / LOG_NAME
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


class MetricsLog:
    """Appends one JSON object per call to ``RUN/log.jsonl``; mirrors scalars to TensorBoard if enabled."""

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = False, resume_step: int | None = None):
        self.path = Path(run_dir) / LOG_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # Records past the checkpoint we resume from belong to the lost tail of the old run.
            keep = [r for r in read_log(run_dir) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = open(self.path, "a", buffering=1)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ARPGError("--tensorboard needs the tensorboard package: pip install 'arpg[tensorboard]'") from None
            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if self._f.closed:  # a run continued after close() (e.g. a second run() call): append again
            self._f = open(self.path, "a", buffering=1)
        self._f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = int(record["step"])
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()
