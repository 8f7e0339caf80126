"""Writing text-to-image samples: a folder of numbered PNGs for one prompt (``arpg t2i``), and GenEval's folder
layout for a prompt file (``arpg sample --prompts``), so the official GenEval scorer runs on the result.

GenEval's layout: one folder per prompt line, ``OUT/00000/metadata.jsonl`` holding that line's JSON object as
given, and the images as ``OUT/00000/samples/0000.png``, ``0001.png``, ...
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ARPGError
from ..util.files import read_jsonl
from ..util.pretrained import SHIPPED_WEIGHTS
from ..util.images import make_grid, to_pil, to_uint8
from ..text import load_text_encoder
from .sampler import generate
from .settings import SamplingConfig

RECORD = "t2i.json"


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a GenEval-style prompt file: JSON objects with a ``prompt`` string (one-line errors)."""
    rows = []
    for n, row in read_jsonl(path, "prompt file"):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ARPGError(f"{path}:{n} needs a non-empty \"prompt\" string")
        rows.append(row)
    if not rows:
        raise ARPGError(f"{path} holds no prompts")
    return rows


def text_encoder_for(model, name: str | None, device):
    """The prompt encoder: ``name``, or the one stored with the model (one line when there is neither)."""
    name = name or getattr(model, "text_encoder", None)
    if name is None:
        raise ARPGError("the model does not name its prompt encoder: pass --text-encoder (a Hub name or folder)")
    if not Path(name).exists() and (SHIPPED_WEIGHTS / name).is_dir():  # e.g. the demo's "demo-t2i-text"
        name = str(SHIPPED_WEIGHTS / name)
    return load_text_encoder(name, model.config.text_len, device=device)


def _images(model, tok, prompts: list[str], encoder, sampling: SamplingConfig, seed: int, batch_size: int,
            dtype: torch.dtype | None):
    gen = torch.Generator(device=model.embeddings.weight.device).manual_seed(seed)
    codes = generate(model, prompts=prompts, text_encoder=encoder, sampling=sampling, generator=gen, dtype=dtype,
                     batch_size=batch_size, progress=True)
    with torch.no_grad():
        return to_uint8(tok.decode(codes, grid=(model.config.grid_size,) * 2, batch_size=batch_size))


def write_prompt_images(model, tok, encoder, prompt: str, num: int, sampling: SamplingConfig, out: Path, *,
                        seed: int = 0, batch_size: int = 32, dtype: torch.dtype | None = None,
                        record: dict[str, Any] | None = None) -> dict[str, Any]:
    """``num`` images of ``prompt`` as ``out/0000.png``, ``0001.png``, ..., a ``grid.png`` and the record
    ``t2i.json`` (prompt, seed, settings, seconds, files); returns the record."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    images = _images(model, tok, [prompt] * num, encoder, sampling, seed, batch_size, dtype)
    seconds = time.perf_counter() - t0
    files = []
    for i, img in enumerate(images):
        to_pil(img).save(out / f"{i:04d}.png")
        files.append(f"{i:04d}.png")
    to_pil(make_grid(images, ncol=min(len(images), 8)), scale=max(1, 256 // images.shape[1] // 2)).save(out / "grid.png")
    meta = dict(prompt=prompt, seed=seed, **(record or {}), seconds=round(seconds, 3), sampling=sampling.to_dict(),
                files=files)
    (out / RECORD).write_text(json.dumps(meta, indent=2))
    return meta


def write_geneval_folder(model, tok, encoder, rows: list[dict[str, Any]], num: int, sampling: SamplingConfig,
                         out: Path, *, seed: int = 0, batch_size: int = 32,
                         dtype: torch.dtype | None = None) -> int:
    """GenEval's layout for prompt-file ``rows`` (``num`` images each, prompt ``i`` seeded ``seed + i``);
    returns the number of images written. A prompt whose folder already holds ``num`` images is skipped, so an
    interrupted run picks up where it stopped."""
    written = 0
    for i, row in enumerate(rows):
        folder = out / f"{i:05d}"
        samples = folder / "samples"
        if samples.is_dir() and len(list(samples.glob("*.png"))) >= num:
            continue
        images = _images(model, tok, [row["prompt"]] * num, encoder, sampling, seed + i, batch_size, dtype)
        samples.mkdir(parents=True, exist_ok=True)
        for j, img in enumerate(images):
            to_pil(img).save(samples / f"{j:04d}.png")
        (folder / "metadata.jsonl").write_text(json.dumps(row) + "\n")
        written += len(images)
    return written
