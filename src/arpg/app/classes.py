"""Class names for the app's pickers, and the bundled held-out examples.

Names come from, in order: a file the user gives (one name per line, or a JSON list), the Animal-MNIST names
for the shipped demo model, the ImageNet-1k names (``imagenet_classes.json``, in class-id order) for
1000-class models, else ``class 0``, ``class 1``, ...
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.animal_mnist import CLASS_NAMES, load_split, padded
from ..errors import ARPGError

IMAGENET_FILE = Path(__file__).with_name("imagenet_classes.json")


def imagenet_names() -> list[str]:
    return json.loads(IMAGENET_FILE.read_text())["names"]


def read_names(path: str | Path, num_classes: int) -> list[str]:
    """Names from a text file (one per line) or a JSON list; exactly ``num_classes`` of them."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ARPGError(f"cannot read class names {p}: {e.strerror or e}") from None
    if p.suffix == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise ARPGError(f"class names {p} is not valid JSON: {e.msg} (line {e.lineno})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ARPGError(f"class names {p} must hold a JSON list of strings")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise ARPGError(f"class names {p} has {len(names)} names; the model has {num_classes} classes")
    return names


def class_names(num_classes: int, *, is_demo: bool = False, names_file: str | Path | None = None) -> list[str]:
    if names_file is not None:
        return read_names(names_file, num_classes)
    if is_demo and num_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    if num_classes == 1000:
        return imagenet_names()
    return [f"class {i}" for i in range(num_classes)]


def demo_examples(per_class: int = 1) -> list[tuple[str, np.ndarray, int]]:
    """Held-out Animal-MNIST images (never seen in training), ``per_class`` of each class, 32x32x1 uint8;
    empty when the bundled data set is not installed."""
    try:
        images, labels = load_split("heldout")
    except ARPGError:
        return []
    out = []
    for c, name in enumerate(CLASS_NAMES):
        for k, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            out.append((f"{name} {k + 1}" if per_class > 1 else name, padded(images[i:i + 1])[0], c))
    return out
