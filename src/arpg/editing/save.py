"""Writing an edit's result: the image (variations get ``_1``, ``_2``, ... suffixes), optionally its code grids,
and a ``.json`` record beside it with the settings used and the known-cell counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..util.images import to_pil


def known_view(image: np.ndarray, known: torch.Tensor, factor: int) -> np.ndarray:
    """What the model saw: ``image`` [H, W, C] uint8 with its unknown cells (``known`` [h, w] False) grey."""
    cells = (~torch.as_tensor(known, dtype=torch.bool)).cpu().numpy().repeat(factor, 0).repeat(factor, 1)
    out = image.copy()
    out[cells[: image.shape[0], : image.shape[1]]] = 128
    return out


def save_edit(result: dict[str, Any], out: Path, *, save_codes: bool = False,
              record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save ``result`` (from the editing functions) as ``out`` (+ variations); returns the record written
    to ``out`` with the ``.json`` suffix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for i, img in enumerate(result["images"]):
        path = out if i == 0 else out.with_name(f"{out.stem}_{i}{out.suffix}")
        to_pil(img).save(path)
        written.append(str(path))
        if save_codes:
            np.save(path.with_suffix(".codes.npy"), result["codes"][i].cpu().numpy())
    meta = dict(record or {}, outputs=written, known_cells=int(result["known"].sum()),
                total_cells=int(result["known"].numel()))
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
    return meta
