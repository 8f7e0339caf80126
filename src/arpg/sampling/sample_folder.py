"""A class-conditional sample written to a folder (what ``arpg sample`` makes): numbered PNGs, a grid, optionally
the codes, and ``sample.json`` recording exactly the settings used and the files written."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ARPGError
from ..util.devices import parse_dtype
from ..util.images import make_grid, save_images, to_pil, to_uint8
from .steps import compile_report
from .runtime import resolve_runtime
from .sampler import generate
from .settings import SamplingConfig

RECORD = "sample.json"


def prepare_sample_folder(out: Path) -> list[Path]:
    """Check that ``out`` may receive a sample, and return the files of a previous ``arpg sample`` run in it.

    ``out`` must be missing, empty, or a folder this command wrote before (it holds ``sample.json``); then the
    previous run's images, grid, codes and record are removed once the new sample is written, so stale
    PNGs never sit beside a new ``sample.json``. Any other non-empty folder is refused.
    """
    if not out.exists() or not any(out.iterdir()):
        return []
    record = out / "sample.json"
    if not record.is_file():
        raise ARPGError(f"--out {out} is not empty and holds no sample.json from an earlier arpg sample; "
                        "choose an empty or new folder")
    try:
        files = json.loads(record.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        files = None
    if isinstance(files, list):
        old = [out / Path(str(f)).name for f in files]
    else:  # a record from before files were listed: its images are the numbered PNGs
        old = [p for p in out.iterdir() if re.fullmatch(r"\d{6}\.png", p.name)]
    return [p for p in old + [out / "grid.png", out / "codes.npy", record] if p.is_file()]


def write_sample(model, tok, labels: torch.Tensor, sampling: SamplingConfig, out: Path, *, stale: list[Path],
                 seed: int = 0, dtype_name: str = "fp32", batch_size: int = 32, save_codes: bool = False,
                 record: dict[str, Any] | None = None, compile: bool | str | None = None,
                 pack_weights: bool | None = None) -> dict[str, Any]:
    """Sample ``labels`` with ``sampling`` into ``out`` (the ``stale`` files of an earlier sample there are
    removed once the new one is decoded); returns the record written to ``sample.json``. With ``compile``
    (see :func:`~arpg.sampling.generate`) the record also gives the compile time inside ``seconds``;
    ``pack_weights`` is passed on to it; the runtime the call resolved (dtype, packing, compile: what ran) is
    recorded as ``runtime``."""
    device = model.embeddings.weight.device
    gen = torch.Generator(device=device).manual_seed(seed)
    before = compile_report(model)["compile_seconds"]
    t0 = time.perf_counter()
    codes = generate(model, labels, sampling=sampling, generator=gen, dtype=parse_dtype(dtype_name),
                     batch_size=batch_size, progress=True, compile=compile, pack_weights=pack_weights)
    seconds = time.perf_counter() - t0
    if compile:
        report = compile_report(model)
        record = dict(record or {}, compile=dict(mode="frozen" if compile == "frozen" else "on",
                                                 graphs=report["graphs"],
                                                 compile_seconds=round(report["compile_seconds"] - before, 3)))
    runtime = resolve_runtime(model, dtype=parse_dtype(dtype_name), compile=compile, pack_weights=pack_weights)
    record = dict(record or {}, runtime=runtime.describe())
    with torch.no_grad():
        images = to_uint8(tok.decode(codes, grid=(model.config.grid_size,) * 2, batch_size=batch_size))
    for p in stale:
        p.unlink()
    written = save_images(images, out)
    to_pil(make_grid(images, ncol=min(len(images), 10)), scale=max(1, 256 // images.shape[1] // 2)).save(out / "grid.png")
    if save_codes:
        np.save(out / "codes.npy", codes.cpu().numpy())
    meta = dict(labels=labels.tolist(), seed=seed, dtype=dtype_name, **(record or {}), seconds=round(seconds, 3),
                sampling=sampling.to_dict(), files=[p.name for p in written])
    (out / RECORD).write_text(json.dumps(meta, indent=2))
    return meta
