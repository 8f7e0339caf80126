"""``arpg sample``: class-conditional generation to PNG files and a grid image."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ARPGError
from ._common import add_device_args, parse_dtype, pick_device


def add_sampling_args(p: argparse.ArgumentParser, steps: int | None = None, cfg: float | None = None) -> None:
    """Sampling options shared by ``sample`` and the editing commands (defaults: the model's recipe)."""
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, default=steps, help="decoding steps (default: the model's recipe)")
    g.add_argument("--cfg-scale", type=float, default=cfg, help="guidance scale; 1 disables (default: recipe)")
    g.add_argument("--cfg-schedule", default=None, choices=["linear", "constant"], help="default: recipe")
    g.add_argument("--step-schedule", default=None,
                   help="arccos (published), cosine, linear, or comma-separated counts per step (default: recipe)")
    g.add_argument("--temperature", type=float, default=None, help="default: recipe")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--order", default="random",
                   help="random, shared-random, raster, alternate, z-curve, spiral-in, spiral-out")
    g.add_argument("--attention", default="block", choices=["block", "causal"])
    g.add_argument("--seed", type=int, default=0)
    add_device_args(p)


def sampling_kwargs(args: argparse.Namespace, defaults: dict) -> dict:
    """Keyword arguments for :func:`arpg.generate` from parsed CLI options."""
    def pick(name: str, fallback):
        value = getattr(args, name)
        return value if value is not None else defaults.get(name, fallback)

    schedule = pick("step_schedule", "arccos")
    if isinstance(schedule, str) and ("," in schedule or schedule.isdigit()):
        try:
            schedule = [int(x) for x in schedule.split(",")]
        except ValueError:
            raise ARPGError(f"--step-schedule: expected a name or comma-separated integers, got {schedule!r}") from None
    return dict(
        steps=pick("steps", 32), cfg_scale=pick("cfg_scale", 1.0), cfg_schedule=pick("cfg_schedule", "linear"),
        step_schedule=schedule, temperature=pick("temperature", 1.0), top_k=pick("top_k", None),
        top_p=pick("top_p", None), order=args.order, attention=args.attention,
    )


def load_pair(model_path: str | None, tokenizer_path: str | None, device: torch.device):
    """The ARPG model and tokenizer to use: the given files, or the shipped demo weights."""
    from ..checkpoints import load_model
    from ..demo_assets import demo_paths
    from ..tokenizer import load_tokenizer

    if model_path is None or tokenizer_path is None:
        shipped = demo_paths()
        model_path = model_path or str(shipped.model)
        tokenizer_path = tokenizer_path or str(shipped.tokenizer)
    model = load_model(model_path, device=device)
    tok = load_tokenizer(tokenizer_path, device=device)
    if tok.codebook_size != model.config.vocab_size:
        raise ARPGError(f"tokenizer codebook ({tok.codebook_size}) does not match the model's vocabulary "
                        f"({model.config.vocab_size}): they were not trained together")
    return model, tok


def parse_labels(text: str | None, num: int, num_classes: int) -> torch.Tensor:
    """``--labels 1,2,3`` or ``--labels all``; repeated/cycled to ``num`` samples."""
    if text in (None, "all"):
        base = list(range(num_classes))
    else:
        try:
            base = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ARPGError(f"--labels: expected comma-separated integers or 'all', got {text!r}") from None
    if not base:
        raise ARPGError("--labels is empty")
    bad = [x for x in base if not 0 <= x < num_classes]
    if bad:
        raise ARPGError(f"labels must be in 0..{num_classes - 1}; got {bad[:5]}")
    n = num or len(base)
    return torch.tensor([base[i % len(base)] for i in range(n)])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate class-conditional images (PNGs + a grid)")
    p.add_argument("--model", default=None, help="ARPG checkpoint (default: the shipped demo model)")
    p.add_argument("--tokenizer", default=None, help="VQ tokenizer checkpoint (default: the shipped demo tokenizer)")
    p.add_argument("--labels", default=None, help="comma-separated class ids, or 'all' (default: all classes)")
    p.add_argument("--num", type=int, default=0, help="number of images (default: one per label)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default="samples", help="output folder")
    p.add_argument("--save-codes", action="store_true", help="also write codes.npy")
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import generate
    from ..demo_assets import recipe_for
    from ..tokenizer import to_uint8
    from ..visual import make_grid, save_images, to_pil

    device = pick_device(args.device)
    dtype = parse_dtype(args.dtype)
    model, tok = load_pair(args.model, args.tokenizer, device)
    labels = parse_labels(args.labels, args.num, model.config.num_classes).to(device)
    kwargs = sampling_kwargs(args, recipe_for(model))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    t0 = time.perf_counter()
    codes = generate(model, labels, generator=gen, dtype=dtype, batch_size=args.batch_size, progress=True, **kwargs)
    t_gen = time.perf_counter() - t0
    with torch.no_grad():
        images = to_uint8(tok.decode(codes, grid=(model.config.grid_size,) * 2, batch_size=args.batch_size))
    out = Path(args.out)
    save_images(images, out)
    ncol = min(len(images), 10)
    to_pil(make_grid(images, ncol=ncol), scale=max(1, 256 // images.shape[1] // 2)).save(out / "grid.png")
    if args.save_codes:
        np.save(out / "codes.npy", codes.cpu().numpy())
    meta = dict(labels=labels.tolist(), seed=args.seed, dtype=args.dtype, model=args.model or "shipped demo",
                tokenizer=args.tokenizer or "shipped demo", seconds=round(t_gen, 3),
                **{k: v for k, v in kwargs.items()})
    (out / "sample.json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {len(images)} images and grid.png to {out} ({t_gen:.2f} s sampling, "
          f"{len(images) / t_gen:.1f} img/s)")
    return 0
