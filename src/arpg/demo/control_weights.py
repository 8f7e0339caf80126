"""Shipping a ControlARPG fine-tune of the demo model as ``arpg/weights/demo-control-KIND/``.

The run's EMA weights are stored in float16 (2.7M parameters: about 5.4 MB instead of 10.8 MB; they load into a
float32 model, and every figure of the card was measured with these very float16-rounded weights), with the
demo recipe as the recommended sampling, a model card, and an entry in ``control_card.json`` (the commands,
steps, final loss and wall time of the run).

Run: ``python -m arpg.demo.control_weights --kind canny --run RUN_DIR --extract-s S --train-s S``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ARPGError
from ..sampling.recipes import get_recipe
from ..train.metrics import read_log
from ..model.weights import load_model
from .assets import WEIGHTS_DIR

CONTROL_CARD = WEIGHTS_DIR / "control_card.json"


def control_commands(kind: str) -> list[str]:
    """The commands that make the ``kind`` fine-tune from the shipped demo weights (WORK = any folder)."""
    return [f"arpg extract-codes --data animal-mnist --tokenizer src/arpg/weights/demo-vq --out WORK/codes-{kind} "
            f"--condition {kind}",
            f"arpg train --codes WORK/codes-{kind} --out WORK/run-{kind} --preset ARPG-demo --condition {kind} "
            "--init src/arpg/weights/demo-arpg/model.safetensors --steps 2000 --batch-size 64 --lr 2e-3 "
            "--warmup 0.05 --dtype fp32 --ema 0.999 --save-every 250 --log-every 50 --resume auto"]


def read_control_card() -> dict[str, Any]:
    return json.loads(CONTROL_CARD.read_text()) if CONTROL_CARD.exists() else {}


def ship_control(run: str | Path, kind: str, wall_s: dict[str, float], quality: Any = None) -> Path:
    """Write ``demo-control-{kind}`` from the run folder ``run`` (its ``final-ema.safetensors``)."""
    run = Path(run)
    weights = run / "final-ema.safetensors"
    if not weights.is_file():
        raise ARPGError(f"{weights} not found: the run has not finished")
    model = load_model(weights)
    if model.config.condition_kind != kind:
        raise ARPGError(f"{weights} was trained on {model.config.condition_kind!r} maps, not {kind!r}")
    model.sampling = get_recipe("demo").sampling
    log = read_log(run)
    entry = {"kind": kind, "commands": control_commands(kind), "steps": log[-1]["step"],
             "final_loss": round(log[-1]["loss"], 4), "first_logged_loss": round(log[0]["loss"], 4),
             "wall_time_s": wall_s, "machine": "2 shared CPU cores, torch CPU build",
             "shipped_weights": "EMA (decay 0.999) of the run, stored as float16",
             "quality": quality or "see benchmarks/results/control_quality.md"}
    card = {"name": f"ControlARPG demo model ({kind} maps, Animal-MNIST, 8x8 codes)",
            "training_data": f"Animal-MNIST train split (9000 images, ten-crop) with their {kind} maps per crop",
            "training_command": "\n".join(entry["commands"]),
            "quality": entry["quality"],
            "notes": f"Fine-tuned from the shipped demo model (everything but the new condition encoder) for "
                     f"{entry['steps']} steps; wall time {json.dumps(wall_s)} s on {entry['machine']}. Weights stored "
                     "as float16. Full record: control_card.json beside this folder."}
    folder = model.to(torch.float16).save_pretrained(WEIGHTS_DIR / f"demo-control-{kind}", card=card)
    record = read_control_card()
    record[kind] = entry
    CONTROL_CARD.write_text(json.dumps(record, indent=1) + "\n")
    return folder


def main() -> None:  # pragma: no cover - run once per shipped fine-tune
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--extract-s", type=float, required=True)
    ap.add_argument("--train-s", type=float, required=True)
    a = ap.parse_args()
    print(ship_control(a.run, a.kind, {"extract-codes": a.extract_s, "train": a.train_s}))


if __name__ == "__main__":  # pragma: no cover
    main()
