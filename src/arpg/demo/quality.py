"""Quality of the bundled demo model, measured with the shipped Animal-MNIST classifier.

* the tokenizer's ceiling: the same two figures for VQ reconstructions of the held-out images;
* generation: class accuracy of 1000 generated images (100 per class) and the Frechet distance between
  their classifier features and the 1000 held-out images', beside the floor (1000 train images vs the
  held-out images), for several step counts, raster order and causal attention;
* editing: (i) class accuracy after inpainting the centre half of held-out images vs on the originals,
  (ii) how often a class edit (top half regenerated under label + 5 mod 10) makes the classifier predict
  the new label, (iii) outpainting seams: mean absolute difference of neighbouring pixels where cells
  from different sources meet (known vs decoded, or two windows) vs inside one window's decoded cells
  (see :mod:`arpg.demo.seams`), and the same at position-matched pairs (two window plans per canvas).

Run: ``python -m arpg.demo.quality [--out results.json] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.animal_mnist import load_split, padded
from .assets import WEIGHTS_DIR, demo_paths
from .classifier import load_classifier, predict
from ..model.weights import load_model
from ..editing.images import edit_image, inpaint_image, outpaint_image
from ..eval.fid import feature_stats, frechet_distance
from ..sampling import generate, recommended_sampling
from ..util.images import from_uint8, to_uint8
from ..vq import load_tokenizer
from .seams import matched_seam_contrast, origin_map, seam_stats

CLASSIFIER = WEIGHTS_DIR / "demo_classifier.safetensors"


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return float(frechet_distance(*feature_stats(a), *feature_stats(b)))


def generation_table(model, tok, clf, settings: list[dict[str, Any]], per_class: int = 100, seed: int = 0,
                     log=print) -> list[dict[str, Any]]:

    held, held_y = load_split("heldout")
    _, held_f = predict(clf, padded(held))
    labels = torch.arange(10).repeat_interleave(per_class)
    g = model.config.grid_size
    rows = []
    for s in settings:
        gen = torch.Generator().manual_seed(seed)
        t = time.perf_counter()
        codes = generate(model, labels, generator=gen, batch_size=250, **s)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            images = to_uint8(tok.decode(codes, grid=(g, g), batch_size=250))
        pred, feats = predict(clf, images)
        y = labels.numpy()
        hit = pred == y
        per_class = [round(float(hit[y == c].mean()), 3) for c in range(10)]
        confusion = np.zeros((10, 10), dtype=int)  # rows: the class asked for, columns: the classifier's call
        np.add.at(confusion, (y, pred), 1)
        row = dict(setting=s, accuracy=float(hit.mean()), frechet=_fd(feats, held_f),
                   seconds=round(seconds, 2), img_per_s=round(len(labels) / seconds, 1), per_class_accuracy=per_class,
                   confusion=confusion.tolist())
        rows.append(row)
        log(json.dumps(row))
    return rows


def editing_figures(model, tok, clf, recipe: dict[str, Any], n: int = 200, seed: int = 0) -> dict[str, Any]:

    held, held_y = load_split("heldout")
    idx = np.linspace(0, len(held) - 1, n).astype(int)
    src = padded(held[idx])
    size = src.shape[1]
    gen = torch.Generator().manual_seed(seed)
    inpainted, inpainted_decoded, edited, new_labels = [], [], [], []
    t = {"inpaint": 0.0, "edit": 0.0, "outpaint": 0.0}
    for img, y in zip(src, held_y[idx]):
        y = int(y)
        s = time.perf_counter()
        r = inpaint_image(model, tok, img, box=(size // 4, size // 4, 3 * size // 4, 3 * size // 4), label=y,
                          generator=gen, **recipe)
        t["inpaint"] += time.perf_counter() - s
        inpainted.append(r["images"][0])
        inpainted_decoded.append(r["decoded"][0])
        new = (y + 5) % 10
        s = time.perf_counter()
        r = edit_image(model, tok, img, box=(0, 0, size, size // 2), new_label=new, generator=gen, **recipe)
        t["edit"] += time.perf_counter() - s
        edited.append(r["images"][0])
        new_labels.append(new)
    # Outpainting seams on fewer images (each canvas decodes several windows). Every canvas is filled
    # twice, with the default half-window stride and with stride 3, so that some cell boundaries are a
    # seam in one filling and inside a window in the other: the position-matched comparison.
    f = tok.downsample
    seams, runs_per_image = [], []
    for img, y in list(zip(src, held_y[idx]))[: max(1, n // 4)]:
        runs = []
        for stride in (None, 3):
            s = time.perf_counter()
            r = outpaint_image(model, tok, img, canvas=(size, 2 * size), offset=(0, 0), label=int(y),
                               generator=gen, stride=stride, **recipe)
            if stride is None:
                t["outpaint"] += time.perf_counter() - s
            runs.append((r["images"][0], origin_map(r["known"].cpu().numpy(), r["windows"])))
        seams.append(seam_stats(*runs[0], f))
        runs_per_image.append(runs)
    matched = [matched_seam_contrast(runs, f) for runs in runs_per_image]
    n_matched = sum(m[2] for m in matched)
    pred_orig, _ = predict(clf, src)
    pred_inp, _ = predict(clf, np.stack(inpainted))
    pred_inp_dec, _ = predict(clf, np.stack(inpainted_decoded))
    pred_edit, _ = predict(clf, np.stack(edited))
    m = len(src)
    return dict(
        n_images=m,
        accuracy_originals=float((pred_orig == held_y[idx]).mean()),
        accuracy_inpainted_centre=float((pred_inp == held_y[idx]).mean()),
        # The same inpaintings with every pixel decoded (keep_pixels=False): the tokenizer's loss included.
        accuracy_inpainted_centre_decode_all=float((pred_inp_dec == held_y[idx]).mean()),
        class_edit_success=float((pred_edit == np.array(new_labels)).mean()),
        outpaint_seam_mad=float(np.mean([x.seam for x in seams])),
        outpaint_inside_mad=float(np.mean([x.inside for x in seams])),
        outpaint_inside_cell_edge_mad=float(np.mean([x.inside_cell_edges for x in seams])),
        outpaint_matched_seam_mad=float(sum(m[0] * m[2] for m in matched) / n_matched) if n_matched else float("nan"),
        outpaint_matched_inside_mad=float(sum(m[1] * m[2] for m in matched) / n_matched) if n_matched else float("nan"),
        seconds_per_edit={k: round(v / (m if k != "outpaint" else max(1, n // 4)), 3) for k, v in t.items()},
    )


def floor(clf) -> float:
    held, _ = load_split("heldout")
    train, _ = load_split("train")
    pick = np.random.default_rng(0).choice(len(train), 1000, replace=False)
    return _fd(predict(clf, padded(train[pick]))[1], predict(clf, padded(held))[1])


def reconstruction_ceiling(tok, clf) -> dict[str, float]:
    """Class accuracy and Frechet distance of the tokenizer's reconstructions of the held-out images: the
    best any generator working through this tokenizer can score."""

    held, held_y = load_split("heldout")
    src = padded(held)
    _, held_f = predict(clf, src)
    with torch.no_grad():
        codes = tok.encode(from_uint8(src), batch_size=250)
        rec = to_uint8(tok.decode(codes, batch_size=250))
    pred, feats = predict(clf, rec)
    return dict(accuracy=float((pred == held_y).mean()), frechet=_fd(feats, held_f))


def plot_quality(src: Path, out: Path) -> Path | None:
    """Speed, classifier Frechet distance and class accuracy against steps, from a results JSON of
    :func:`main`; None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install 'arpg[plot]'): no plot")
        return None
    data = json.loads(src.read_text())
    rows = [r for r in data["generation"] if "steps" in r["setting"] and r["setting"].get("attention", "block") == "block"]
    steps = [r["setting"]["steps"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.2))
    ax[0].plot(steps, [r["img_per_s"] for r in rows], "o-")
    ax[0].set(xlabel="steps", ylabel="img/s", xscale="log", title="speed")
    ax[1].plot(steps, [r["frechet"] for r in rows], "o-", label="ARPG")
    ax[1].axhline(data["frechet_floor_train_vs_heldout"], ls="--", c="gray", label="train vs held-out")
    ax[1].set(xlabel="steps", ylabel="Frechet distance (classifier)", xscale="log", title="quality")
    ax[1].legend()
    ax[2].plot(steps, [r["accuracy"] for r in rows], "o-")
    ax[2].axhline(data["classifier_heldout_accuracy"], ls="--", c="gray")
    ax[2].set(xlabel="steps", ylabel="class accuracy", xscale="log", title="class fidelity")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def main() -> None:  # pragma: no cover - long-running measurement

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--out", default="demo_quality.json")
    p.add_argument("--quick", action="store_true", help="fewer settings and images")
    p.add_argument("--cfg-scale", type=float, default=None)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    paths = demo_paths(check=args.model is None)
    model = load_model(args.model or paths.model)
    tok = load_tokenizer(args.tokenizer or paths.tokenizer)
    clf = load_classifier(CLASSIFIER)
    recipe = {k: v for k, v in recommended_sampling(model).to_dict().items() if k in ("steps", "cfg_scale", "cfg_schedule", "temperature")}
    if args.cfg_scale is not None:
        recipe["cfg_scale"] = args.cfg_scale
    held, held_y = load_split("heldout")
    res: dict[str, Any] = dict(classifier_heldout_accuracy=float((predict(clf, padded(held))[0] == held_y).mean()),
                               frechet_floor_train_vs_heldout=floor(clf),
                               tokenizer_reconstructions=reconstruction_ceiling(tok, clf), recipe=recipe)
    n = model.config.n_cells
    base = {k: v for k, v in recipe.items() if k != "steps"}
    settings = [dict(steps=s, **base) for s in ((8, 32) if args.quick else (8, 16, 32, 64))]
    if not args.quick:
        settings += [dict(step_schedule=[1] * n, order="raster", **base),
                     dict(steps=8, attention="causal", **base),
                     dict(steps=32, attention="causal", **base)]
    res["generation"] = generation_table(model, tok, clf, settings, per_class=20 if args.quick else 100)
    res["editing"] = editing_figures(model, tok, clf, recipe, n=40 if args.quick else 200)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
