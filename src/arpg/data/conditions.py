"""Condition maps for ControlARPG: what a condition is made of, from an image, and from a user's file.

Kinds (stored as uint8 0..255, fed to the model as floats in [0, 1]):

* ``canny``: OpenCV's Canny edges of the grayscale image at the image's size (thresholds
  :data:`CANNY_THRESHOLDS`, the common ControlNet choice), one channel, ``stride`` = pixels per grid cell.
  Needs ``opencv-python-headless`` (the ``control`` extra).
* ``layout``: the silhouette at grid resolution, one channel: a pixel is foreground when its gray level
  differs from the image border's median by more than :data:`LAYOUT_CONTRAST`, and a cell is on when more
  than half its pixels are. Made for objects on a plain background (the bundled set); for natural photos,
  pass a layout (or any other map, e.g. a depth map made elsewhere) as a file: :func:`read_condition_image`.

Maps are made per crop, from the same crop the codes come from, so ten-crop extraction stays aligned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ARPGError

CONDITION_KINDS = ("canny", "layout")
#: Kinds whose maps are binary (0 / 255): stored with 8 pixels per byte (np.packbits along the width).
BINARY_KINDS = ("canny", "layout")
CANNY_THRESHOLDS = (100, 200)
LAYOUT_CONTRAST = 32


def condition_stride(kind: str, image_size: int, grid: int) -> int:
    """Map pixels per grid cell for ``kind`` at this image size and grid."""
    check_kind(kind)
    if kind == "layout":
        return 1
    if image_size % grid:
        raise ARPGError(f"image size {image_size} is not a multiple of the grid {grid}")
    return image_size // grid


def check_kind(kind: str) -> str:
    if kind not in CONDITION_KINDS:
        raise ARPGError(f"unknown condition kind {kind!r}; choose one of {', '.join(CONDITION_KINDS)} (or pass a "
                        "map you made as an image file)")
    return kind


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.uint8)


def canny_map(image: Image.Image) -> np.ndarray:
    """Canny edges of ``image``: uint8 [1, H, W] with values 0 / 255."""
    try:
        import cv2  # optional (the control extra): only edge maps need it
    except ImportError:
        raise ARPGError("Canny edge maps need OpenCV: pip install 'arpg[control]' "
                        "(opencv-python-headless)") from None
    return cv2.Canny(_gray(image), *CANNY_THRESHOLDS)[None]


def layout_map(image: Image.Image, grid: int) -> np.ndarray:
    """The silhouette of ``image`` at ``grid`` x ``grid``: uint8 [1, grid, grid] with values 0 / 255."""
    g = _gray(image).astype(np.int16)
    h, w = g.shape
    if h % grid or w % grid:
        raise ARPGError(f"a {w}x{h} image does not divide into a {grid}x{grid} grid")
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    fg = np.abs(g - np.median(border)) > LAYOUT_CONTRAST
    share = fg.reshape(grid, h // grid, grid, w // grid).mean(axis=(1, 3))
    return (share > 0.5).astype(np.uint8)[None] * 255


def make_condition(kind: str, image: Image.Image, grid: int) -> np.ndarray:
    """The ``kind`` map of ``image`` (already at the model's image size): uint8 [1, S, S]."""
    if check_kind(kind) == "canny":
        return canny_map(image)
    return layout_map(image, grid)


def pack_maps(maps: np.ndarray) -> np.ndarray:
    """Binary uint8 maps [..., S, S] (0 / 255) -> bits [..., S, ceil(S / 8)] (8 pixels per byte)."""
    if maps.size and not np.isin(maps, (0, 255)).all():
        raise ARPGError("binary condition maps must hold only 0 and 255")
    return np.packbits(maps > 0, axis=-1)


def unpack_maps(bits: np.ndarray, side: int) -> np.ndarray:
    """The inverse of :func:`pack_maps`: uint8 maps [..., S, S] of 0 / 255."""
    return np.unpackbits(bits, axis=-1, count=side) * np.uint8(255)


def to_condition_tensor(maps: np.ndarray) -> torch.Tensor:
    """uint8 maps [..., C, S, S] -> float32 in [0, 1]."""
    return torch.from_numpy(np.array(maps, dtype=np.uint8)).float().div_(255.0)


def read_condition_image(path: str | Path | Image.Image | np.ndarray, channels: int, side: int) -> torch.Tensor:
    """A user-supplied condition map (any kind, e.g. a depth map made elsewhere) as float [C, side, side] in
    [0, 1]: converted to ``channels`` (1 = gray, 3 = RGB) and resized to ``side`` (BOX when shrinking, NEAREST
    when enlarging, so binary maps stay binary). Non-square maps are refused rather than distorted."""
    if isinstance(path, Image.Image):
        image = path
    elif isinstance(path, np.ndarray):  # uint8 [H, W] or [H, W, C], e.g. an upload in the app
        image = Image.fromarray(path[..., 0] if path.ndim == 3 and path.shape[-1] == 1 else path)
    else:
        p = Path(path)
        if not p.exists():
            raise ARPGError(f"condition map {p}: file not found")
        if p.is_dir():
            raise ARPGError(f"condition map {p} is a folder, not an image file")
        try:
            image = Image.open(p)
            image.load()
        except (OSError, ValueError) as e:
            raise ARPGError(f"cannot read condition map {p}: {e}") from None
    if image.width != image.height:
        raise ARPGError(f"a condition map must be square, got {image.width}x{image.height}")
    if channels not in (1, 3):
        raise ARPGError(f"condition maps have 1 or 3 channels, the model wants {channels}")
    image = image.convert("L" if channels == 1 else "RGB")
    if image.width != side:
        image = image.resize((side, side), Image.BOX if image.width > side else Image.NEAREST)
    arr = np.asarray(image, dtype=np.uint8)
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return to_condition_tensor(arr)
