"""A GenEval-style judge for the text-to-image demo: ``python -m arpg.demo.t2i_quality``.

GenEval (Ghosh et al., 2023) scores a text-to-image model by detecting the objects in each image and
checking a pass/fail rule per prompt, in six tasks; the score of a task is the fraction of its images that
pass and the overall score is the mean over tasks. Our scenes are silhouettes on a black canvas, so the
detector is exact and cheap: the objects are the connected groups of lit pixels (lit pixels with at most
two dark pixels between them belong to one object; groups under :data:`MIN_AREA` pixels are specks and ignored), each classified by the
shipped judge classifier (``t2i_judge_classifier.safetensors``: the demo's small CNN trained on Animal-MNIST
train silhouettes re-centred on a 32x32 canvas as the judge presents objects, both as drawn and as the demo
tokenizer redraws them; held-out accuracy 0.979 on drawn and 0.950 on redrawn silhouettes, 0.984 on drawn ones
with the judge's averaging over shifted and mirrored views; :func:`arpg.demo.t2i_classifier.train_judge_classifier`
rebuilds it), its
colour read as the set of RGB channels above half of its brightness (the seven colours of
the grammar are exactly the seven non-empty sets), its place as the centre of its bounding box.

The six tasks and their pass rules (for the demo grammar of :mod:`arpg.demo.scenes`):

==============  ===============================  ===================================================
task            prompt                           passes when
==============  ===============================  ===================================================
single_object   "a cat"                          an object is a cat
two_object      "a cat and a dog"                a cat and a dog are found
counting        "two cats"                       exactly two objects are cats
colors          "a red cat"                      a cat is red
position        "a cat to the left of a dog"     a cat's centre is >= 8 px (1/8 of the canvas) left
                                                 of a dog's (right of / above / below alike)
color_attr      "a red cat and a blue dog"       a cat is red and a dog is blue
==============  ===============================  ===================================================

Two more columns use prompts naming a *held-out* (colour, animal) pair (never in the training scenes):
``colors_heldout`` and ``color_attr_heldout``. :func:`evaluate` reports a model at several step counts, a
floor (the same images judged against prompts shuffled within each task: what a model that ignores the text
would score) and a ceiling (real renders of the prompts, from the held-out Animal-MNIST silhouettes, through
the tokenizer; and the raw renders).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..data.animal_mnist import CLASS_NAMES
from ..errors import ARPGError
from ..util.images import from_uint8, to_uint8
from .classifier import SmallCNN, load_classifier
from .scenes import CANVAS, COLOURS, HELDOUT_PAIRS, RELATIONS, Prompt, Silhouettes, Thing, caption, render

THRESHOLD = 64  # a pixel is lit when its brightest channel exceeds this (of 255)
MIN_AREA = 20  # smaller groups of lit pixels are specks, not objects
MARGIN = CANVAS / 8  # how far apart two centres must be for "to the left of" / "above"
JUDGE_CLASSIFIER = "t2i_judge_classifier.safetensors"  # in the shipped weights folder
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
HELDOUT_TASKS = ("colors_heldout", "color_attr_heldout")
_PATTERNS = {tuple(bool(v) for v in rgb): name for name, rgb in COLOURS.items()}


@dataclass(frozen=True)
class Found:
    """One object the judge found: class, colour (None when it matches no colour), centre, area."""

    animal: str
    colour: str | None
    x: float
    y: float
    area: int


def _groups(lit: np.ndarray) -> np.ndarray:
    """Labels [H, W] (0 = background) of the lit pixels grown by one pixel (a 3x3 dilation), 8-connected:
    two lit pixels with at most two dark pixels between them share a label (the scenes leave at least four
    between animals). Min-label propagation until stable (vectorised; a 64x64 canvas is small)."""
    h, w = lit.shape
    grown = lit.copy()
    padded = np.pad(lit, 1)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            grown |= padded[dy:dy + h, dx:dx + w]
    big = np.iinfo(np.int32).max
    labels = np.where(grown, np.arange(1, h * w + 1, dtype=np.int32).reshape(h, w), big)
    while True:
        p = np.pad(labels, 1, constant_values=big)
        best = labels.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                best = np.minimum(best, p[dy:dy + h, dx:dx + w])
        best = np.where(grown, best, big)
        if np.array_equal(best, labels):
            break
        labels = best
    return np.where(grown, labels, 0)


def _crop32(intensity: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The object's intensity in ``region`` (its lit pixels and their faint rim, which the classifier needs),
    cropped to its box and centred on a 32x32 canvas (scaled down if bigger)."""
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    tile = np.where(region, intensity, 0)[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.uint8)
    h, w = tile.shape
    if max(h, w) > 32:  # not a silhouette (those are at most 28 px, 30 with the rim): fit it in anyway
        s = 32 / max(h, w)
        tile = np.asarray(Image.fromarray(tile).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR))
        h, w = tile.shape
    out = np.zeros((32, 32), dtype=np.uint8)
    y, x = (32 - h) // 2, (32 - w) // 2
    out[y:y + h, x:x + w] = tile
    return out


