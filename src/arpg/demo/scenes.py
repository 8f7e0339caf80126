"""The compositional caption set of the text-to-image demo: Animal-MNIST scenes and a small caption grammar.

A *scene* is one or two animal silhouettes (the 10 Animal-MNIST classes) on a black 64x64 RGB canvas, each
tinted with one of seven pure colours (the silhouette's intensity times the colour's RGB value), placed side by
side or one above the other. Its caption comes from a small grammar with three forms::

    a red cat / an elephant                                  (one animal, colour optional)
    two zebras / two blue sheep                              (two of one animal)
    a blue dog to the left of a yellow horse                 (two animals and a relation:
    a cow above a sheep / a red bird and a cat                "to the left of", "to the right of",
                                                              "above", "below" or "and")

:func:`caption` and :func:`parse` are exact inverses on every :class:`Prompt`; :func:`render` draws a scene
that satisfies a prompt. A colour the caption leaves out is drawn at random, and "and" / "two" scenes are
arranged either way, so captions describe their images without fixing every pixel.

Held-out pairs: :data:`HELDOUT_PAIRS` are seven (colour, animal) pairs that never appear in the training scenes
(not even uncaptioned), so the judge (:mod:`arpg.demo.t2i_quality`) can measure whether the model composes a
colour with an animal it has only seen in other colours. Training scenes use the Animal-MNIST train split;
the judge's real renders use the held-out split.

``python -m arpg.demo.scenes OUT --num 24000`` writes ``OUT/images/*.png`` and ``OUT/metadata.jsonl``
(``file_name``, ``text`` and the scene's objects), the layout ``arpg extract-codes --captions`` reads. The
set is a pure function of ``--num``, ``--split`` and ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.animal_mnist import CLASS_NAMES, load_split
from ..errors import ARPGError

CANVAS = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0),
    "cyan": (0, 1, 1), "magenta": (1, 0, 1), "white": (1, 1, 1),
}
PLURALS = {name: ("sheep" if name == "sheep" else name + "s") for name in CLASS_NAMES}
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below", "and": "and"}
#: (colour, animal) pairs kept out of every training scene: one per colour, seven different animals.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "horse"), ("green", "cat"), ("blue", "elephant"), ("yellow", "dog"),
    ("cyan", "zebra"), ("magenta", "bear"), ("white", "sheep"),
)
# How the training captions are drawn: form weights, and how often a colour is left out of a caption.
FORM_WEIGHTS = {"one": 0.3, "two": 0.15, "pair": 0.55}
DROP_COLOUR = 0.2
GAP = 4  # pixels always left between two animals, so the judge can tell them apart


@dataclass(frozen=True)
class Thing:
    animal: str
    colour: str | None = None


@dataclass(frozen=True)
class Prompt:
    """What a caption says: ``form`` "one" (``first``), "two" (two of ``first``) or "pair" (``first``
    ``relation`` ``second``, relation one of :data:`RELATIONS`)."""

    form: str
    first: Thing
    second: Thing | None = None
    relation: str | None = None

    def things(self) -> list[Thing]:
        return [self.first] if self.form == "one" else [self.first, self.second or self.first]


def _noun(thing: Thing, plural: bool = False) -> str:
    name = PLURALS[thing.animal] if plural else thing.animal
    return f"{thing.colour} {name}" if thing.colour else name


def _with_article(thing: Thing) -> str:
    words = _noun(thing)
    return ("an " if words[0] in "aeiou" else "a ") + words


def caption(prompt: Prompt) -> str:
    """The sentence for ``prompt`` (the inverse of :func:`parse`)."""
    if prompt.form == "one":
        return _with_article(prompt.first)
    if prompt.form == "two":
        return "two " + _noun(prompt.first, plural=True)
    return f"{_with_article(prompt.first)} {RELATIONS[prompt.relation]} {_with_article(prompt.second)}"


_COLOUR = "|".join(COLOURS)
_ANIMAL = "|".join(CLASS_NAMES)
_PLURAL = "|".join(sorted(set(PLURALS.values())))
_THING = rf"an? (?:({_COLOUR}) )?({_ANIMAL})"
_RELATION = "|".join(re.escape(r) for r in RELATIONS.values())
_FORMS = (
    ("one", re.compile(rf"^{_THING}$")),
    ("two", re.compile(rf"^two (?:({_COLOUR}) )?({_PLURAL})$")),
    ("pair", re.compile(rf"^{_THING} ({_RELATION}) {_THING}$")),
)


def parse(text: str) -> Prompt:
    """The :class:`Prompt` a caption of the grammar says; one-line :class:`ARPGError` otherwise."""
    words = " ".join(re.findall(r"[a-z]+", text.lower()))  # case, spacing and punctuation do not matter
    for form, pattern in _FORMS:
        m = pattern.match(words)
        if not m:
            continue
        if form == "one":
            return Prompt("one", Thing(m.group(2), m.group(1)))
        if form == "two":
            animal = next(a for a, p in PLURALS.items() if p == m.group(2))
            return Prompt("two", Thing(animal, m.group(1)))
        relation = next(k for k, v in RELATIONS.items() if v == m.group(3))
        return Prompt("pair", Thing(m.group(2), m.group(1)), Thing(m.group(5), m.group(4)), relation)
    raise ARPGError(f"{text!r} is not a caption of the demo grammar (e.g. 'a red cat', 'two zebras', "
                    "'a blue dog to the left of a yellow horse')")


def t2i_examples() -> list[str]:
    """Example prompts of the grammar (the app's list), two of them naming held-out pairs."""
    return ["a red cat", "two zebras", "a blue dog to the left of a yellow horse", "a white cow above a green sheep",
            "an elephant and a giraffe", "a magenta bird below a cyan bear", "two yellow sheep",
            "a red horse", "a cat to the right of a white sheep"]


def allowed_colours(animal: str, heldout: bool) -> list[str]:
    """The colours an ``animal`` may be drawn in: all but its held-out pair in training (``heldout=False``)."""
    return [c for c in COLOURS if heldout or (c, animal) not in HELDOUT_PAIRS]


def prompt_facts(prompt: Prompt) -> dict[str, int]:
    """What a caption says, as class ids (the targets the demo's word encoder learns to read back)."""
    colours, animals, relations = [None, *COLOURS], [None, *CLASS_NAMES], [None, *RELATIONS]
    second = prompt.second if prompt.form == "pair" else None
    return {"form": ("one", "two", "pair").index(prompt.form), "relation": relations.index(prompt.relation),
            "first_animal": animals.index(prompt.first.animal), "first_colour": colours.index(prompt.first.colour),
            "second_animal": animals.index(second.animal if second else None),
            "second_colour": colours.index(second.colour if second else None)}


# ---------------------------------------------------------------------------------------------- rendering

class Silhouettes:
    """The Animal-MNIST silhouettes of one split, cropped to their bounding boxes, by class name."""

    def __init__(self, split: str = "train"):
        images, labels = load_split(split)
        self.split = split
        self.by_class: dict[str, list[np.ndarray]] = {name: [] for name in CLASS_NAMES}
        for img, label in zip(images, labels):
            on = img > 0
            rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
            if len(rows):
                self.by_class[CLASS_NAMES[label]].append(img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])

    def pick(self, animal: str, rng: np.random.Generator) -> np.ndarray:
        pool = self.by_class[animal]
        return pool[int(rng.integers(len(pool)))]


