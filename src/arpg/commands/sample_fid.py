"""``arpg sample-fid``: sample a pinned recipe for FID (PNGs + samples.npz + recipe.json), torchrun-aware."""

from __future__ import annotations

import argparse

from ..errors import ARPGError
from ._common import parse_dtype


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample-fid", help="sample a pinned recipe into PNGs and one .npz for FID (torchrun-aware)")
    p.add_argument("--model", default=None, help="ARPG checkpoint (default: the shipped demo model)")
    p.add_argument("--tokenizer", default=None, help="tokenizer checkpoint (default: the shipped demo tokenizer)")
    p.add_argument("--recipe", default=None, help="pinned recipe name (see `arpg recipes`); default from the model")
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--batch-size", type=int, default=32, help="fixed chunk size: part of the image identity")
    p.add_argument("--num-samples", type=int, default=None, help="only the first N samples of the recipe")
    for name, typ in (("steps", int), ("cfg-scale", float), ("temperature", float), ("per-class", int), ("seed", int)):
        p.add_argument(f"--{name}", type=typ, default=None, help=f"override the recipe's {name} (name gets +custom)")
    p.add_argument("--order", default=None)
    p.add_argument("--attention", default=None, choices=["block", "causal"])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..sampling.recipes import get_recipe, recipe_name_for
    from ..eval.sample_fid import sample_for_eval
    from ..train.distributed import barrier, init_distributed, shutdown
    from .sample import load_pair

    info = init_distributed(args.device)
    try:
        model, tok = load_pair(args.model, args.tokenizer, info.device)
        recipe = get_recipe(args.recipe or recipe_name_for(model.config) or "demo")
        changes = {k: getattr(args, k) for k in ("steps", "cfg_scale", "temperature", "per_class", "seed", "order",
                                                 "attention") if getattr(args, k) is not None}
        recipe = recipe.replace(**changes) if changes else recipe
        if args.batch_size < 1:
            raise ARPGError("--batch-size must be >= 1")
        res = sample_for_eval(model, tok, recipe, args.out, batch_size=args.batch_size, rank=info.rank,
                              world_size=info.world_size, dtype=parse_dtype(args.dtype), progress=info.is_main,
                              barrier=lambda: barrier(info), num_samples=args.num_samples)
        if info.is_main:
            print(f"wrote {res['num_samples']} samples to {args.out}/samples.npz with recipe {recipe.name} "
                  f"(recipe.json beside it)")
    finally:
        shutdown(info)
    return 0
