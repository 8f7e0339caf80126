"""The judge's classifier for the text-to-image demo (:mod:`arpg.demo.t2i_quality`), and how it is rebuilt.

``python -m arpg.demo.t2i_classifier TOKENIZER OUT.safetensors`` trains it (12 epochs of the demo's small CNN,
about 10 minutes on 2 CPU cores) and prints its held-out accuracy.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ..data.animal_mnist import load_split
from .classifier import SmallCNN, predict, save_classifier, train_classifier
from .scenes import CANVAS, COLOURS
from .t2i_quality import _crop32, object_crops, through_tokenizer


def _redrawn(split: str, tokenizer, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each silhouette of ``split`` drawn alone in a random colour and place, encoded and decoded by
    ``tokenizer``, and cropped as the judge crops objects: (crops [N, 32, 32, 1], labels [N])."""
    x, y = load_split(split)
    rng = np.random.default_rng([seed, 5])
    crops, labels = [], []
    for start in range(0, len(y), 500):
        scenes = []
        for img in x[start:start + 500]:
            on = img > 0
            rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
            tile = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            canvas = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)
            top, left = (int(rng.integers(0, CANVAS - s + 1)) for s in tile.shape)
            tint = np.asarray(list(COLOURS.values())[int(rng.integers(len(COLOURS)))], dtype=np.uint8)
            canvas[top:top + tile.shape[0], left:left + tile.shape[1]] = tile[:, :, None] * tint
            scenes.append(canvas)
        got, owners, facts = object_crops(through_tokenizer(np.stack(scenes), tokenizer))
        best: dict[int, tuple[int, np.ndarray]] = {}
        for crop, n, f in zip(got, owners, facts):  # the largest object of each scene (specks aside)
            if n not in best or f[3] > best[n][0]:
                best[n] = (f[3], crop)
        for n, (_, crop) in best.items():
            crops.append(crop)
            labels.append(y[start + n])
    return np.stack(crops)[..., None], np.asarray(labels)


def train_judge_classifier(tokenizer=None, epochs: int = 12, seed: int = 0,
                           progress: bool = True) -> tuple[SmallCNN, dict[str, float]]:
    """The judge's classifier: the demo's small CNN trained on the train-split silhouettes cropped and centred
    (each silhouette's own pixels cropped to their box and centred on 32x32, as :func:`object_crops` presents
    an object) and, with ``tokenizer``, the same silhouettes as the tokenizer
    redraws them (its 8x8 codes keep an animal's shape but smooth fine texture such as a zebra's stripes, which
    a classifier of raw silhouettes leans on). Returns it and its held-out accuracy on raw and redrawn crops."""
    def centred(images: np.ndarray) -> np.ndarray:
        return np.stack([_crop32(im, im > 0) for im in images])[..., None]
    x, y = load_split("train")
    xs, ys = [centred(x)], [y]
    if tokenizer is not None:
        rx, ry = _redrawn("train", tokenizer, seed)
        xs.append(rx)
        ys.append(ry)
    model = train_classifier(np.concatenate(xs), np.concatenate(ys), epochs=epochs, seed=seed, progress=progress)
    xh, yh = load_split("heldout")
    accuracy = {"heldout_raw": float((predict(model, centred(xh))[0] == yh).mean())}
    if tokenizer is not None:
        rx, ry = _redrawn("heldout", tokenizer, seed)
        accuracy["heldout_redrawn"] = float((predict(model, rx)[0] == ry).mean())
    return model, accuracy


def main() -> None:  # pragma: no cover - a 10-minute training run
    from ..vq import load_tokenizer

    model, accuracy = train_judge_classifier(load_tokenizer(sys.argv[1]))
    save_classifier(model, sys.argv[2])
    print(json.dumps(accuracy))


if __name__ == "__main__":  # pragma: no cover
    main()