def object_crops(images: np.ndarray) -> tuple[list[np.ndarray], list[int], list[tuple]]:
    """Every object of uint8 images [N, H, W, 3]: its 32x32 crop, the image it is in, and (colour, centre x,
    centre y, area)."""
    crops, owners, facts = [], [], []
    for n, img in enumerate(images):
        intensity = img.max(axis=2)
        lit = intensity > THRESHOLD
        labels = _groups(lit)
        for k in np.unique(labels[labels > 0]):
            region = labels == k
            pixels = region & lit
            area = int(pixels.sum())
            if area < MIN_AREA:
                continue
            rgb = img[pixels].astype(np.float64) / np.maximum(intensity[pixels], 1)[:, None]
            colour = _PATTERNS.get(tuple(bool(v) for v in rgb.mean(0) > 0.5))
            ys, xs = np.flatnonzero(pixels.any(1)), np.flatnonzero(pixels.any(0))
            crops.append(_crop32(intensity, region))
            owners.append(n)
            facts.append((colour, (xs[0] + xs[-1] + 1) / 2, (ys[0] + ys[-1] + 1) / 2, area))
    return crops, owners, facts


#: Test-time augmentation of :func:`classify`: these shifts (pixels) of each crop, and their mirror images.
SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2), (1, 1), (-1, -1), (1, -1), (-1, 1))


@torch.no_grad()
def classify(classifier: SmallCNN, crops: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class ids of uint8 crops [N, 32, 32]: the class of the mean probability over :data:`SHIFTS` and their
    mirrors (an animal may face either way; held-out silhouettes: 0.979 from one view, 0.984 averaged)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).float().div(255).unsqueeze(1)
    out = []
    for i in range(0, len(x), batch_size):
        views = [torch.roll(x[i:i + batch_size], s, dims=(2, 3)) for s in SHIFTS]
        views += [torch.flip(v, dims=(3,)) for v in views]
        out.append(sum(classifier(v).softmax(1) for v in views).argmax(1))
    return torch.cat(out).numpy()


def find_objects(images: np.ndarray, classifier: SmallCNN) -> list[list[Found]]:
    """The objects of each uint8 image [N, H, W, 3]."""
    crops, owners, facts = object_crops(images)
    found: list[list[Found]] = [[] for _ in range(len(images))]
    if crops:
        classes = classify(classifier, np.stack(crops)).tolist()
        for n, c, (colour, cx, cy, area) in zip(owners, classes, facts):
            found[n].append(Found(CLASS_NAMES[c], colour, float(cx), float(cy), area))
    return found


def _matches(obj: Found, thing: Thing) -> bool:
    return obj.animal == thing.animal and (thing.colour is None or obj.colour == thing.colour)


def _related(a: Found, b: Found, relation: str) -> bool:
    if relation == "and":
        return True
    dx, dy = b.x - a.x, b.y - a.y  # from a to b
    return {"left": dx >= MARGIN, "right": -dx >= MARGIN, "above": dy >= MARGIN, "below": -dy >= MARGIN}[relation]


def passes(prompt: Prompt, objects: Sequence[Found]) -> bool:
    """Whether an image with ``objects`` satisfies ``prompt`` (the rules of the table above)."""
    if prompt.form == "one":
        return any(_matches(o, prompt.first) for o in objects)
    if prompt.form == "two":
        same = [o for o in objects if o.animal == prompt.first.animal]
        return len(same) == 2 and all(_matches(o, prompt.first) for o in same)
    return any(_matches(a, prompt.first) and _matches(b, prompt.second) and _related(a, b, prompt.relation)
               for i, a in enumerate(objects) for j, b in enumerate(objects) if i != j)


