"""Sampling for evaluation: a pinned recipe -> PNGs -> one standard ``.npz``, on one process or many.

The sample index space ``0 .. N-1`` (labels class-major, from the recipe) is cut into fixed chunks of
``batch_size``; chunk ``k`` goes to rank ``k % world_size`` and is sampled with a generator seeded by
``seed * 1_000_003 + k``. Images therefore depend only on (recipe, batch size), never on how many
processes ran: a 2-process run writes the same files as a 1-process run. Finished chunks (all PNGs
present) are skipped, so an interrupted run resumes where it stopped. Rank 0 then packs ``samples.npz``
(``arr_0`` uint8 [N, H, W, C], RGB even for grayscale models, as the standard evaluator expects) and
writes ``recipe.json`` with every setting used.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ARPGError
from ..sampling import generate
from ..visual import save_images
from .npz import folder_to_npz
from ..sampling.recipes import Recipe

SEED_STRIDE = 1_000_003


def chunk_seed(seed: int, chunk: int) -> int:
    return seed * SEED_STRIDE + chunk


def _done(folder: Path, start: int, stop: int) -> bool:
    return all((folder / f"{i:06d}.png").exists() for i in range(start, stop))


def sample_for_eval(model, tok, recipe: Recipe, out: str | Path, *, batch_size: int = 32, rank: int = 0,
                    world_size: int = 1, dtype: torch.dtype | None = None, progress: bool = True,
                    barrier=lambda: None, num_samples: int | None = None) -> dict[str, Any]:
    """Sample this rank's share of the recipe into ``out/samples/``; rank 0 packs ``out/samples.npz``."""
    out = Path(out)
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    if model.config.num_classes < recipe.num_classes:
        raise ARPGError(f"recipe {recipe.name} needs {recipe.num_classes} classes; the model has "
                        f"{model.config.num_classes}")
    labels = recipe.labels()
    if num_samples is not None:
        labels = labels[:num_samples]
    n = len(labels)
    device = model.embeddings.weight.device
    g = model.config.grid_size
    chunks = [k for k in range(0, (n + batch_size - 1) // batch_size) if k % world_size == rank]
    todo = [k for k in chunks if not _done(folder, k * batch_size, min(n, (k + 1) * batch_size))]
    t0 = time.perf_counter()
    gen = torch.Generator(device=device)
    bar = tqdm(total=len(chunks) * batch_size, initial=(len(chunks) - len(todo)) * batch_size, unit="img",
               desc=f"sample-fid rank {rank}", disable=not progress)
    for k in todo:
        start, stop = k * batch_size, min(n, (k + 1) * batch_size)
        gen.manual_seed(chunk_seed(recipe.seed, k))
        codes = generate(model, torch.from_numpy(labels[start:stop]).to(device), steps=recipe.steps,
                         cfg_scale=recipe.cfg_scale, cfg_schedule=recipe.cfg_schedule,
                         step_schedule=recipe.step_schedule, temperature=recipe.temperature, top_k=recipe.top_k,
                         top_p=recipe.top_p, order=recipe.order, attention=recipe.attention, generator=gen,
                         dtype=dtype)
        with torch.no_grad():
            from ..tokenizer import to_uint8

            images = to_uint8(tok.decode(codes, grid=(g, g)))
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        save_images(images, folder, start=start)
        bar.update(stop - start)
    bar.close()
    seconds = time.perf_counter() - t0
    barrier()
    info = dict(recipe=recipe.to_dict(), num_samples=n, batch_size=batch_size, world_size=world_size,
                seed_rule=f"chunk k of {batch_size} samples uses seed {recipe.seed} * {SEED_STRIDE} + k",
                dtype=str(dtype or "fp32"), sampled_chunks_this_rank=len(todo), seconds_rank0=round(seconds, 2))
    if rank == 0:
        folder_to_npz(folder, out / "samples.npz")
        (out / "recipe.json").write_text(json.dumps(info, indent=2, default=str))
    barrier()
    return info
