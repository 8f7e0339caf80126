"""Preview grids during training: a few samples of the current (EMA) weights, as codes and, with a
tokenizer, as one PNG. Sampling runs under a forked RNG, so it never changes what training does next."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..model import ARPG
from ..sampling import generate
from ..util.images import make_grid, to_pil, to_uint8
from ..vq import VQTokenizer


def save_preview(model: ARPG, folder: Path, step: int, *, count: int, steps: int, cfg_scale: float, seed: int,
                 dtype: torch.dtype | None = None, tokenizer: VQTokenizer | None = None,
                 prompts: tuple[torch.Tensor, torch.Tensor] | None = None) -> Path:
    """Write ``folder/step-XXXXXXXX.npy`` (codes) and, with ``tokenizer``, ``.png`` (a grid without gaps);
    returns the picture's path (or the codes' without a tokenizer). ``prompts``: a text model's prompt features
    and mask (one image each) instead of class labels."""
    device = model.embeddings.weight.device
    cfg = model.config
    labels = torch.arange(count, device=device) % cfg.num_classes
    text = {}
    if prompts is not None:
        labels, text = None, {"text": prompts[0].to(device), "text_mask": prompts[1].to(device)}
    folder.mkdir(parents=True, exist_ok=True)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        gen = torch.Generator(device=device).manual_seed(seed)
        codes = generate(model, labels, steps=min(steps, cfg.n_cells), cfg_scale=cfg_scale, generator=gen,
                         dtype=dtype, **text)
    stem = folder / f"step-{step:08d}"
    np.save(f"{stem}.npy", codes.cpu().numpy())
    if tokenizer is None:
        return Path(f"{stem}.npy")
    with torch.no_grad():
        images = to_uint8(tokenizer.decode(codes))
    to_pil(make_grid(images, pad=0, fill=0)).save(f"{stem}.png")
    return Path(f"{stem}.png")
