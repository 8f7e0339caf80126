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

from ..errors import ARPGError
from ..sampling.sampler import generate


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
    return generate(model, labels, known_codes=codes, known_mask=mask, **_window_steps(sampling, mask))


def _window_steps(sampling: dict, mask: torch.Tensor) -> dict:
    """Cap ``steps`` at the number of unknown cells (a small hole cannot take more steps than cells)."""
    s = dict(sampling)
    unknown = int((~mask).sum(dim=-1).min())
    if isinstance(s.get("step_schedule", "arccos"), str):
        s["steps"] = max(1, min(int(s.get("steps", 32)), unknown))
    return s


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
                generator: torch.Generator | None = None, return_log: bool = False, **sampling: Any):
    """Decode every unknown cell of a canvas ``codes`` [B, H, W] given ``known`` [H, W] (shared by the batch).

    ``H, W >= g``. Returns the filled codes [B, H, W] (and, with ``return_log``, the list of
    ``(row, col, decoded_mask)`` per decoded window, in order).
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
    windows = plan_windows(H, W, g, stride)
    labels = torch.as_tensor(labels, dtype=torch.long)
    log = []
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
            out = generate(model, labels, generator=generator, **_window_steps(sampling, win_known[None]))
        new = ~win_known.view(g, g)
        codes[:, r:r + g, c:c + g] = torch.where(new, out.view(B, g, g), codes[:, r:r + g, c:c + g])
        known[r:r + g, c:c + g] = True
        log.append((r, c, new.clone()))
    return (codes, log) if return_log else codes