def judge_prompts(per_task: int = 50, seed: int = 0) -> dict[str, list[Prompt]]:
    """The fixed prompt set: ``per_task`` prompts for each of :data:`TASKS` (no held-out pair anywhere) and
    for each of :data:`HELDOUT_TASKS` (every prompt names a held-out pair). Two-animal prompts name two
    different animals, as GenEval's do."""
    rng = np.random.default_rng([seed, 7])
    heldout = set(HELDOUT_PAIRS)
    animals, colours, relations = list(CLASS_NAMES), list(COLOURS), [r for r in RELATIONS if r != "and"]

    def animal() -> str:
        return animals[int(rng.integers(len(animals)))]

    def two_animals() -> tuple[str, str]:
        a, b = rng.choice(len(animals), size=2, replace=False)
        return animals[int(a)], animals[int(b)]

    def seen_colour(a: str) -> str:
        options = [c for c in colours if (c, a) not in heldout]
        return options[int(rng.integers(len(options)))]

    def held(i: int) -> Thing:
        colour, a = HELDOUT_PAIRS[i % len(HELDOUT_PAIRS)]
        return Thing(a, colour)

    out: dict[str, list[Prompt]] = {t: [] for t in TASKS + HELDOUT_TASKS}
    for i in range(per_task):
        out["single_object"].append(Prompt("one", Thing(animal())))
        a, b = two_animals()
        out["two_object"].append(Prompt("pair", Thing(a), Thing(b), "and"))
        out["counting"].append(Prompt("two", Thing(animal())))
        a = animal()
        out["colors"].append(Prompt("one", Thing(a, seen_colour(a))))
        a, b = two_animals()
        out["position"].append(Prompt("pair", Thing(a), Thing(b), relations[int(rng.integers(len(relations)))]))
        a, b = two_animals()
        out["color_attr"].append(Prompt("pair", Thing(a, seen_colour(a)), Thing(b, seen_colour(b)), "and"))
        out["colors_heldout"].append(Prompt("one", held(i)))
        h = held(i)
        b = animals[int(rng.integers(len(animals)))]
        while b == h.animal:
            b = animal()
        other = Thing(b, seen_colour(b))
        pair = (h, other) if rng.integers(2) == 0 else (other, h)
        out["color_attr_heldout"].append(Prompt("pair", *pair, "and"))
    return out


def score(prompts: dict[str, list[Prompt]], found: dict[str, list[list[Found]]],
          shuffle_seed: int | None = None) -> dict[str, float]:
    """Fraction passing per task and ``overall`` (mean over :data:`TASKS`); with ``shuffle_seed`` each image is
    judged against another prompt of its task (a random derangement): the floor."""
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    out = {}
    for task, ps in prompts.items():
        order = np.arange(len(ps))
        if rng is not None and len(ps) > 1:  # a random cyclic derangement: no image keeps its own prompt
            p = rng.permutation(len(ps))
            order[p] = np.roll(p, 1)
        out[task] = float(np.mean([passes(ps[int(j)], objs) for j, objs in zip(order, found[task])]))
    out["overall"] = float(np.mean([out[t] for t in TASKS if t in out]))
    return out


def real_renders(prompts: dict[str, list[Prompt]], seed: int = 0) -> dict[str, np.ndarray]:
    """A render of every prompt from the held-out Animal-MNIST silhouettes (uint8 [N, 64, 64, 3] per task)."""
    rng = np.random.default_rng([seed, 11])
    sil = Silhouettes("heldout")
    return {t: np.stack([render(p, rng, sil, heldout=True)[0] for p in ps]) for t, ps in prompts.items()}


def through_tokenizer(images: np.ndarray, tokenizer, batch_size: int = 256) -> np.ndarray:
    """Encode and decode uint8 images with the VQ tokenizer (what a perfect model could at best produce)."""
    out = []
    device = next(tokenizer.parameters()).device
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            codes = tokenizer.encode(from_uint8(images[i:i + batch_size]).to(device))
            out.append(to_uint8(tokenizer.decode(codes)))
    return np.concatenate(out)


