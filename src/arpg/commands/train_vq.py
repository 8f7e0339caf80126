"""``arpg train-vq``: train a VQ tokenizer on an image folder or the bundled data set."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..train.vq_config import TrainVQConfig, resume_config
from ..train.vq_trainer import train_vq
from ..util.devices import parse_dtype
from ._common import (add_device_args, int_range, nonneg_float, nonneg_int, output_dir, positive_float, positive_int,
                      seed_int)

# Flags default to None so that, on --resume, only the settings the user actually typed override the
# checkpoint's; these are the real defaults (shown in --help).
_DEFAULTS = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
             for f in dataclasses.fields(TrainVQConfig)}


def register(sub: argparse._SubParsersAction) -> None:
    d = _DEFAULTS
    p = sub.add_parser(
        "train-vq", help="train a VQ tokenizer (image folder or the bundled animal-mnist set)",
        description="Train a VQ tokenizer. Losses: reconstruction + codebook + commitment on L2-normalised codes, "
                    "optional perceptual (--lpips-weights) and PatchGAN (--disc-start). Writes OUT/log.jsonl, "
                    "OUT/checkpoints/, and OUT/tokenizer.safetensors at the end. Settings left out on --resume "
                    "come from the checkpoint.")
    arg = p.add_argument
    arg("--data", default=None, help=f"image folder ROOT/<class>/<images> or '{d['data']}' (default)")
    arg("--out", required=True, type=output_dir, help="output folder")
    arg("--preset", default=None, help=f"tokenizer preset: VQ-tiny, VQ-demo, VQ-small, VQ-16 (default {d['preset']})")
    arg("--image-size", type=positive_int, default=None, help=f"train resolution, a multiple of the downsampling factor "
                                                      f"(default {d['image_size']})")
    arg("--channels", type=int, choices=(1, 3), default=None,
        help="1 or 3 (default: 1 for animal-mnist, 3 for folders; gray is replicated to 3)")
    arg("--codebook-size", type=int_range(2), default=None, help="override the preset's codebook size")
    arg("--codebook-dim", type=positive_int, default=None, help="override the preset's code dimension")
    arg("--steps", type=positive_int, default=None, help=f"total optimisation steps (default {d['steps']})")
    arg("--batch-size", type=positive_int, default=None, help=f"default {d['batch_size']}")
    arg("--lr", type=positive_float, default=None, help=f"peak learning rate (default {d['lr']})")
    arg("--lr-schedule", choices=("cosine", "constant"), default=None, help=f"default {d['lr_schedule']}")
    arg("--warmup", type=nonneg_int, default=None, help=f"linear warm-up steps (default {d['warmup']})")
    arg("--weight-decay", type=nonneg_float, default=None, help=f"default {d['weight_decay']}")
    arg("--grad-clip", type=nonneg_float, default=None, help=f"default {d['grad_clip']} (0 = off)")
    arg("--recon-loss", choices=("l1", "l2"), default=None, help=f"default {d['recon_loss']}")
    arg("--beta", type=nonneg_float, default=None, help=f"commitment weight (default {d['beta']})")
    arg("--codebook-weight", type=nonneg_float, default=None, help=f"default {d['codebook_weight']}")
    arg("--lpips-weights", nargs="+", default=None, metavar="PATH",
        help="feature-net weights for a perceptual loss: torchvision-style VGG 'features.N.*' tensors and, "
             "optionally, LPIPS 'linK' heads (several files are merged)")
    arg("--perceptual-weight", type=nonneg_float, default=None, help=f"default {d['perceptual_weight']}")
    arg("--disc-start", type=int_range(-1), default=None, help="step at which the PatchGAN loss starts (default: never)")
    arg("--disc-weight", type=nonneg_float, default=None, help=f"default {d['disc_weight']}")
    arg("--disc-lr", type=positive_float, default=None, help="default: --lr")
    arg("--disc-layers", type=positive_int, default=None, help="stride-2 layers (default 2 up to 32 px, else 3)")
    arg("--reseed-every", type=nonneg_int, default=None,
        help=f"re-seed codes unused for this many steps (default {d['reseed_every']}, 0 = never)")
    arg("--hflip", action="store_true", default=None, help="random horizontal flips")
    arg("--seed", type=seed_int, default=None, help=f"default {d['seed']}")
    arg("--log-every", type=positive_int, default=None, help=f"default {d['log_every']}")
    arg("--eval-every", type=nonneg_int, default=None, help=f"held-out PSNR/usage every N steps (default {d['eval_every']})")
    arg("--eval-images", type=positive_int, default=None, help=f"default {d['eval_images']}")
    arg("--ckpt-every", type=positive_int, default=None, help=f"default {d['ckpt_every']}")
    arg("--keep", type=nonneg_int, default=None, help=f"checkpoints to keep, 0 = all (default {d['keep']})")
    arg("--resume", default=None, metavar="auto|PATH", help="continue a run: 'auto' = latest checkpoint in --out")
    arg("--no-progress", action="store_true", help="no progress bar")
    add_device_args(p)
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace) -> TrainVQConfig:
    """The run's settings: the flags given; for a resumed run the checkpoint's for the rest."""
    explicit = {k: getattr(args, k) for k in _DEFAULTS if getattr(args, k, None) is not None}
    explicit["out"] = str(args.out)
    cfg = resume_config(args.out, args.resume, explicit) if args.resume else None
    return cfg if cfg is not None else TrainVQConfig(**explicit)


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    trainer = train_vq(cfg, resume=args.resume, device=args.device, dtype=parse_dtype(args.dtype),
                       progress=not args.no_progress, finished="error")
    last = trainer.records[-1] if trainer.records else {}
    summary = {k: round(v, 4) for k, v in last.items() if k in ("psnr", "usage", "eval_psnr", "eval_usage")}
    print(f"wrote {trainer.out / 'tokenizer.safetensors'} after {trainer.step} steps: {json.dumps(summary)}")
    return 0
