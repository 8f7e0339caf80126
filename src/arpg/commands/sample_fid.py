"""``arpg sample-fid``: sample a pinned recipe for FID (PNGs + samples.npz + recipe.json), torchrun-aware."""

from __future__ import annotations

import argparse

from ..demo.assets import demo_paths
from ..eval.sample_fid import sample_for_eval
from ..util.distributed import barrier, init_distributed, shutdown
from ..sampling.runtime import pack_once
from .sample import load_pair
from ..model import ATTENTION_MODES
from ..sampling.guidance import CFG_SCHEDULES
from ..sampling.orders import ORDERS
from ..sampling.recipes import Recipe, get_recipe, recipe_name_for, recipe_names, recommended_sampling
from ..util.devices import parse_dtype
from ._common import device_name, dtype_name, finite_float, output_dir, positive_float, positive_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample-fid", help="sample a pinned recipe into PNGs and one .npz for FID (torchrun-aware)",
                       description="Sample a recipe for evaluation. The recipe is the pinned one named by --recipe, "
                                   "else the one of the model's architecture, else one built from the model (its "
                                   "class count, its recommended sampling settings); any field given below "
                                   "overrides it (the name then gets +custom). Re-running into the same --out "
                                   "resumes only when every setting, the model and the tokenizer are the same.")
    p.add_argument("--model", default=None, help="ARPG checkpoint (default: the shipped demo model)")
    p.add_argument("--tokenizer", default=None, help="tokenizer checkpoint (default: the shipped demo tokenizer)")
    p.add_argument("--recipe", default=None, choices=recipe_names(), help="pinned recipe name (see `arpg recipes`)")
    p.add_argument("--out", required=True, type=output_dir, help="output folder (resumable)")
    p.add_argument("--overwrite", action="store_true", help="delete what --out holds from an earlier run first")
    p.add_argument("--batch-size", type=positive_int, default=32, help="fixed chunk size: part of the image identity")
    p.add_argument("--num-samples", type=positive_int, default=None, help="only the first N samples of the recipe")
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--cfg-scale", type=finite_float, default=None)
    p.add_argument("--cfg-schedule", default=None, choices=list(CFG_SCHEDULES))
    p.add_argument("--temperature", type=positive_float, default=None)
    p.add_argument("--per-class", type=positive_int, default=None, help="samples per class")
    p.add_argument("--seed", type=seed_int, default=None)
    p.add_argument("--order", default=None, choices=list(ORDERS))
    p.add_argument("--attention", default=None, choices=list(ATTENTION_MODES))
    p.add_argument("--device", default="auto", type=device_name)
    p.add_argument("--dtype", default="fp32", type=dtype_name)
    p.set_defaults(func=run)


#: Recipe fields the command line may change.
OVERRIDES = ("steps", "cfg_scale", "cfg_schedule", "temperature", "per_class", "seed", "order", "attention")


def recipe_for_model(model, tok, name: str | None) -> Recipe:
    """The pinned recipe ``name``, else the model's architecture's, else one made from the model itself."""
    name = name or recipe_name_for(model.config)
    if name:
        return get_recipe(name)
    s = recommended_sampling(model)
    return Recipe(name="model", preset="custom", num_classes=model.config.num_classes, per_class=50,
                  image_size=model.config.grid_size * tok.downsample,
                  source="built from the model: its class count and recommended sampling settings",
                  **s.to_dict() | {"step_schedule": s.step_schedule if isinstance(s.step_schedule, str) else "arccos"})


def run(args: argparse.Namespace) -> int:

    info = init_distributed(args.device)
    try:
        model, tok = load_pair(args.model, args.tokenizer, info.device)
        pack_once(model, dtype=parse_dtype(args.dtype))  # many calls: packed once, not per call
        recipe = recipe_for_model(model, tok, args.recipe)
        changes = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
        recipe = recipe.replace(**changes) if changes else recipe
        shipped = demo_paths(check=False)
        res = sample_for_eval(model, tok, recipe, args.out, batch_size=args.batch_size, rank=info.rank,
                              world_size=info.world_size, dtype=parse_dtype(args.dtype), progress=info.is_main,
                              barrier=lambda: barrier(info), num_samples=args.num_samples,
                              model_path=str(args.model or shipped.model),
                              tokenizer_path=str(args.tokenizer or shipped.tokenizer), overwrite=args.overwrite,
                              sources=(args.model or "shipped demo model", args.tokenizer or "shipped demo tokenizer"))
        if info.is_main:
            print(f"wrote {res['num_samples']} samples to {args.out}/samples.npz with recipe {recipe.name} "
                  f"(recipe.json beside it)")
    finally:
        shutdown(info)
    return 0