def generate_images(model, tokenizer, encoder, prompts: dict[str, list[Prompt]], sampling, seed: int,
                    batch_size: int = 128) -> dict[str, np.ndarray]:
    """Images of every prompt (one each), with ``sampling``, a generator seeded per task."""
    from ..sampling import generate

    out = {}
    grid = (model.config.grid_size,) * 2
    for k, (task, ps) in enumerate(prompts.items()):
        gen = torch.Generator(device=model.embeddings.weight.device).manual_seed(seed * 1000 + k)
        codes = generate(model, prompts=[caption(p) for p in ps], text_encoder=encoder, sampling=sampling,
                         generator=gen, batch_size=batch_size, progress=False)
        with torch.no_grad():
            out[task] = to_uint8(tokenizer.decode(codes, grid=grid, batch_size=batch_size))
    return out


def evaluate(model, tokenizer, encoder, classifier: SmallCNN, *, per_task: int = 50, steps: Sequence[int] = (8, 16, 32),
             seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """The judge's table for ``model``: its recommended settings, each of ``steps`` (others as recommended),
    the shuffled-prompt floor (at the recommended settings) and the ceilings."""
    from ..sampling.recipes import recommended_sampling

    prompts = judge_prompts(per_task, seed)
    base = recommended_sampling(model)
    rows: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    settings = [(f"recipe ({base.steps} steps)", base)] + [
        (f"{s} steps", base.replace(steps=s)) for s in steps if s != base.steps]
    for name, sampling in settings:
        t = time.perf_counter()
        images = generate_images(model, tokenizer, encoder, prompts, sampling, seed)
        seconds[name] = round(time.perf_counter() - t, 1)
        found = {task: find_objects(im, classifier) for task, im in images.items()}
        rows[name] = score(prompts, found)
        log(f"{name}: overall {rows[name]['overall']:.3f} ({seconds[name]} s)")
        if sampling is base:
            rows["floor: prompts shuffled"] = score(prompts, found, shuffle_seed=seed + 1)
    renders = real_renders(prompts, seed)
    rows["ceiling: renders through the tokenizer"] = score(
        prompts, {t: find_objects(through_tokenizer(im, tokenizer), classifier) for t, im in renders.items()})
    rows["real renders"] = score(prompts, {t: find_objects(im, classifier) for t, im in renders.items()})
    return {"per_task": per_task, "seed": seed, "sampling": base.to_dict(), "rows": rows, "generate_seconds": seconds}


def sweep(model, tokenizer, encoder, classifier: SmallCNN, settings: Sequence[dict], *, per_task: int = 30,
          seed: int = 1, log: Callable[[str], None] = print) -> list[dict]:
    """The judge's scores for each of ``settings`` (changes to the recommended sampling), on the prompt set of
    ``seed`` (a different one from the reported table's, so choosing a recipe does not fit the report)."""
    from ..sampling.recipes import recommended_sampling

    prompts = judge_prompts(per_task, seed)
    base = recommended_sampling(model)
    rows = []
    for change in settings:
        sampling = base.replace(**change)
        images = generate_images(model, tokenizer, encoder, prompts, sampling, seed)
        row = {**change, **score(prompts, {t: find_objects(im, classifier) for t, im in images.items()})}
        rows.append(row)
        log(f"sweep {change}: overall {row['overall']:.3f}")
    return rows


def markdown_table(result: dict) -> str:
    cols = ["overall", *TASKS, *HELDOUT_TASKS]
    lines = ["| setting | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - exercised by the demo's retraining
    from .assets import WEIGHTS_DIR, load_t2i
    from ..sampling.text_folder import text_encoder_for

    p = argparse.ArgumentParser(prog="python -m arpg.demo.t2i_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a text-to-image model (default: the shipped demo)")
    p.add_argument("--tokenizer", help="its tokenizer (default: the shipped demo's)")
    p.add_argument("--text-encoder", help="its prompt encoder (default: the one the model names)")
    p.add_argument("--per-task", type=int, default=100, help="prompts per task (default 100)")
    p.add_argument("--steps", type=int, nargs="*", default=[8, 16, 32], help="step counts to report (default 8 16 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("t2i_quality"), help="folder for judge.json / judge.md")
    args = p.parse_args(argv)
    if args.per_task < 1:
        raise ARPGError("--per-task must be >= 1")
    torch.set_grad_enabled(False)
    model, tok = load_t2i("cpu", args.model, args.tokenizer)
    encoder = text_encoder_for(model, args.text_encoder, "cpu")
    classifier = load_classifier(WEIGHTS_DIR / JUDGE_CLASSIFIER)
    result = evaluate(model, tok, encoder, classifier, per_task=args.per_task, steps=args.steps, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "judge.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown_table(result)
    (args.out / "judge.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
