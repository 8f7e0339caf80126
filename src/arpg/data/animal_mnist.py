"""The bundled data set: Animal-MNIST (PyPI ``animal-mnist`` 0.4).

10 classes x 1000 grayscale 28x28 silhouettes, stored sorted by class in two gzip-pickled numpy arrays
inside the package. We read the two files through :mod:`importlib.resources` with a restricted unpickler
that only rebuilds numpy arrays (the package's own loader imports TensorFlow, which we never do).

Split (fixed, documented): within each class, images are shuffled with ``numpy.random.default_rng(0)``;
the first 900 are ``train`` and the last 100 are ``heldout``. Install: ``pip install --no-deps animal-mnist==0.4``
(``scripts/setup.sh`` does this).
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import io
import pickle

import numpy as np

from ..errors import ARPGError

CLASS_NAMES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
PER_CLASS = 1000
TRAIN_PER_CLASS = 900
HELDOUT_PER_CLASS = PER_CLASS - TRAIN_PER_CLASS
SPLIT_SEED = 0
_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and refuses every other global, so a tampered file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core", 1) if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read(name: str) -> np.ndarray:
    try:
        root = importlib.resources.files("animal_mnist") / "data" / "Animal_MNIST" / name
        raw = root.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise ARPGError("the bundled data set needs the package 'animal-mnist' 0.4: "
                        "pip install --no-deps animal-mnist==0.4 (scripts/setup.sh installs it)") from None
    return np.asarray(_NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(raw))).load())


@functools.lru_cache(maxsize=1)
def load_all() -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 images (uint8 [N, 28, 28]) and labels (int64 [N]), in the package's order."""
    images = _read(_FILES[0])
    labels = _read(_FILES[1]).astype(np.int64).reshape(-1)
    if images.dtype != np.uint8:
        images = np.clip(images, 0, 255).astype(np.uint8)
    images = images.reshape(-1, 28, 28)
    if len(images) != len(labels):
        raise ARPGError(f"animal-mnist files disagree: {len(images)} images vs {len(labels)} labels")
    return images, labels


def split_indices(split: str) -> np.ndarray:
    """Indices into :func:`load_all` for ``"train"`` (900 per class) or ``"heldout"`` (100 per class)."""
    if split not in ("train", "heldout", "all"):
        raise ARPGError(f"unknown split {split!r}; choose train, heldout or all")
    _, labels = load_all()
    if split == "all":
        return np.arange(len(labels))
    rng = np.random.default_rng(SPLIT_SEED)
    out = []
    for c in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        out.append(idx[:TRAIN_PER_CLASS] if split == "train" else idx[TRAIN_PER_CLASS:])
    return np.concatenate(out)


def load_split(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of one split (sorted by class)."""
    images, labels = load_all()
    idx = split_indices(split)
    return images[idx], labels[idx]


DEMO_IMAGE_SIZE = 32


def padded(images: np.ndarray, size: int = DEMO_IMAGE_SIZE) -> np.ndarray:
    """Pad 28x28 silhouettes with background (0) to ``size x size`` and add a channel axis: uint8 [N, s, s, 1].

    Padding (not resizing) keeps the pixels exact; 32 = 28 + 2 + 2 is a multiple of the demo tokenizer's 4x.
    """
    if size < 28:
        raise ARPGError(f"image size must be >= 28 for Animal-MNIST, got {size}")
    lo = (size - 28) // 2
    out = np.zeros((len(images), size, size, 1), dtype=np.uint8)
    out[:, lo:lo + 28, lo:lo + 28, 0] = images
    return out
