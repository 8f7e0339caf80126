"""Loading and saving weights safely.

Accepted inputs for :func:`load_model`:

* the released ``arpg_300m.pt`` / ``arpg_700m.pt`` / ``arpg_1b.pt`` (weights under ``state_dict``);
* the authors' training checkpoints (``model`` / ``ema``, optionally with ``module.`` or ``_orig_mod.``
  prefixes from DDP / ``torch.compile``);
* ``.safetensors`` files written by :func:`save_model` (config stored in the metadata) or by anyone else;
* this project's training checkpoints (``{"model": ..., "ema": ..., "config": {...}}``).

``.pt`` files are always read with ``torch.load(weights_only=True)``: no pickled code is ever run, since
users download these files from the internet.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

from .config import ARPG_PRESETS, ARPGConfig, get_preset
from ..errors import CheckpointError
from .transformer import ARPG
from ..util.files import atomic_write
from ..util.hub import resolve_file
from ..util.pretrained import names_pretrained
from ..util.state import load_state_strict, savable_state

from ..util.checkpoints import PREFIXES, STATE_KEYS, read_checkpoint, strip_prefixes  # noqa: F401 (re-exported)


# ------------------------------------------------------------------------------------------------
# ARPG models
# ------------------------------------------------------------------------------------------------
def infer_arpg_config(sd: Mapping[str, torch.Tensor], head_dim: int = 64, grid_size: int = 16) -> ARPGConfig:
    """Guess the architecture from tensor shapes (the RoPE grid is not stored: ``grid_size`` is assumed)."""
    try:
        vocab, dim = sd["head.weight"].shape
        n_emb = sd["embeddings.weight"].shape[0]
        n_self = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"layers\.self_dec\.(\d+)\.", k)))
        hidden = sd["layers.self_dec.0.ffn.w1.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"cannot infer an ARPG architecture from these tensors (missing {e})") from None
    if dim % head_dim:
        head_dim = 32 if dim % 32 == 0 else dim
    return ARPGConfig(dim=dim, n_layer=2 * n_self, n_head=dim // head_dim, vocab_size=vocab,
                      num_classes=n_emb - vocab - 3, grid_size=grid_size, ffn_hidden=hidden)


def suggest_preset(sd: Mapping[str, torch.Tensor]) -> str:
    try:
        cfg = infer_arpg_config(sd)
    except CheckpointError:
        return "none (not an ARPG state dict)"
    for name, params in ARPG_PRESETS.items():
        p = get_preset(name)
        if (p.dim, p.n_layer) == (cfg.dim, cfg.n_layer):
            return name
    return f"none; shapes say dim={cfg.dim}, n_layer={cfg.n_layer}, vocab={cfg.vocab_size}, classes={cfg.num_classes}"


def load_model(path: str | os.PathLike, preset: str | None = None, *, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None, **overrides: Any):
    """Load an ARPG model from any accepted checkpoint; returns it in eval mode.

    ``path`` may also be a published name (``ARPG-L``, ``ARPG-XL``, ``ARPG-XXL``: the released files, fetched
    through the Hugging Face cache), an ``hf://OWNER/REPO/FILE`` address, a folder written by
    ``save_pretrained`` or a Hub repository ``OWNER/REPO`` holding one (see :mod:`arpg.util.hub`). A published
    model's recommended sampling settings are the paper's (the pinned recipe of its architecture).

    Architecture: ``preset`` (+ ``overrides``) if given, else the config stored in the file, else it is
    inferred from tensor shapes (head_dim 64, 16x16 grid unless ``overrides`` say otherwise).
    """
    if names_pretrained(path):
        if preset is not None or overrides:
            raise CheckpointError(f"{path} is a saved model folder with its own config; drop the preset / overrides")
        model = ARPG.from_pretrained(path, device=device)
        model = model.to(dtype) if dtype is not None else model
        return model.eval()
    path = resolve_file(path)
    sd, extras = read_checkpoint(path)
    if "quantize.embedding.weight" in sd and "head.weight" not in sd:
        raise CheckpointError(f"{path} is a VQ tokenizer checkpoint, not an ARPG model (pass it as --tokenizer)")
    if preset is not None:
        cfg = get_preset(preset, **overrides)
    elif "config" in extras and extras.get("config_kind", "config") != "vq_config" and "dim" in extras["config"]:
        cfg = ARPGConfig.from_dict({**extras["config"], **overrides})
    else:
        head_dim = overrides.pop("head_dim", 64)
        cfg = infer_arpg_config(sd, head_dim=head_dim, grid_size=overrides.get("grid_size", 16))
        if overrides:
            cfg = ARPGConfig.from_dict({**cfg.to_dict(), **overrides})
    with torch.device("meta"):
        model = ARPG(cfg)
    model = model.to_empty(device=device)
    model.reset_parameters()  # fills the non-persistent RoPE table
    load_state_strict(model, {k: v for k, v in sd.items()}, path, suggest=suggest_preset)
    if "sampling" in extras:
        if not isinstance(extras["sampling"], dict):
            raise CheckpointError(f"{path} stores sampling settings that are not a JSON object")
        model.sampling = dict(extras["sampling"])  # checked where it is used: arpg.sampling.recommended_sampling
    if isinstance(extras.get("text_encoder"), str):
        model.text_encoder = extras["text_encoder"]  # what made its prompt features (text models)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def save_model(model, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write weights as .safetensors with the config in the metadata (atomic)."""
    sd = savable_state(model)
    meta = {"arpg_config": model.config.to_json(), "format": "arpg"}
    settings = getattr(model, "sampling", None)
    if settings is not None:
        meta["sampling"] = json.dumps(settings if isinstance(settings, dict) else settings.to_dict())
    if getattr(model, "text_encoder", None):
        meta["text_encoder"] = model.text_encoder
    meta.update(metadata or {})
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta))
