"""Reading any weights file safely: ``.pt`` / ``.pth`` (``torch.load(weights_only=True)``, never unpickling code,
since users download these files from the internet) or ``.safetensors``, from a path, a saved folder, a
published name or an ``hf://`` address; the state dict under the usual keys (``ema``, ``state_dict``,
``model``, ``module``) with DDP / ``torch.compile`` prefixes stripped, and the config stored beside it.
Shared by the ARPG and VQ loaders, the Inception weights and the demo classifier."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open

from ..errors import CheckpointError
from .files import load_torch_file
from .hub import resolve_file


STATE_KEYS = ("ema", "state_dict", "model", "module")  # order of preference when several are present
PREFIXES = ("module.", "_orig_mod.")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(state_dict, extras)`` from any accepted file (or published name / ``hf://`` address);
    ``extras`` may hold a ``config`` dict."""
    path = resolve_file(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file (nor a saved model folder with config.json and "
                              "model.safetensors)")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        return _read_safetensors(path)
    obj = load_torch_file(path)
    return _unwrap(obj, path)


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(e)[:160]})") from None
    extras: dict[str, Any] = {}
    try:
        for key in ("config", "arpg_config", "vq_config"):
            if key in meta:
                extras["config"] = json.loads(meta[key])
                extras["config_kind"] = key
        if "sampling" in meta:
            extras["sampling"] = json.loads(meta["sampling"])
        if "text_encoder" in meta:
            extras["text_encoder"] = meta["text_encoder"]
    except ValueError as e:
        raise CheckpointError(f"{path} has unreadable metadata ({e})") from None
    return sd, extras


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    extras: dict[str, Any] = {}
    if isinstance(obj.get("config"), Mapping):
        extras["config"] = dict(obj["config"])
    sd: Any = obj
    if not _is_state_dict(obj):
        for key in STATE_KEYS:
            if key in obj and isinstance(obj[key], Mapping) and _is_state_dict(obj[key]):
                sd = obj[key]
                break
        else:
            raise CheckpointError(f"{path} is not a model checkpoint: no tensors under any of "
                                  f"{', '.join(STATE_KEYS)} (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
    return strip_prefixes(dict(sd)), extras


def _is_state_dict(d: Mapping) -> bool:
    return len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


