"""Resolution expansion: a larger code grid whose layout comes from the source image.

Methods (``expand_image(..., method=...)``):

* ``"windows"``: upsample the image bicubically by ``factor``, tokenise it on the larger grid, keep the cells
  of a stride-``factor`` lattice, and regenerate the rest window by window (:func:`~arpg.editing.canvas.fill_canvas`).
  Each window is decoded as if it were a whole image, so an object larger than a window can come back
  as several objects.
* ``"interpolate"``: the same known lattice, but the whole larger grid is decoded in ONE context, with
  2D RoPE positions interpolated: cell ``(r, c)`` of the ``factor*g`` grid sits at position
  ``(r / factor, c / factor)`` of the model's ``g x g`` grid (:func:`interpolated_view`). The kept lattice
  lands exactly on the model's integer positions, so the model sees one image and fills in between.
* ``"source-lattice"``: one interpolated context like ``"interpolate"``, but the known lattice holds the
  source's own codes (tokenised at its own size) instead of codes of the upsampled image.
* ``"dense"``: one interpolated context with a denser known set: a checkerboard of the upsampled image's
  codes (half of the cells) instead of the stride-``factor`` lattice (``1 / factor^2``).

The one-context methods need a square source of exactly the model's grid (e.g. 32x32 px for the demo,
256x256 for the published models); other sizes use ``"windows"``. Limits for all: the model never saw
objects at ``factor`` times its training scale, so new cells add plausible texture, not true detail.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ARPGError
from ..model.rope import build_rope_table
from ..sampling.sampler import generate, resolve_sampling
from ..sampling.settings import SamplingConfig
from .canvas import check_canvas_size, fill_canvas
from .images import _check_label, _check_num, _codes_to_pixels, _encode, _repeat, read_image

EXPAND_METHODS = ("windows", "interpolate", "source-lattice", "dense")


def interpolated_view(model, grid: int):
    """The same model (shared weights) for a ``grid x grid`` canvas at interpolated RoPE positions: cell
    ``(r, c)`` is at ``(r, c) * model_grid / grid``."""
    view = copy.copy(model)
    view._buffers = dict(model._buffers)  # the RoPE table differs; parameters and submodules are shared
    cfg = dataclasses.replace(model.config, grid_size=grid)
    view.config = cfg
    view._buffers["rope"] = build_rope_table(grid, cfg.head_dim, cfg.rope_base, cfg.class_rope,
                                             scale=model.config.grid_size / grid).to(model.rope.device)
    return view


def expand_image(model, tok, image: Any, label: int = 0, *, factor: int = 2, num: int = 1,
                 method: str = "dense", lattice: int | None = None, stride: int | None = None,
                 force: bool = False, progress: bool = False, **sampling: Any) -> dict[str, Any]:
    """Expand ``image`` by ``factor`` (see the module docstring for the methods; ``lattice`` and ``stride``
    apply to ``"windows"``). Expanded grids beyond ``MAX_CANVAS_FACTOR`` times the model's cells are refused
    unless ``force``. Returns the images, codes, known-cell mask and the bicubic upsample."""
    _check_label(model, label)
    _check_num(num)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ARPGError(f"factor must be an integer >= 2, got {factor!r}")
    if lattice is not None and (not isinstance(lattice, int) or lattice < 1):
        raise ARPGError(f"lattice must be a positive integer, got {lattice!r}")
    if method not in EXPAND_METHODS:
        raise ARPGError(f"method must be one of {', '.join(EXPAND_METHODS)}, got {method!r}")
    img = read_image(image, tok.config.in_channels)
    H, W = img.shape[:2]
    h0, w0 = tok.grid_shape(H, W)
    check_canvas_size(model, h0 * factor, w0 * factor, force)
    g = model.config.grid_size
    if method != "windows" and (h0, w0) != (g, g):
        raise ARPGError(f"method {method!r} needs a source of the model's grid ({g}x{g} cells, "
                        f"{g * tok.downsample}x{g * tok.downsample} px); this one is {h0}x{w0}: use "
                        "method='windows'")
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    big = np.asarray(pil.resize((W * factor, H * factor), Image.BICUBIC))
    big = big[..., None] if big.ndim == 2 else big
    device = model.embeddings.weight.device
    labels = torch.full((num,), int(label), dtype=torch.long)
    if method == "windows":
        codes = _encode(tok, big)
        h, w = codes.shape[1:]
        lattice = lattice or factor
        known = torch.zeros(h, w, dtype=torch.bool)
        known[::lattice, ::lattice] = True
        out = fill_canvas(model, _repeat(codes.cpu(), num).to(device), known.to(device), labels, stride=stride,
                          progress=progress, **sampling)
        return dict(images=_codes_to_pixels(tok, out), codes=out, known=known, upsampled=big)

    big_grid = g * factor
    known = torch.zeros(big_grid, big_grid, dtype=torch.bool)
    known[::factor, ::factor] = True
    if method == "dense":
        r = torch.arange(big_grid)
        known = (r[:, None] + r[None, :]) % 2 == 0
    if method in ("interpolate", "dense"):
        codes = _encode(tok, big).cpu()
    else:
        codes = torch.zeros(1, big_grid, big_grid, dtype=torch.long)
        codes[:, ::factor, ::factor] = _encode(tok, img).cpu()
    kw = dict(sampling)
    given = {k: kw.pop(k) for k in SamplingConfig.fields() if k in kw}
    # The settings of the model itself (its recipe), not of the view, which matches no recipe.
    sc = resolve_sampling(model, kw.pop("sampling", None), **given)
    unknown = int((~known).sum())
    if isinstance(sc.step_schedule, str):
        sc = sc.replace(steps=min(sc.steps, unknown))
    view = interpolated_view(model, big_grid)
    flat = _repeat(codes, num).reshape(num, -1).to(device)
    out = generate(view, labels.to(device), sampling=sc, known_codes=flat, known_mask=known.reshape(-1).to(device),
                   progress=progress, **kw)
    out = out.view(num, big_grid, big_grid)
    return dict(images=_codes_to_pixels(tok, out), codes=out, known=known, upsampled=big)
