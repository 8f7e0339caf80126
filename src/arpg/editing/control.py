"""Controllable generation (ControlARPG) on images: a condition map made from an image (Canny edges, layout)
or given as a file, then sampling under it -- alone, or with the image's cells outside a mask kept (control
+ inpaint).

The model must have a condition encoder (``ARPGConfig.condition_channels > 0``, e.g. the shipped
``demo-control-canny`` / ``demo-control-layout`` weights, or ``arpg train --condition KIND --init ...``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ..model.control import CONDITION_GUIDANCE
from ..data.conditions import check_kind, make_condition, read_condition_image, to_condition_tensor
from ..errors import ARPGError
from ..sampling.sampler import generate
from .images import _check_label, _check_num, _codes_to_pixels, _encode, _paste, read_image
from .masks import box_mask, cell_mask, load_mask


def require_controlled(model) -> None:
    if not model.config.controlled:
        raise ARPGError("this model has no condition encoder: use ControlARPG weights (e.g. the shipped "
                        "demo-control-canny) or fine-tune one with arpg train --condition KIND --init WEIGHTS")


def image_side(model, tok) -> int:
    """The pixel size of the model's images."""
    return model.config.grid_size * tok.downsample


def model_image(model, tok, image: Any) -> np.ndarray:
    """``image`` (path / PIL / array) as uint8 [H, W, C] in the tokenizer's channels, at the model's size."""
    img = read_image(image, tok.config.in_channels)
    side = image_side(model, tok)
    if img.shape[:2] != (side, side):
        raise ARPGError(f"the image is {img.shape[1]}x{img.shape[0]}; the model works on {side}x{side} "
                        "(resize it, or use --fit)")
    return img


def condition_from_image(model, tok, image: Any, kind: str | None = None) -> torch.Tensor:
    """The model's kind of condition map made from ``image`` (path / PIL / array at the model's image size):
    float [C, S, S] in [0, 1]. ``kind`` (optional) must be the one the model was trained on."""
    require_controlled(model)
    cfg = model.config
    trained = cfg.condition_kind
    kind = kind or trained
    check_kind(kind)
    if trained and kind != trained:
        raise ARPGError(f"this model was trained on {trained!r} maps, not {kind!r}: pass --kind {trained}, or "
                        "give a map you made with --condition")
    img = model_image(model, tok, image)
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    maps = to_condition_tensor(make_condition(kind, pil, cfg.grid_size))
    if maps.shape[0] != cfg.condition_channels or maps.shape[-1] != cfg.condition_side:
        raise ARPGError(f"{kind} maps are {list(maps.shape)}, the model's encoder takes "
                        f"[{cfg.condition_channels}, {cfg.condition_side}, {cfg.condition_side}]")
    return maps


def condition_from_file(model, path: Any) -> torch.Tensor:
    """A condition map the user made (any kind; e.g. a depth map), resized to the model's: float [C, S, S]."""
    require_controlled(model)
    cfg = model.config
    return read_condition_image(path, cfg.condition_channels, cfg.condition_side)


def condition_view(condition: torch.Tensor, side: int) -> np.ndarray:
    """A condition map [C, S, S] as a uint8 image [side, side, C] (nearest enlargement), for display."""
    c = (condition.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().transpose(1, 2, 0)
    f = max(1, side // c.shape[0])
    return c.repeat(f, 0).repeat(f, 1)


def control_image(model, tok, label: int, *, image: Any = None, kind: str | None = None, condition: Any = None,
                  mask: Any = None, box=None, num: int = 1, condition_guidance: str = "keep",
                  keep_pixels: bool = True, **sampling: Any) -> dict[str, Any]:
    """Generate ``num`` images of class ``label`` under a condition.

    The condition is ``condition`` (a map file / PIL / float tensor [C, S, S]) or, without it, the ``kind``
    map of ``image``. With ``mask`` or ``box`` (needs ``image``), the image's cells outside the region are
    kept and only the region is generated under the condition (control + inpaint; ``keep_pixels`` as for
    inpainting). Returns the editing dict (``images``, ``decoded``, ``codes``, ``known``) plus
    ``condition`` (the map used, float [C, S, S]) and ``condition_view`` (uint8 [H, W, C]).
    """
    require_controlled(model)
    _check_label(model, label)
    _check_num(num)
    if condition_guidance not in CONDITION_GUIDANCE:
        raise ARPGError(f"condition_guidance must be one of {CONDITION_GUIDANCE}, got {condition_guidance!r}")
    if condition is None and image is None:
        raise ARPGError("give an image to make the condition from, or a condition map")
    img = None if image is None else model_image(model, tok, image)  # read once: condition and kept cells
    if condition is None:
        cond = condition_from_image(model, tok, img, kind)
    elif isinstance(condition, torch.Tensor):
        cond = condition
    else:
        cond = condition_from_file(model, condition)
    side = image_side(model, tok)
    device = model.embeddings.weight.device
    labels = torch.full((num,), int(label), dtype=torch.long)
    gen_kw = dict(condition=cond.to(device), condition_guidance=condition_guidance, **sampling)
    known = None
    if mask is not None or box is not None:
        if img is None:
            raise ARPGError("a mask or box keeps the image's other cells: give the image too")
        if mask is not None and box is not None:
            raise ARPGError("give a mask or a box, not both")
        pix = box_mask(side, side, box) if box is not None else load_mask(mask, side, side)
        unknown = torch.from_numpy(cell_mask(pix, tok.downsample)).reshape(-1)
        if not bool(unknown.any()):
            raise ARPGError("the mask is empty: no cell to regenerate")
        codes = _encode(tok, img).reshape(1, -1).to(device).expand(num, -1)
        known = ~unknown
        out = generate(model, labels, known_codes=codes, known_mask=known.to(device).expand(num, -1), **gen_kw)
    else:
        out = generate(model, labels, **gen_kw)
    g = model.config.grid_size
    grids = out.view(num, g, g)
    decoded = _codes_to_pixels(tok, grids)
    images = decoded
    if known is not None and keep_pixels:
        images = _paste(decoded, img, ~pix)
    known_grid = torch.zeros(g, g, dtype=torch.bool) if known is None else known.view(g, g)
    return dict(images=images, decoded=decoded, codes=grids, known=known_grid, condition=cond.cpu(),
                condition_view=condition_view(cond, side))
