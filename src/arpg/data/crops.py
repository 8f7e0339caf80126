"""Image crops used before tokenizing: the ADM centre crop and the LlamaGen / ARPG ten-crop.

Conventions (the published ones, so that codes extracted here match the released training data):

* **centre crop** (ADM, "``center_crop_arr``"): halve the image with BOX filtering while its short side
  is at least twice the target, then resize with BICUBIC so the short side equals the target, then cut
  the centred square (top-left corner at ``(dim - size) // 2``).
* **ten crop** (LlamaGen ``extract_codes_c2i.py --ten-crop``, which ARPG's training data uses): centre-crop
  to ``int(size * 1.1)`` first, then take the four corner squares and the centre square of side ``size``
  (torchvision's five-crop: top-left, top-right, bottom-left, bottom-right, centre, the centre offset
  rounded as ``round((dim - size) / 2)``), then the same five from the horizontally mirrored image.
  Order: ``tl, tr, bl, br, c, tl', tr', bl', br', c'`` (primes = from the mirror), as torchvision's TenCrop.
* **flip** (LlamaGen's default without ``--ten-crop``): the centre crop and its mirror (2 crops).
* **single**: the centre crop only (1 crop).

At training time one of a sample's crops is picked at random per access (see :mod:`arpg.data.codes`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import ARPGError

#: crop mode -> number of crops per image
CROP_MODES: dict[str, int] = {"ten": 10, "flip": 2, "single": 1}
#: how much larger than the target the ten-crop's centre crop is (LlamaGen ``--crop-range``)
TEN_CROP_RANGE = 1.1


def center_crop_arr(image: Image.Image, size: int) -> Image.Image:
    """ADM centre crop to a ``size`` x ``size`` square (see the module docstring for the exact steps)."""
    if size < 1:
        raise ARPGError(f"crop size must be >= 1, got {size}")
    # BOX halving first: cheap anti-aliasing for large images, as ADM / LlamaGen do.
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(d // 2 for d in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(d * scale) for d in image.size), resample=Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def five_crop(image: Image.Image, size: int) -> list[Image.Image]:
    """Top-left, top-right, bottom-left, bottom-right and centre squares of side ``size``."""
    w, h = image.size
    if size > min(w, h):
        raise ARPGError(f"crop size {size} is larger than the image ({w}x{h})")
    # torchvision's centre offset (round half to even), so our ten-crop equals TenCrop pixel for pixel.
    cl, ct = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    boxes = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size), (cl, ct)]
    return [image.crop((x, y, x + size, y + size)) for x, y in boxes]


def ten_crop(image: Image.Image, size: int, crop_range: float = TEN_CROP_RANGE) -> list[Image.Image]:
    """The published ten-crop: five crops of the ``int(size * crop_range)`` centre crop, then of its mirror."""
    base = center_crop_arr(image, int(size * crop_range))
    mirrored = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return five_crop(base, size) + five_crop(mirrored, size)


def make_crops(image: Image.Image, size: int, mode: str = "ten") -> list[Image.Image]:
    """All crops of ``image`` for a crop ``mode`` (``"ten"``, ``"flip"`` or ``"single"``)."""
    if mode == "ten":
        return ten_crop(image, size)
    if mode not in CROP_MODES:
        raise ARPGError(f"unknown crop mode {mode!r}; choose one of {', '.join(CROP_MODES)}")
    center = center_crop_arr(image, size)
    if mode == "flip":
        return [center, center.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return [center]


def to_model_input(crops: list[Image.Image], channels: int = 3) -> torch.Tensor:
    """Stack PIL crops into float32 ``[K, C, H, W]`` in ``[-1, 1]`` (1 channel = grayscale, 3 = RGB)."""
    if channels not in (1, 3):
        raise ARPGError(f"tokenizers with {channels} input channels are not supported (1 or 3)")
    mode = "L" if channels == 1 else "RGB"
    arrs = [np.asarray(c.convert(mode), dtype=np.uint8) for c in crops]
    x = torch.from_numpy(np.stack(arrs)).float()
    x = x[:, None] if channels == 1 else x.permute(0, 3, 1, 2)
    return x.div_(127.5).sub_(1.0).contiguous()
