"""``arpg train``: train ARPG on extracted codes (one process, or DDP / FSDP under torchrun)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..model.config import ARPG_PRESETS, ARPGConfig
from ..data.conditions import CONDITION_KINDS
from ..errors import ARPGError
from ..train.config import TrainConfig, resume_train_config
from ..train.trainer import train
from ..util.devices import pick_device
from ..util.memory import fix_mmap_threshold
from ._common import (decay, device_name, finite_float, float_range, input_file, nonneg_float, nonneg_int,
                      output_dir, positive_float, positive_int, seed_int)

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

EPILOG = """\
examples:
  arpg train --codes codes/animal --out runs/demo --preset ARPG-demo --steps 2000 --batch-size 64
  torchrun --nproc_per_node 8 -m arpg.cli train --codes codes/imagenet --out runs/arpg-l \\
      --preset ARPG-L --batch-size 1024 --lr 1e-4 --epochs 400 --dtype bf16 --ema 0.9999 --resume auto
See docs/training.md for the full ImageNet recipe.
"""


def register(sub: argparse._SubParsersAction) -> None:
    d = _DEFAULTS
    p = sub.add_parser("train", help="train ARPG on extracted codes (torchrun for several GPUs)",
                       description="Train ARPG on a code folder written by 'arpg extract-codes'. With --resume, "
                                   "settings left out come from the checkpoint; flags that contradict it are "
                                   "refused, and a larger --steps extends a finished run.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--codes", default=None, help="code folder (from arpg extract-codes); required for a new run")
    g.add_argument("--out", required=True, type=output_dir,
                   help="run folder: checkpoints, log.jsonl, samples, final weights")
    g.add_argument("--preset", default=None, help=f"model preset, required for a new run: {', '.join(ARPG_PRESETS)}")
    g.add_argument("--config", default=None, type=input_file, help="JSON file of ARPGConfig fields overriding the "
                   "preset (a run's run.json works too)")
    g.add_argument("--set", action="append", default=None, metavar="FIELD=VALUE",
                   help="override one ARPGConfig field, e.g. --set resid_dropout=0 (repeatable)")
    g.add_argument("--init", default=None,
                   help="start from these weights (fine-tuning; ignored when resuming)")
    g.add_argument("--condition", default=None, metavar="KIND",
                   help="ControlARPG: train on the codes' condition maps of this kind (canny or layout from "
                        "extract-codes --condition, or any kind written with arpg.data.codes.write_code_set; "
                        f"built in: {', '.join(CONDITION_KINDS)}); with --init the condition encoder starts fresh "
                        "and the rest is fine-tuned")

    g = p.add_argument_group("optimisation (published recipe by default)")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"GLOBAL batch size over all processes (default {d['batch_size']})")
    g.add_argument("--grad-accum", type=positive_int, default=None, help="gradient accumulation micro-steps (default 1)")
    g.add_argument("--steps", type=positive_int, default=None, help="number of optimizer steps")
    g.add_argument("--epochs", type=positive_float, default=None, help="or: number of passes over the codes")
    g.add_argument("--lr", type=positive_float, default=None, help="peak learning rate PER 256 SAMPLES, scaled by "
                   f"batch/256 (default {d['lr']:g})")
    g.add_argument("--min-lr", type=nonneg_float, default=None, help="final lr of the cosine decay, per 256 samples "
                   f"and scaled like --lr; at most --lr (default {d['min_lr']:g})")
    g.add_argument("--warmup", type=nonneg_float, default=None, help="linear warm-up: fraction of steps if < 1, "
                   f"else steps (default {d['warmup']})")
    g.add_argument("--weight-decay", type=nonneg_float, default=None,
                   help=f"AdamW weight decay on >=2-D params (default {d['weight_decay']})")
    g.add_argument("--betas", type=float_range(0.0, 1.0, hi_open=True), nargs=2, default=None, metavar=("B1", "B2"))
    g.add_argument("--grad-clip", type=nonneg_float, default=None, help="max gradient norm; 0 = off (default 1.0)")
    g.add_argument("--ema", type=decay, default=None, metavar="DECAY", help="keep an EMA of the weights "
                   "with this decay in (0, 1), e.g. 0.9999 (default 0 = off)")
    g.add_argument("--dtype", default=None, choices=["auto", "fp32", "float32", "bf16", "bfloat16"],
                   help="auto (bf16 autocast on GPUs that support it; the default), fp32, bf16")
    g.add_argument("--device", default=None, type=device_name, help="cpu, cuda or auto (default)")
    g.add_argument("--fsdp", action="store_true", default=None, help="shard parameters, gradients and optimizer "
                   "state (FSDP) instead of DDP under torchrun")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step's "
                   "forward/backward (faster after a one-off compile; needs a C++ compiler on CPU)")
    g.add_argument("--loss-chunk", type=nonneg_int, default=None, metavar="ROWS",
                   help="compute the head and the loss this many rows at a time, so the full logits and their "
                        f"gradient never exist (same loss and gradients; default {d['loss_chunk']}; 0 = all at once)")
    g.add_argument("--grad-checkpoint", action="store_true", default=None,
                   help="recompute each block's activations in backward: less memory for the largest models, "
                        "about a third more time")
    g.add_argument("--seed", type=seed_int, default=None)

    g = p.add_argument_group("checkpoints, logs and samples")
    g.add_argument("--save-every", type=positive_int, default=None, help="checkpoint every N steps (and at the end)")
    g.add_argument("--keep", type=nonneg_int, default=None, help="keep the newest K checkpoints (0 = all; default 3)")
    g.add_argument("--resume", default=None, metavar="PATH|auto", help="continue from a checkpoint; 'auto' = "
                   "the newest in --out (a fresh start if there is none)")
    g.add_argument("--log-every", type=positive_int, default=None, help="log a JSON line every N steps (default 10)")
    g.add_argument("--tensorboard", action="store_true", default=None, help="also log to TensorBoard")
    g.add_argument("--sample-every", type=nonneg_int, default=None, help="save a sample grid every N steps (0 = off)")
    g.add_argument("--sample-steps", type=positive_int, default=None, help="decoding steps for the sample grid")
    g.add_argument("--sample-cfg", type=finite_float, default=None, help="guidance scale for the sample grid")
    g.add_argument("--sample-count", type=positive_int, default=None, help="images in the sample grid")
    g.add_argument("--tokenizer", default=None, help="tokenizer checkpoint to decode sample grids "
                   "to PNG (without it only the codes are saved)")
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
    # Checked here so a bad field or value is one line before any data is read.
    bad = sorted(set(out) - {f.name for f in dataclasses.fields(ARPGConfig)})
    if bad:
        raise ARPGError(f"unknown ARPGConfig field(s) {', '.join(bad)} in --set/--config")
    ARPGConfig(**out)  # raises the one-line type errors
    return out


#: CLI flag -> TrainConfig field, for the flags that map one to one.
_FLAGS = ("codes", "preset", "init", "condition", "batch_size", "grad_accum", "steps", "epochs", "lr", "min_lr", "warmup",
          "weight_decay", "betas", "grad_clip", "ema", "dtype", "device", "fsdp", "compile", "loss_chunk",
          "grad_checkpoint", "seed", "save_every",
          "keep", "log_every", "tensorboard", "sample_every", "sample_steps", "sample_cfg", "sample_count",
          "tokenizer")


def config_from_args(args: argparse.Namespace):
    """The run's :class:`TrainConfig`: the flags given; for a resumed run the checkpoint's settings for the
    rest, else the published defaults."""
    explicit: dict[str, Any] = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    for k in ("init", "tokenizer", "codes"):
        if k in explicit:
            explicit[k] = str(explicit[k])
    if "betas" in explicit:
        explicit["betas"] = tuple(explicit["betas"])
    if args.config is not None or args.set:
        explicit["overrides"] = parse_overrides(args.config, args.set or [])
    explicit["progress"] = not args.no_progress
    cfg = resume_train_config(str(args.out), args.resume, explicit) if args.resume else None
    if cfg is None:
        if "codes" not in explicit:
            raise ARPGError("--codes is required for a new run (a resumed run takes it from its checkpoint)")
        cfg = TrainConfig(out=str(args.out), resume=args.resume, **explicit)
    return cfg.validate()


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if pick_device(cfg.device).type == "cpu":
        fix_mmap_threshold()  # freed activations go back to the OS each step (benchmarks/train_step.py)
    train(cfg)
    return 0
