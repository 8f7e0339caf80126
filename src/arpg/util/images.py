"""Images: conversions between uint8 pixels (numpy / PIL) and the float tensors in [-1, 1] the tokenizer
uses, grids and strips of images, and saving them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ARPGError


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images [B, C, H, W] (or [C, H, W]) in [-1, 1] → uint8 numpy [B, H, W, C] (or [H, W, C]).

    Uses ``clamp(127.5·x + 128, 0, 255)`` truncated to integers, the convention of the published
    pipeline; it is the exact inverse of :func:`from_uint8`.
    """
    if isinstance(images, np.ndarray) or not isinstance(images, torch.Tensor):
        raise ARPGError(f"to_uint8 expects a float torch tensor [B, C, H, W] in [-1, 1]; got {type(images).__name__}")
    if not images.is_floating_point():
        raise ARPGError(f"to_uint8 expects float images in [-1, 1]; got a {str(images.dtype).replace('torch.', '')} "
                        "tensor (already pixels?)")
    if images.ndim not in (3, 4):
        raise ARPGError(f"to_uint8 expects images shaped [B, C, H, W] or [C, H, W]; got {list(images.shape)}")
    x = torch.clamp(127.5 * images.detach().float() + 128.0, 0, 255).to(torch.uint8)
    perm = (0, 2, 3, 1) if x.ndim == 4 else (1, 2, 0)
    return x.permute(*perm).cpu().numpy()


def _as_array(item: Any) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(item, Image.Image):
        if item.mode not in ("L", "RGB"):
            item = item.convert("L" if item.mode in ("1", "I", "I;16", "F", "LA") else "RGB")
        return np.asarray(item)
    if isinstance(item, torch.Tensor):
        item = item.cpu().numpy()
    if not isinstance(item, np.ndarray):
        raise ARPGError(f"from_uint8 expects uint8 numpy arrays or PIL images; got {type(item).__name__}")
    return item


def from_uint8(pixels: Any, channels: int | None = None) -> torch.Tensor:
    """uint8 pixels → float32 tensor [B, C, H, W] in [-1, 1] (``u / 127.5 - 1``).

    ``pixels`` may be a PIL image, a list of PIL images / arrays of one size, or a uint8 array shaped
    [H, W], [H, W, C], [B, H, W] or [B, H, W, C]. A 3-D array whose last axis is 1, 3 or 4 is read as
    one [H, W, C] image, otherwise as a batch of grayscale images. An alpha channel is dropped.
    ``channels`` (1 or 3) converts: gray is replicated to RGB, RGB is reduced to luma (ITU-R 601).
    """
    if isinstance(pixels, (list, tuple)):
        if not pixels:
            raise ARPGError("from_uint8 got an empty list of images")
        arrays = [_as_array(p) for p in pixels]
        arrays = [a[..., None] if a.ndim == 2 else a for a in arrays]
        sizes = sorted({a.shape for a in arrays})
        if len(sizes) > 1:
            raise ARPGError(f"from_uint8 got images of different shapes {sizes[:3]}; resize them to one size first")
        arr = np.stack(arrays)
    else:
        arr = _as_array(pixels)
        if arr.ndim == 2:
            arr = arr[None, :, :, None]
        elif arr.ndim == 3:
            arr = arr[None] if arr.shape[-1] in (1, 3, 4) else arr[..., None]
    if arr.dtype != np.uint8:
        hint = " (already floats in [-1, 1]? pass them to the tokenizer directly)" if arr.dtype.kind == "f" else ""
        raise ARPGError(f"from_uint8 expects uint8 pixels; got dtype {arr.dtype}{hint}")
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise ARPGError(f"from_uint8 cannot read pixels shaped {list(arr.shape)}; expected [B, H, W, C] with C in 1, 3, 4")
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    x = torch.from_numpy(np.array(arr, copy=True)).permute(0, 3, 1, 2).float()  # copy: PIL arrays are read-only
    if channels is not None:
        if channels not in (1, 3):
            raise ARPGError(f"channels must be 1 or 3 (got {channels})")
        if channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 1 and x.shape[1] == 3:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).round()
    return (x / 127.5 - 1.0).contiguous()


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


def make_strip(images: list[np.ndarray], gap: int = 4, fill: int = 255) -> np.ndarray:
    """uint8 images [H_i, W_i, C] side by side (top-aligned, padded to the tallest) with ``gap`` pixels between."""
    h = max(i.shape[0] for i in images)
    c = images[0].shape[2]
    parts = []
    for k, img in enumerate(images):
        if k:
            parts.append(np.full((h, gap, c), fill, dtype=np.uint8))
        canvas = np.full((h, img.shape[1], c), fill, dtype=np.uint8)
        canvas[: img.shape[0]] = img
        parts.append(canvas)
    return np.concatenate(parts, axis=1)
