"""Saving images and image grids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile uint8 images [N, H, W, C] into one uint8 image, ``ncol`` per row (default ~sqrt(N))."""
    n, h, w, c = images.shape
    ncol = ncol or max(1, int(np.ceil(np.sqrt(n))))
    nrow = int(np.ceil(n / ncol))
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    return out


def to_pil(image: np.ndarray, scale: int = 1) -> Image.Image:
    """uint8 [H, W, C] (C = 1 or 3) to a PIL image, optionally enlarged with nearest-neighbour pixels."""
    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_images(images: np.ndarray, out_dir: str | os.PathLike, prefix: str = "", start: int = 0) -> list[Path]:
    """Write each uint8 image [N, H, W, C] as ``{prefix}{index:06d}.png``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = out_dir / f"{prefix}{start + i:06d}.png"
        to_pil(img).save(p)
        paths.append(p)
    return paths