def _slots(arrangement: str, shapes: list[tuple[int, int]], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners for silhouettes of ``shapes`` (h, w): "single" anywhere, "row" first left of second,
    "column" first above second; two animals always at least :data:`GAP` pixels apart."""
    def free(lo: int, hi: int, size: int) -> int:  # a start in [lo, hi - size]
        return int(rng.integers(lo, max(lo, hi - size) + 1))
    if arrangement == "single":
        (h, w), = shapes
        return [(free(0, CANVAS, h), free(0, CANVAS, w))]
    half = (CANVAS - GAP) // 2
    (h1, w1), (h2, w2) = shapes
    if arrangement == "row":
        return [(free(0, CANVAS, h1), free(0, half, w1)), (free(0, CANVAS, h2), free(half + GAP, CANVAS, w2))]
    return [(free(0, half, h1), free(0, CANVAS, w1)), (free(half + GAP, CANVAS, h2), free(0, CANVAS, w2))]


def render(prompt: Prompt, rng: np.random.Generator, silhouettes: Silhouettes,
           heldout: bool = False) -> tuple[np.ndarray, list[dict]]:
    """A uint8 [64, 64, 3] scene satisfying ``prompt`` and its objects (animal, colour, centre x/y).

    Colours the prompt leaves out are drawn from :func:`allowed_colours` (``heldout=False`` never draws a
    held-out pair); a prompt that names a held-out pair is drawn as asked."""
    things = prompt.things()
    colours = []
    for t in things:
        if t.colour is not None:  # "two red cats": both red
            colours.append(t.colour)
        else:
            options = allowed_colours(t.animal, heldout)
            colours.append(options[int(rng.integers(len(options)))])
    tiles = [silhouettes.pick(t.animal, rng) for t in things]
    if len(things) == 1:
        arrangement, order = "single", [0]
    elif prompt.relation in ("left", "right"):
        arrangement, order = "row", ([0, 1] if prompt.relation == "left" else [1, 0])
    elif prompt.relation in ("above", "below"):
        arrangement, order = "column", ([0, 1] if prompt.relation == "above" else [1, 0])
    else:  # "two" and "and": either way round
        arrangement = ("row", "column")[int(rng.integers(2))]
        order = [0, 1] if rng.integers(2) == 0 else [1, 0]
    corners = _slots(arrangement, [tiles[i].shape for i in order], rng)
    canvas = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)
    objects = []
    for i, (y, x) in zip(order, corners):
        tile = tiles[i]
        h, w = tile.shape
        tint = np.asarray(COLOURS[colours[i]], dtype=np.uint8)
        canvas[y:y + h, x:x + w] = np.maximum(canvas[y:y + h, x:x + w], tile[:, :, None] * tint)
        objects.append({"animal": things[i].animal, "colour": colours[i], "x": x + w / 2, "y": y + h / 2})
    return canvas, objects


def random_prompt(rng: np.random.Generator, heldout: bool = False) -> Prompt:
    """A prompt drawn as the training captions are (forms by :data:`FORM_WEIGHTS`, colours left out with
    probability :data:`DROP_COLOUR`; without ``heldout`` never a held-out pair)."""
    forms = list(FORM_WEIGHTS)
    form = forms[int(rng.choice(len(forms), p=list(FORM_WEIGHTS.values())))]

    def thing(animal: str | None = None) -> Thing:
        animal = animal or CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
        options = allowed_colours(animal, heldout)
        colour = None if rng.random() < DROP_COLOUR else options[int(rng.integers(len(options)))]
        return Thing(animal, colour)

    if form != "pair":
        return Prompt(form, thing())
    first = thing()
    second = thing(CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))])
    relations = list(RELATIONS)
    return Prompt("pair", first, second, relations[int(rng.integers(len(relations)))])


def write_scene_set(out: str | Path, num: int, split: str = "train", seed: int = 0,
                    progress: bool = True) -> Path:
    """Render ``num`` captioned scenes into ``out`` (``images/NNNNNN.png`` + ``metadata.jsonl``).

    Deterministic in (``num``, ``split``, ``seed``); a finished set (same metadata) is left as it is."""
    if num < 1:
        raise ARPGError(f"--num must be >= 1 (got {num})")
    out = Path(out)
    meta_path = out / "metadata.jsonl"
    stamp = {"num": num, "split": split, "seed": seed, "canvas": CANVAS}
    if (out / "scene_set.json").is_file() and json.loads((out / "scene_set.json").read_text()) == stamp \
            and meta_path.is_file():
        return out
    if split not in ("train", "heldout"):
        raise ARPGError(f"split must be train or heldout (got {split!r})")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "scene_set.json").unlink(missing_ok=True)  # written last: a half-rendered set never looks finished
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    sil = Silhouettes(split)
    heldout = split != "train"
    lines = []
    for i in tqdm(range(num), desc="scenes", disable=not progress):
        prompt = random_prompt(rng, heldout)
        image, objects = render(prompt, rng, sil, heldout)
        name = f"images/{i:06d}.png"
        Image.fromarray(image).save(out / name)
        lines.append(json.dumps({"file_name": name, "text": caption(prompt), "objects": objects}))
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(meta_path)
    (out / "scene_set.json").write_text(json.dumps(stamp))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m arpg.demo.scenes", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder (images/ and metadata.jsonl)")
    p.add_argument("--num", type=int, default=24000, help="scenes to render (default 24000)")
    p.add_argument("--split", choices=("train", "heldout"), default="train",
                   help="Animal-MNIST split the silhouettes come from (default train)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    write_scene_set(args.out, args.num, args.split, args.seed)
    print(f"{args.num} scenes -> {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
