"""Editing on images through a tokenizer: inpaint, class-edit, outpaint to any canvas, expand resolution.

Images may be a path, a PIL image or a uint8 array [H, W] / [H, W, C]; sizes must be multiples of the
tokenizer's downsampling factor. Each function returns a dict with the result image (uint8 [H, W, C]),
the code grid (LongTensor [B, h, w]) and the known-cell mask, so callers can save or inspect them.

Pixels the user did not ask to change come back exactly (``keep_pixels=True``, the default for
inpaint, edit and outpaint): the output is the decoded code grid with the source pixels pasted back
outside the mask (inpaint / edit: every unmasked pixel, also inside a regenerated cell; outpaint: the
source rectangle). Without it every pixel goes through the tokenizer and even the untouched part
carries its reconstruction error. For these three, ``result["decoded"]`` always holds the pure decode.
"Exactly" is in the tokenizer's channels: an RGB file edited with a 1-channel tokenizer comes back grey.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ARPGError
from ..util.images import from_uint8, to_uint8
from .canvas import check_canvas_size, fill_canvas
from .masks import box_mask, cell_mask, load_mask


def read_image(image: Any, channels: int, fit: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, C] with the tokenizer's channel count, from a path / PIL image / array.

    The one conversion every front end uses (CLI, app, API). ``fit=(height, width)``: centre-crop to that
    aspect ratio, then resize to it, area-averaging when shrinking (so an image enlarged by an integer factor
    with nearest-neighbour comes back exactly) and bicubic when enlarging. Without ``fit`` the size is kept.
    """
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                image = im.convert("L" if channels == 1 else "RGB")
                image.load()
        except (OSError, ValueError) as e:
            raise ARPGError(f"cannot read image {image}: {e}") from None
    x = to_uint8(from_uint8(image, channels=channels))[0]  # validates dtype / layout, converts channels
    if fit is None:
        return x
    th, tw = fit
    if th < 1 or tw < 1:
        raise ARPGError(f"fit size must be positive, got {th}x{tw}")
    H, W = x.shape[:2]
    if H * tw > W * th:  # too tall for the target aspect: crop rows
        ch, cw = max(1, round(W * th / tw)), W
    else:
        ch, cw = H, max(1, round(H * tw / th))
    y0, x0 = (H - ch) // 2, (W - cw) // 2
    crop = Image.fromarray(x[y0:y0 + ch, x0:x0 + cw].squeeze(-1) if channels == 1 else x[y0:y0 + ch, x0:x0 + cw])
    if (ch, cw) != (th, tw):
        shrink = ch >= th and cw >= tw
        crop = crop.resize((tw, th), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
    out = np.asarray(crop, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def _check_label(model, label: int) -> None:
    n = model.config.num_classes
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise ARPGError(f"label must be an integer class id, got {label!r}")
    if not 0 <= int(label) < n:
        raise ARPGError(f"label must be in 0..{n - 1}, got {label}")


def _encode(tok, image: np.ndarray) -> torch.Tensor:
    H, W = image.shape[:2]
    h, w = tok.grid_shape(H, W)  # raises the one-line "not a multiple" error
    device = next(tok.parameters()).device
    with torch.no_grad():
        codes = tok.encode(from_uint8(image, channels=image.shape[-1]).to(device))
    return codes.view(1, h, w)


def _codes_to_pixels(tok, codes: torch.Tensor) -> np.ndarray:
    B, h, w = codes.shape
    with torch.no_grad():
        return to_uint8(tok.decode(codes.reshape(B, h * w), grid=(h, w)))


def _repeat(codes: torch.Tensor, num: int) -> torch.Tensor:
    return codes.expand(num, -1, -1).clone()


def _paste(decoded: np.ndarray, source: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``decoded`` [B, H, W, C] with ``source`` [H, W, C] written wherever ``keep`` [H, W] is True."""
    return np.where(keep[None, :, :, None], source[None], decoded)


def _check_num(num: int) -> None:
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ARPGError(f"num must be a positive integer, got {num!r}")


def inpaint_image(model, tok, image: Any, mask: Any = None, label: int = 0, *, box=None, num: int = 1,
                  keep_pixels: bool = True, **sampling: Any) -> dict[str, Any]:
    """Regenerate the masked pixels' cells under ``label``. ``mask``: array / PNG / PIL (True = regenerate)
    or ``box=(x0, y0, x1, y1)``. ``num`` variations are made in one batch. ``keep_pixels``: unmasked
    pixels come back exactly (see the module docstring)."""
    _check_label(model, label)
    _check_num(num)
    img = read_image(image, tok.config.in_channels)
    H, W = img.shape[:2]
    tok.grid_shape(H, W)  # the image's size is checked first: its error names the image, not the mask
    if (mask is None) == (box is None):
        raise ARPGError("give exactly one of a mask or a box")
    pix = box_mask(H, W, box) if box is not None else load_mask(mask, H, W)
    unknown = torch.from_numpy(cell_mask(pix, tok.downsample))
    if not bool(unknown.any()):
        raise ARPGError("the mask is empty: no cell to regenerate")
    if bool(unknown.all()):
        raise ARPGError("the mask covers the whole image: nothing is left to condition on")
    codes = _encode(tok, img).to(model.embeddings.weight.device)
    labels = torch.full((num,), int(label), dtype=torch.long)
    out = fill_canvas(model, _repeat(codes, num), ~unknown.to(codes.device), labels, **sampling)
    decoded = _codes_to_pixels(tok, out)
    images = _paste(decoded, img, ~pix) if keep_pixels else decoded
    return dict(images=images, decoded=decoded, codes=out, known=~unknown, source_codes=codes)


def edit_image(model, tok, image: Any, mask: Any = None, new_label: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Class-conditional editing: regenerate the masked region under another class (``new_label``)."""
    return inpaint_image(model, tok, image, mask, new_label, **kwargs)


def outpaint_image(model, tok, image: Any, canvas: tuple[int, int], offset: tuple[int, int] | None = None,
                   label: int = 0, *, num: int = 1, stride: int | None = None, keep_pixels: bool = True,
                   force: bool = False, progress: bool = False, **sampling: Any) -> dict[str, Any]:
    """Place ``image`` on a larger canvas of ``canvas = (height, width)`` pixels at ``offset = (y, x)``
    (default: centred, snapped to the token grid) and generate everything around it. ``keep_pixels``:
    the source rectangle comes back exactly (see the module docstring). Canvases beyond
    :data:`MAX_CANVAS_FACTOR` times the model's cells are refused unless ``force``."""
    _check_label(model, label)
    _check_num(num)
    img = read_image(image, tok.config.in_channels)
    H, W = img.shape[:2]
    f = tok.downsample
    tok.grid_shape(H, W)
    CH, CW = canvas
    if CH < H or CW < W:
        raise ARPGError(f"canvas {CH}x{CW} is smaller than the source image {H}x{W} (height x width)")
    if CH == H and CW == W:
        raise ARPGError("the canvas equals the image: nothing to outpaint (use inpaint to redo a region)")
    if CH % f or CW % f:
        raise ARPGError(f"canvas size {CH}x{CW} (height x width) is not a multiple of the tokenizer's factor {f}")
    check_canvas_size(model, CH // f, CW // f, force)
    if offset is None:
        offset = ((CH - H) // 2 // f * f, (CW - W) // 2 // f * f)
    oy, ox = offset
    if oy % f or ox % f or oy < 0 or ox < 0 or oy + H > CH or ox + W > CW:
        raise ARPGError(f"offset {oy},{ox} must keep the image inside the canvas on the {f}-pixel token grid")
    src = _encode(tok, img)
    h, w = src.shape[1:]
    ch, cw = CH // f, CW // f
    codes = torch.zeros(1, ch, cw, dtype=torch.long)
    known = torch.zeros(ch, cw, dtype=torch.bool)
    r0, c0 = oy // f, ox // f
    codes[:, r0:r0 + h, c0:c0 + w] = src.cpu()
    known[r0:r0 + h, c0:c0 + w] = True
    device = model.embeddings.weight.device
    labels = torch.full((num,), int(label), dtype=torch.long)
    out, log = fill_canvas(model, _repeat(codes, num).to(device), known.to(device), labels, stride=stride,
                           return_log=True, progress=progress, **sampling)
    decoded = _codes_to_pixels(tok, out)
    images = decoded
    if keep_pixels:
        images = decoded.copy()
        images[:, oy:oy + H, ox:ox + W] = img
    return dict(images=images, decoded=decoded, codes=out, known=known, windows=log)
