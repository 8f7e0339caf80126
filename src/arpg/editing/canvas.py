"""Decoding a canvas of codes of any size with a model that knows a ``g x g`` grid.

Windows: ``g x g`` windows whose top-left corners lie on a lattice of stride ``g // 2`` (half a window) in
each direction, with the last row/column of windows flush with the canvas border. Each window is decoded
with positions local to it (RoPE sees a normal ``g x g`` image), prefilled with every cell of the window
that is already known.

Order: repeatedly pick, among windows that still hold unknown cells, the one with the largest fraction of
known cells (ties: top-to-bottom, left-to-right), decode its unknown cells, and mark them known. So
decoding grows outward from what is known, every window sees as much context as possible, every cell is
decoded exactly once, and no known cell is ever overwritten.
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import ARPGError
from ..sampling.sampler import generate, resolve_sampling
from ..sampling.settings import SamplingConfig

#: Largest canvas (outpaint) or expanded grid (expand) decoded without ``force``, in multiples of the model's
#: own cell count: 16x is 4x the model's grid in each direction (64x64 cells = 1024x1024 px for ARPG-L on
#: VQ-16, 32x32 cells = 128x128 px for the demo model). Beyond it the window loop runs for minutes to hours.
MAX_CANVAS_FACTOR = 16


def check_canvas_size(model, height: int, width: int, force: bool = False) -> None:
    """Refuse canvases of more than ``MAX_CANVAS_FACTOR`` times the model's cells unless ``force``."""
    limit = MAX_CANVAS_FACTOR * model.config.n_cells
    if height * width > limit and not force:
        g = model.config.grid_size
        raise ARPGError(f"a canvas of {height}x{width} cells (height x width) is {height * width / (g * g):.0f} times "
                        f"the model's {g}x{g} grid; the limit is {MAX_CANVAS_FACTOR}x ({limit} cells) because "
                        "decoding it takes very long: pass --force (force=True) to decode it anyway")


def inpaint(model, codes: torch.Tensor, known_mask: torch.Tensor, labels, **sampling: Any) -> torch.Tensor:
    """Regenerate the unknown cells of ``codes`` [B, n] (raster order); ``known_mask`` [B, n] or [n].

    Known cells come back unchanged. ``sampling`` is passed to :func:`arpg.generate` (steps, cfg_scale, ...).
    """
    codes = torch.as_tensor(codes, dtype=torch.long)
    mask = torch.as_tensor(known_mask, dtype=torch.bool)
    n = model.config.n_cells
    if codes.dim() != 2 or codes.shape[1] != n:
        raise ARPGError(f"codes must be shaped [B, {n}] for this model, got {list(codes.shape)}")
    if mask.shape[-1] != n:
        raise ARPGError(f"known_mask must have {n} cells, got {list(mask.shape)}")
    mask = mask.expand_as(codes)
    if bool(mask.all()):
        raise ARPGError("the mask leaves nothing to regenerate (every cell is known)")
    if not bool(mask.any(dim=1).all()):
        raise ARPGError("the mask marks every cell unknown: nothing to edit (use arpg.generate for new images)")
    return generate(model, labels, known_codes=codes, known_mask=mask, **_window_steps(model, sampling, mask))


def _window_steps(model, sampling: dict, mask: torch.Tensor) -> dict:
    """The keyword arguments for one window's :func:`generate`: the sampling settings resolved once
    (explicit > ``sampling=`` > the model's recommended), with ``steps`` capped at the window's unknown
    cells (a small hole cannot take more steps than it has cells)."""
    kw = dict(sampling)
    given = {k: kw.pop(k) for k in SamplingConfig.fields()
             if k in kw and not (k == "order" and not isinstance(kw[k], (str, type(None))))}
    sc = resolve_sampling(model, kw.pop("sampling", None), **given)
    unknown = int((~mask).sum(dim=-1).min())
    if isinstance(sc.step_schedule, str) and sc.steps > unknown:
        sc = sc.replace(steps=max(1, unknown))
    return dict(kw, sampling=sc)


def _starts(size: int, g: int, stride: int) -> list[int]:
    starts = list(range(0, size - g + 1, stride))
    if starts[-1] != size - g:
        starts.append(size - g)
    return starts


def plan_windows(height: int, width: int, grid: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners (row, col) of the windows covering a ``height x width`` canvas."""
    if height < grid or width < grid:
        raise ARPGError(f"canvas {height}x{width} cells is smaller than the model's {grid}x{grid} grid")
    stride = stride or max(1, grid // 2)
    return [(r, c) for r in _starts(height, grid, stride) for c in _starts(width, grid, stride)]


def fill_canvas(model, codes: torch.Tensor, known: torch.Tensor, labels, *, stride: int | None = None,
                generator: torch.Generator | None = None, return_log: bool = False, progress: bool = False,
                **sampling: Any):
    """Decode every unknown cell of a canvas ``codes`` [B, H, W] given ``known`` [H, W] (shared by the batch).

    ``H, W >= g``. Returns the filled codes [B, H, W] (and, with ``return_log``, the list of
    ``(row, col, decoded_mask)`` per decoded window, in order). ``progress``: a bar of windows decoded
    (its total is the windows holding unknown cells at the start; later ones may fill up before their turn).
    """
    g = model.config.grid_size
    codes = torch.as_tensor(codes, dtype=torch.long).clone()
    known = torch.as_tensor(known, dtype=torch.bool).clone()
    if codes.dim() != 3:
        raise ARPGError(f"canvas codes must be shaped [B, H, W], got {list(codes.shape)}")
    B, H, W = codes.shape
    if known.shape != (H, W):
        raise ARPGError(f"known mask must be shaped [{H}, {W}], got {list(known.shape)}")
    if not bool(known.any()):
        raise ARPGError("nothing on the canvas is known: there is no image to extend")
    if bool(known.all()):
        raise ARPGError("every canvas cell is already known: nothing to decode")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= g):
        raise ARPGError(f"stride must be an integer in 1..{g} (the model's grid), got {stride!r}")
    windows = plan_windows(H, W, g, stride)
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)  # None: a text model's prompt
    log = []
    todo = sum(not bool(known[r:r + g, c:c + g].all()) for r, c in windows)
    bar = tqdm(total=todo, desc="windows", unit="win", disable=not progress)
    while not bool(known.all()):
        best, best_score = None, -1.0
        for r, c in windows:
            win = known[r:r + g, c:c + g]
            if bool(win.all()):
                continue
            score = float(win.float().mean())
            if score > best_score:
                best, best_score = (r, c), score
        r, c = best
        win_known = known[r:r + g, c:c + g].reshape(-1)
        win_codes = codes[:, r:r + g, c:c + g].reshape(B, -1)
        if bool(win_known.any()):
            out = inpaint(model, win_codes, win_known, labels, generator=generator, **sampling)
        else:  # a window with no context at all (only when the stride leaves a gap): plain generation
            out = generate(model, labels, generator=generator, **_window_steps(model, sampling, win_known[None]))
        new = ~win_known.view(g, g)
        codes[:, r:r + g, c:c + g] = torch.where(new, out.view(B, g, g), codes[:, r:r + g, c:c + g])
        known[r:r + g, c:c + g] = True
        log.append((r, c, new.clone()))
        bar.update(1)
    bar.total = len(log)
    bar.close()
    return (codes, log) if return_log else codes
