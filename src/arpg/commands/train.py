"""``arpg train``: train ARPG on extracted codes (one process, or DDP / FSDP under torchrun)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import ARPG_PRESETS
from ..errors import ARPGError

EPILOG = """\
examples:
  arpg train --codes codes/animal --out runs/demo --preset ARPG-demo --steps 2000 --batch-size 64
  torchrun --nproc_per_node 8 -m arpg.cli train --codes codes/imagenet --out runs/arpg-l \\
      --preset ARPG-L --batch-size 1024 --lr 1e-4 --epochs 400 --dtype bf16 --ema 0.9999 --resume auto
See docs/training.md for the full ImageNet recipe.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train ARPG on extracted codes (torchrun for several GPUs)",
                       description="Train ARPG on a code folder written by 'arpg extract-codes'.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--codes", required=True, help="code folder (from arpg extract-codes)")
    g.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, samples, final weights")
    g.add_argument("--preset", default="ARPG-L", help=f"model preset: {', '.join(ARPG_PRESETS)} (default ARPG-L)")
    g.add_argument("--config", default=None, help="JSON file of ARPGConfig fields overriding the preset "
                   "(a run's run.json works too)")
    g.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one ARPGConfig field, e.g. --set resid_dropout=0 (repeatable)")
    g.add_argument("--init", default=None, help="start from these weights (fine-tuning; ignored when resuming)")

    g = p.add_argument_group("optimisation (published recipe by default)")
    g.add_argument("--batch-size", type=int, default=256, help="GLOBAL batch size over all processes (default 256)")
    g.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation micro-steps (default 1)")
    g.add_argument("--steps", type=int, default=None, help="number of optimizer steps")
    g.add_argument("--epochs", type=float, default=None, help="or: number of passes over the codes")
    g.add_argument("--lr", type=float, default=1e-4, help="learning rate PER 256 SAMPLES, scaled by "
                   "batch/256 (default 1e-4)")
    g.add_argument("--min-lr", type=float, default=1e-5, help="final lr of the cosine decay (default 1e-5)")
    g.add_argument("--warmup", type=float, default=0.25, help="linear warm-up: fraction of steps if < 1, "
                   "else steps (default 0.25)")
    g.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay on >=2-D params (0.05)")
    g.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95), metavar=("B1", "B2"))
    g.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 = off (default 1.0)")
    g.add_argument("--ema", type=float, default=0.0, metavar="DECAY", help="keep an EMA of the weights "
                   "with this decay, e.g. 0.9999 (default off)")
    g.add_argument("--dtype", default="auto", help="auto (bf16 autocast on GPUs that support it), fp32, bf16")
    g.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    g.add_argument("--fsdp", action="store_true", help="shard parameters, gradients and optimizer state "
                   "(FSDP) instead of DDP under torchrun")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step's forward/backward "
                   "(faster after a one-off compile; needs a C++ compiler on CPU)")
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("checkpoints, logs and samples")
    g.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps (and at the end)")
    g.add_argument("--keep", type=int, default=3, help="keep the newest K checkpoints (0 = all; default 3)")
    g.add_argument("--resume", default=None, metavar="PATH|auto", help="continue from a checkpoint; 'auto' = "
                   "the newest in --out (a fresh start if there is none)")
    g.add_argument("--log-every", type=int, default=10, help="log a JSON line every N steps (default 10)")
    g.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (needs tensorboard)")
    g.add_argument("--sample-every", type=int, default=0, help="save a sample grid every N steps (0 = off)")
    g.add_argument("--sample-steps", type=int, default=32, help="decoding steps for the sample grid")
    g.add_argument("--sample-cfg", type=float, default=4.0, help="guidance scale for the sample grid")
    g.add_argument("--sample-count", type=int, default=16, help="images in the sample grid")
    g.add_argument("--tokenizer", default=None, help="tokenizer checkpoint to decode sample grids to PNG "
                   "(without it only the codes are saved)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def parse_overrides(config_file: str | None, sets: list[str]) -> dict[str, Any]:
    """ARPGConfig overrides from ``--config`` and ``--set FIELD=VALUE`` (values parsed as JSON if possible)."""
    out: dict[str, Any] = {}
    if config_file:
        try:
            d = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ARPGError(f"cannot read --config {config_file}: {e}") from None
        if isinstance(d, dict) and isinstance(d.get("model_config"), dict):
            d = d["model_config"]
        if not isinstance(d, dict):
            raise ARPGError(f"--config {config_file} must hold a JSON object of ARPGConfig fields")
        out.update(d)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ARPGError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def config_from_args(args: argparse.Namespace):
    from ..train.trainer import TrainConfig

    for name in ("save_every", "log_every"):
        if getattr(args, name) < 1:
            raise ARPGError(f"--{name.replace('_', '-')} must be >= 1")
    return TrainConfig(
        codes=args.codes, out=args.out, preset=args.preset, overrides=parse_overrides(args.config, args.set),
        batch_size=args.batch_size, grad_accum=args.grad_accum, steps=args.steps, epochs=args.epochs, lr=args.lr,
        min_lr=args.min_lr, warmup=args.warmup, weight_decay=args.weight_decay, betas=tuple(args.betas),
        grad_clip=args.grad_clip, dtype=args.dtype, device=args.device, ema=args.ema, seed=args.seed,
        save_every=args.save_every, keep=args.keep, log_every=args.log_every, tensorboard=args.tensorboard,
        sample_every=args.sample_every, sample_steps=args.sample_steps, sample_cfg=args.sample_cfg,
        sample_count=args.sample_count, tokenizer=args.tokenizer, resume=args.resume, init=args.init,
        fsdp=args.fsdp, compile=args.compile, progress=not args.no_progress)


def _run(args: argparse.Namespace) -> int:
    from ..train.trainer import train

    train(config_from_args(args))
    return 0
