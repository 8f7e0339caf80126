"""Sampling for evaluation: a pinned recipe -> PNGs -> one standard ``.npz``, on one process or many.

The sample index space ``0 .. N-1`` (labels class-major, from the recipe) is cut into fixed chunks of
``batch_size``; chunk ``k`` goes to rank ``k % world_size`` and is sampled with a generator seeded by
``seed * 1_000_003 + k``. Images therefore depend only on (recipe, batch size), never on how many
processes ran: a 2-process run writes the same files as a 1-process run. Finished chunks (all PNGs
present) are skipped, so an interrupted run resumes where it stopped. Rank 0 then packs ``samples.npz``
(``arr_0`` uint8 [N, H, W, C], RGB even for grayscale models, as the standard evaluator expects).

``recipe.json`` describes exactly the images beside it. It is written before the first image, with
everything that decides them (the recipe, sample count, chunk size, dtype, and the SHA-256 of the model
and tokenizer files), and marked ``complete`` once ``samples.npz`` is packed. A run into a folder that
holds images is a resume only when that record equals the request; otherwise it is refused, naming the
fields that differ (``overwrite=True`` / ``--overwrite`` starts over).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ARPGError
from ..util.files import atomic_write_text
from ..util.hub import resolve_file
from ..vq import to_uint8
from ..sampling import generate
from ..util.images import save_images
from .npz import folder_to_npz
from ..sampling.recipes import Recipe

SEED_STRIDE = 1_000_003


def chunk_seed(seed: int, chunk: int) -> int:
    return seed * SEED_STRIDE + chunk


RECORD = "recipe.json"
#: Record fields that decide the images; a resume must match them all.
IDENTITY = ("recipe", "num_samples", "batch_size", "dtype", "model_sha256", "tokenizer_sha256")


def file_sha256(source: str | os.PathLike | None) -> str | None:
    """SHA-256 of a weights file, or of a saved folder's files (names and contents, sorted); published names
    and ``hf://`` addresses are hashed as the file they resolve to."""
    if source is None:
        return None
    path = resolve_file(source)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def check_resume(out: Path, want: dict[str, Any], overwrite: bool = False) -> None:
    """Refuse to add to a folder whose images were made with other settings (see the module docstring)."""
    folder, record = out / "samples", out / RECORD
    has_images = folder.is_dir() and any(folder.glob("*.png"))
    if overwrite:
        if folder.is_dir():
            shutil.rmtree(folder)
        for name in (RECORD, "samples.npz"):
            (out / name).unlink(missing_ok=True)
        return
    if not record.is_file():
        if has_images:
            raise ARPGError(f"{folder} holds images but no {RECORD} says how they were made; pass --overwrite to "
                            "start over or choose another --out")
        return
    try:
        have = json.loads(record.read_text())
    except (OSError, ValueError) as e:
        raise ARPGError(f"{record} is not readable JSON ({e}); pass --overwrite to start over") from None
    diffs = []
    for key in IDENTITY:
        a, b = have.get(key), want.get(key)
        if key == "recipe" and isinstance(a, dict) and isinstance(b, dict):
            # A field a folder's record predates had its default value then.
            defaults = {f.name: f.default for f in dataclasses.fields(Recipe)}
            defaults["guidance_interval"] = list(defaults["guidance_interval"])
            diffs += [f"{k} {a.get(k, defaults.get(k))!r} (folder) vs {b.get(k, defaults.get(k))!r} (now)"
                      for k in sorted(set(a) | set(b))
                      if a.get(k, defaults.get(k)) != b.get(k, defaults.get(k)) and k != "name"]
        elif a != b:
            diffs.append(f"{key} {a!r} (folder) vs {b!r} (now)")
    if diffs:
        raise ARPGError(f"{out} was sampled with other settings: {'; '.join(diffs[:4])}"
                        f"{f' (+{len(diffs) - 4} more)' if len(diffs) > 4 else ''}; pass --overwrite to start over "
                        "or choose another --out")


def _done(folder: Path, start: int, stop: int) -> bool:
    return all((folder / f"{i:06d}.png").exists() for i in range(start, stop))


def sample_for_eval(model, tok, recipe: Recipe, out: str | Path, *, batch_size: int = 32, rank: int = 0,
                    world_size: int = 1, dtype: torch.dtype | None = None, progress: bool = True,
                    barrier=lambda: None, num_samples: int | None = None, model_path: str | None = None,
                    tokenizer_path: str | None = None, overwrite: bool = False,
                    sources: tuple[str, str] | None = None) -> dict[str, Any]:
    """Sample this rank's share of the recipe into ``out/samples/``; rank 0 packs ``out/samples.npz``.

    ``sources``: how the record names the model and tokenizer (default: the paths; e.g. "shipped demo").
    ``model_path`` / ``tokenizer_path``: the files the model and tokenizer came from (hashed into the
    record, so a resume with other weights is refused)."""
    out = Path(out)
    folder = out / "samples"
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ARPGError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise ARPGError(f"num_samples must be a positive integer or None, got {num_samples!r}")
    if model.config.num_classes < recipe.num_classes:
        raise ARPGError(f"recipe {recipe.name} needs {recipe.num_classes} classes; the model has "
                        f"{model.config.num_classes}")
    recipe.sampling.validate(model.config.n_cells)
    labels = recipe.labels()
    if num_samples is not None:
        labels = labels[:num_samples]
    n = len(labels)
    model_name, tokenizer_name = sources or (model_path, tokenizer_path)
    record = dict(recipe=recipe.to_dict(), num_samples=n, batch_size=batch_size, dtype=str(dtype or "fp32"),
                  model=model_name, model_sha256=file_sha256(model_path), tokenizer=tokenizer_name,
                  tokenizer_sha256=file_sha256(tokenizer_path), world_size=world_size,
                  seed_rule=f"chunk k of {batch_size} samples uses seed {recipe.seed} * {SEED_STRIDE} + k")
    if rank == 0:
        check_resume(out, record, overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / RECORD, json.dumps(dict(record, complete=False), indent=2, default=str))
    barrier()
    device = model.embeddings.weight.device
    g = model.config.grid_size
    chunks = [k for k in range(0, (n + batch_size - 1) // batch_size) if k % world_size == rank]
    todo = [k for k in chunks if not _done(folder, k * batch_size, min(n, (k + 1) * batch_size))]
    t0 = time.perf_counter()
    gen = torch.Generator(device=device)
    def size(k: int) -> int:
        return min(n, (k + 1) * batch_size) - k * batch_size

    bar = tqdm(total=sum(size(k) for k in chunks), initial=sum(size(k) for k in chunks if k not in todo),
               unit="img", desc=f"sample-fid rank {rank}", disable=not progress)
    for k in todo:
        start, stop = k * batch_size, min(n, (k + 1) * batch_size)
        gen.manual_seed(chunk_seed(recipe.seed, k))
        codes = generate(model, torch.from_numpy(labels[start:stop]).to(device), sampling=recipe.sampling,
                         generator=gen, dtype=dtype)
        with torch.no_grad():
            images = to_uint8(tok.decode(codes, grid=(g, g)))
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        save_images(images, folder, start=start)
        bar.update(stop - start)
    bar.close()
    seconds = time.perf_counter() - t0
    barrier()
    info = dict(record, sampled_chunks_this_rank=len(todo), seconds_rank0=round(seconds, 2))
    if rank == 0:
        folder_to_npz(folder, out / "samples.npz")
        atomic_write_text(out / RECORD, json.dumps(dict(info, complete=True), indent=2, default=str))
    barrier()
    return info
