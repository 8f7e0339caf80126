"""``arpg demo --retrain``: rebuild the shipped demo weights end to end with the project's own commands.

The exact commands (also recorded in the model card) are :func:`retrain_commands`. Wall time on 2 CPU
cores is recorded in ``weights/demo_card.json``; the run writes into ``work_dir`` and, with
``install=True``, copies the results over the shipped files.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .demo_assets import demo_paths

VQ_STEPS = 600
ARPG_STEPS = 2500


def retrain_commands(work: str) -> list[list[str]]:
    w = Path(work)
    return [
        ["train-vq", "--data", "animal-mnist", "--out", str(w / "vq"), "--preset", "VQ-demo", "--image-size", "32",
         "--channels", "1", "--steps", str(VQ_STEPS), "--batch-size", "32", "--eval-every", "300", "--resume", "auto"],
        ["extract-codes", "--data", "animal-mnist", "--tokenizer", str(w / "vq" / "tokenizer.safetensors"),
         "--out", str(w / "codes"), "--ten-crop"],
        ["train", "--codes", str(w / "codes"), "--out", str(w / "arpg"), "--preset", "ARPG-demo",
         "--steps", str(ARPG_STEPS), "--batch-size", "64", "--lr", "4e-3", "--warmup", "0.05", "--dtype", "fp32",
         "--save-every", "500", "--resume", "auto", "--tokenizer", str(w / "vq" / "tokenizer.safetensors")],
    ]


def retrain(work_dir: str, install: bool = False, log=print) -> dict[str, float]:
    """Run the three commands (each resumable) and return their wall times in seconds."""
    from .cli import main

    times = {}
    for cmd in retrain_commands(work_dir):
        log("[retrain] arpg " + " ".join(cmd))
        t = time.perf_counter()
        rc = main(cmd)
        if rc:
            raise SystemExit(rc)
        times[cmd[0]] = time.perf_counter() - t
    if install:
        paths = demo_paths(check=False)
        shutil.copyfile(Path(work_dir) / "vq" / "tokenizer.safetensors", paths.tokenizer)
        shutil.copyfile(Path(work_dir) / "arpg" / "final.safetensors", paths.model)
    return times
