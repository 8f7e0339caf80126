"""ImageNet-style image folders: ``ROOT/<class_name>/<image>``, classes sorted by name -> labels 0..C-1."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from ..errors import ARPGError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def scan_image_folder(root: str | os.PathLike) -> tuple[list[tuple[str, int]], list[str]]:
    """Return ``(samples, class_names)``; ``samples`` is ``[(path, label), ...]`` in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise ARPGError(f"image folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ARPGError(f"{root} has no class sub-folders (expected ROOT/<class>/<image files>)")
    samples = []
    for label, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / name)):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((os.path.join(dirpath, f), label))
    if not samples:
        raise ARPGError(f"{root} has class folders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    return samples, classes


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as RGB; raises :class:`ARPGError` for unreadable files (callers may skip them)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:  # PIL raises many types for truncated / foreign files
        raise ARPGError(f"unreadable image {path}: {type(e).__name__}: {str(e)[:120]}") from None
