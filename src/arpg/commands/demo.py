"""``arpg demo``: the embedded default -- generation and editing with the shipped weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo.report import run_demo
from ..demo.retrain import FINAL, retrain
from ..errors import ARPGError
from ._common import output_dir, positive_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo on the shipped weights (or rebuild them with --retrain)")
    p.add_argument("--out", type=output_dir, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--samples-per-class", type=positive_int, default=8)
    p.add_argument("--steps", type=positive_int, default=None, help="decoding steps (default: the model's recipe)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--retrain", action="store_true",
                   help="reproduce the shipped weights end to end (train-vq, extract-codes, train), then run")
    p.add_argument("--work-dir", default="runs/demo", help="--retrain: where checkpoints and codes go (resumable)")
    p.add_argument("--install", action="store_true", help="--retrain: copy the new weights over the shipped ones")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.install and not args.retrain:
        raise ARPGError("--install copies the weights that --retrain makes; give both, or neither")
    model = tokenizer = None
    if args.retrain:
        times = retrain(args.work_dir, install=args.install)
        print("[retrain] wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))
        model = str(Path(args.work_dir) / FINAL)
        tokenizer = str(Path(args.work_dir) / "vq" / "tokenizer.safetensors")
    run_demo(args.out, samples_per_class=args.samples_per_class, steps=args.steps, seed=args.seed,
             model_path=model, tokenizer_path=tokenizer)
    return 0
