"""The evaluation of a sample set (what ``arpg eval`` runs): FID, Inception Score, precision / recall, and a
record that says exactly what was used."""

from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ARPGError
from ..sampling.recipes import get_recipe
from ..util.devices import pick_device
from ..util.files import atomic_write_text
from ..util.version import __version__
from .fid import FeatureStats, frechet_distance
from .inception import features_from_batches, load_inception
from .inception_score import inception_score
from .npz import ImageSource, load_reference, open_images
from .prdc import precision_recall

RECIPE_FILE = "recipe.json"


def find_recipe_file(samples: Path) -> Path | None:
    """``recipe.json`` inside a samples folder, or beside a samples file / folder."""
    for d in ([samples] if samples.is_dir() else []) + [samples.parent]:
        if (d / RECIPE_FILE).is_file():
            return d / RECIPE_FILE
    return None


def read_recipe(samples: Path, name: str | None) -> tuple[dict[str, Any] | None, str | None]:
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


def evaluate(samples: str | Path, ref: str | Path, *, inception: str | Path | None = None, device: str = "auto",
             batch_size: int = 50, k: int = 3, splits: int = 10, recompute_ref_stats: bool = False,
             with_pr: bool = True, recipe: str | None = None) -> dict[str, Any]:
    """FID, Inception Score and precision / recall of ``samples`` (an ``.npz`` with ``arr_0`` or a folder)
    against ``ref`` (an ``.npz`` with images and / or stored ``mu`` / ``sigma``, or a folder).

    The record says everything it used: the network, the pre-processing, the reference statistics' origin,
    and the sampling recipe (the ``recipe.json`` beside the samples, else the pinned ``recipe`` named here).
    """
    if min(batch_size, k, splits) < 1:
        raise ARPGError("batch_size, k and splits must be positive")
    t0 = time.time()
    dev = pick_device(device)
    samples_path = Path(samples)
    images = open_images(samples_path)
    reference = load_reference(ref)
    recipe_record, recipe_source = read_recipe(samples_path, recipe)
    use_stored = reference.has_stats and not recompute_ref_stats
    if not use_stored and reference.images is None:
        raise ARPGError(f"{reference.path} has no images to compute reference statistics from")
    want_pr = with_pr and reference.images is not None
    net = load_inception(inception, device=dev, batch_size=batch_size)
    if use_stored and reference.mu.shape != (net.feature_dim,):
        raise ARPGError(f"{reference.path} stores {reference.mu.shape[0]}-d statistics but network {net.name} "
                        f"gives {net.feature_dim}-d features; use the matching network or --recompute-ref-stats")

    t_feat = time.time()
    s_stats = FeatureStats()
    s_pool, s_logits = _features(net, images, batch_size, "sample features", s_stats)
    r_pool, n_ref_images = None, 0
    if want_pr or not use_stored:
        r_stats = None if use_stored else FeatureStats()
        r_pool, _ = _features(net, reference.images, batch_size, "reference features", r_stats)
        n_ref_images = len(r_pool)
    r_mu, r_sigma = (reference.mu, reference.sigma) if use_stored else (r_stats.mu, r_stats.sigma)
    t_feat = time.time() - t_feat

    fid = frechet_distance(s_stats.mu, s_stats.sigma, r_mu, r_sigma)
    is_result, is_note = None, None
    if s_logits is None:
        is_note = "network has no logits"
    elif len(s_logits) < splits:
        is_note = f"needs at least {splits} samples"
    else:
        m, s = inception_score(s_logits, splits)
        is_result = {"mean": m, "std": s, "splits": splits, "classes": int(s_logits.shape[1])}
    pr, pr_note = None, None
    if not want_pr:
        pr_note = "skipped (--no-pr)" if not with_pr else "reference has no images"
    elif min(len(s_pool), len(r_pool)) <= k:
        pr_note = f"needs more than k={k} images in each set"
    else:
        pr = precision_recall(r_pool, s_pool, k=k, batch_size=4096 if dev.type == "cuda" else 1024, device=dev)

    return {
        "samples": str(samples_path), "num_samples": len(images), "sample_shape": list(images.shape[1:]),
        "reference": str(reference.path),
        "reference_stats": "stored mu/sigma" if use_stored else "computed from images",
        "num_reference_images": n_ref_images,
        "network": net.name, "network_path": str(inception) if inception else None, "feature_dim": net.feature_dim,
        "preprocessing": "TF1 bilinear resize to 299x299 (float), then (x - 128) / 128",
        "fid": fid,
        "inception_score": is_result, **({"inception_score_note": is_note} if is_note else {}),
        "precision": pr.precision if pr else None, "recall": pr.recall if pr else None, "k": k,
        **({"precision_recall_note": pr_note} if pr_note else {}),
        "recipe": recipe_record, "recipe_source": recipe_source,
        "device": str(dev), "feature_time_s": round(t_feat, 2), "total_time_s": round(time.time() - t0, 2),
        "arpg_version": __version__, "host": platform.node(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(results: dict[str, Any], path: str | Path) -> None:
    """The record as JSON (atomic)."""
    atomic_write_text(path, json.dumps(results, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def recipe_name(rec: Any) -> str:
    """The recipe's name from a ``--recipe`` record ({"name": ...}) or a sample-fid ``recipe.json``
    (which nests it: {"recipe": {"name": ...}, ...})."""
    if not isinstance(rec, dict):
        return "?"
    inner = rec.get("recipe")
    return str(rec.get("name") or (inner.get("name") if isinstance(inner, dict) else None) or "?")


def format_table(r: dict[str, Any]) -> str:
    """The record as an aligned two-column table (sizes as HEIGHTxWIDTH)."""
    rec = r["recipe"]
    rows = [("samples", f"{r['samples']} ({r['num_samples']} images, {r['sample_shape'][0]}x{r['sample_shape'][1]})"),
            ("reference", f"{r['reference']} ({r['reference_stats']})"),
            ("network", f"{r['network']} ({r['feature_dim']}-d)"),
            ("recipe", recipe_name(rec) if rec else "none recorded"),
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
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
