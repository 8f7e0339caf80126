"""Pixel masks (True = regenerate) and their mapping to token cells."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ARPGError


def box_mask(height: int, width: int, box: tuple[int, int, int, int] | str) -> np.ndarray:
    """Boolean mask [H, W], True inside ``box = (x0, y0, x1, y1)`` in pixels (x1, y1 exclusive)."""
    if isinstance(box, str):
        try:
            box = tuple(int(v) for v in box.split(","))
        except ValueError:
            raise ARPGError(f"--box must be x0,y0,x1,y1 in pixels, got {box!r}") from None
    if len(box) != 4:
        raise ARPGError(f"a box needs 4 numbers x0,y0,x1,y1, got {len(box)}")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ARPGError(f"box {x0},{y0},{x1},{y1} is empty or outside the image of {height}x{width} pixels "
                        "(height x width)")
    m = np.zeros((height, width), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def load_mask(mask: Any, height: int, width: int) -> np.ndarray:
    """A mask from a boolean/uint8 array, a PIL image or a PNG path (white / nonzero = regenerate)."""
    if isinstance(mask, (str, os.PathLike)):
        try:
            with Image.open(mask) as im:
                mask = np.asarray(im.convert("L")) > 127
        except (OSError, ValueError) as e:
            raise ARPGError(f"cannot read mask {mask}: {e}") from None
    elif isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) > 127
    else:
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] in (1, 3, 4):
            mask = mask[..., 0]
        mask = mask > (127 if mask.dtype == np.uint8 else 0)
    if mask.shape != (height, width):
        raise ARPGError(f"the mask is {mask.shape[0]}x{mask.shape[1]} pixels but the image is {height}x{width} "
                        "(height x width)")
    return mask


def cell_mask(pixel_mask: np.ndarray, factor: int) -> np.ndarray:
    """Cells [h, w] to regenerate: a cell is unknown if ANY of its ``factor x factor`` pixels is masked."""
    H, W = pixel_mask.shape
    if H % factor or W % factor:
        raise ARPGError(f"mask size {H}x{W} (height x width) is not a multiple of the tokenizer's factor {factor}")
    return pixel_mask.reshape(H // factor, factor, W // factor, factor).any(axis=(1, 3))
