"""Loading and saving tokenizers.

:func:`load_tokenizer` accepts LlamaGen's ``vq_ds16_c2i.pt`` (weights under ``model``), ``.safetensors``
files written by :func:`save_tokenizer` (config under the metadata key ``vq_config``), and this project's
``arpg train-vq`` checkpoints. ``.pt`` files are read with ``weights_only=True``: no pickled code runs.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import torch

from ..util.state import load_state_strict
from ..util.checkpoints import read_checkpoint
from ..util.files import atomic_write
from ..util.hub import resolve_file
from ..util.pretrained import names_pretrained
from ..errors import CheckpointError
from .config import VQ_PRESETS, VQConfig, get_vq_preset
from .model import VQTokenizer

_REQUIRED = ("encoder.conv_in.weight", "decoder.conv_out.weight", "quantize.embedding.weight", "quant_conv.weight")


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return 1 + max(found) if found else 0


def infer_vq_config(sd: Mapping[str, torch.Tensor]) -> VQConfig:
    """Rebuild the architecture from tensor names and shapes.

    Not stored in the weights: ``norm_groups`` (taken from a preset with the same layout, else the
    largest of 32, 16, 8, ... dividing every width), ``norm_eps`` and ``l2_norm`` (defaults).
    """
    try:
        ch, in_ch = sd["encoder.conv_in.weight"].shape[:2]
        levels = _count(sd, r"encoder\.conv_blocks\.(\d+)\.")
        widths = [sd[f"encoder.conv_blocks.{i}.res.0.conv1.weight"].shape[0] for i in range(levels)]
        size, dim = sd["quantize.embedding.weight"].shape
        z_channels = sd["encoder.conv_out.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"cannot infer a VQ tokenizer architecture from these tensors (missing {e})") from None
    if any(w % ch for w in widths):
        raise CheckpointError(f"encoder widths {widths} are not multiples of conv_in width {ch}")
    used = sd.get("quantize.codebook_used")
    cfg = dict(
        codebook_size=size, codebook_dim=dim, in_channels=in_ch, ch=ch, ch_mult=tuple(w // ch for w in widths),
        z_channels=z_channels,
        enc_blocks=_count(sd, r"encoder\.conv_blocks\.0\.res\.(\d+)\."),
        dec_blocks=_count(sd, r"decoder\.conv_blocks\.0\.res\.(\d+)\."),
        attn_lowest=f"encoder.conv_blocks.{levels - 1}.attn.0.q.weight" in sd,
        mid_attn="encoder.mid.1.q.weight" in sd,
        usage_buffer=0 if used is None else used.numel(),
    )
    layout = ("ch", "ch_mult", "z_channels", "enc_blocks", "dec_blocks", "attn_lowest", "mid_attn")
    for name in VQ_PRESETS:
        p = get_vq_preset(name).to_dict()
        if all(p[k] == (list(cfg[k]) if k == "ch_mult" else cfg[k]) for k in layout):
            return VQConfig(**cfg, norm_groups=p["norm_groups"])
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if all(w % g == 0 for w in widths))
    return VQConfig(**cfg, norm_groups=groups)


def _suggest(sd: Mapping[str, torch.Tensor]) -> str:
    try:
        cfg = infer_vq_config(sd)
    except CheckpointError:
        return "none (not a VQ tokenizer state dict)"
    for name in VQ_PRESETS:
        p = get_vq_preset(name)
        if (p.ch, p.ch_mult, p.z_channels) == (cfg.ch, cfg.ch_mult, cfg.z_channels):
            return f"{name} (with codebook_size={cfg.codebook_size}, codebook_dim={cfg.codebook_dim})"
    return f"none; shapes say ch={cfg.ch}, ch_mult={cfg.ch_mult}, codebook={cfg.codebook_size}x{cfg.codebook_dim}"


def load_tokenizer(path: str | os.PathLike, preset: str | None = None, *, device: str | torch.device = "cpu",
                   **overrides: Any) -> VQTokenizer:
    """Load a tokenizer in eval mode (fp32) from any accepted file.

    ``path`` may also be ``VQ-16`` (LlamaGen's released ``vq_ds16_c2i.pt``, fetched through the Hugging Face
    cache), an ``hf://OWNER/REPO/FILE`` address, a folder written by ``save_pretrained`` or a Hub repository
    ``OWNER/REPO`` holding one.

    Architecture: ``preset`` (+ ``overrides``) if given, else the config stored in the file, else it is
    inferred from tensor shapes. Loading is strict: every tensor must match.
    """
    if names_pretrained(path):
        if preset is not None or overrides:
            raise CheckpointError(f"{path} is a saved tokenizer folder with its own config; drop the preset / "
                                  "overrides")
        return VQTokenizer.from_pretrained(path, device=device)
    path = resolve_file(path)
    sd, extras = read_checkpoint(path)  # allows argparse.Namespace beside the weights (LlamaGen checkpoints)
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        kind = "an ARPG transformer" if "head.weight" in sd and "embeddings.weight" in sd else "not a VQ tokenizer"
        raise CheckpointError(f"{path} is {kind} checkpoint: it lacks {', '.join(missing[:2])} "
                              f"(first keys: {', '.join(list(sd)[:3])})")
    stored = extras.get("config")
    if preset is not None:
        cfg = get_vq_preset(preset, **overrides)
    elif VQConfig.looks_like(stored):
        cfg = VQConfig.from_dict({**stored, **overrides})
    else:
        cfg = infer_vq_config(sd)
        if overrides:
            cfg = VQConfig.from_dict({**cfg.to_dict(), **overrides})
    with torch.device("meta"):
        model = VQTokenizer(cfg)
    model = model.to_empty(device=device)
    load_state_strict(model, {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, path,
                      suggest=_suggest)
    return model.eval()


def save_tokenizer(tok: VQTokenizer, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write weights as ``.safetensors`` (atomic) with the config JSON under the metadata key ``vq_config``."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().cpu() for k, v in tok.state_dict().items()}
    meta = {"vq_config": tok.config.to_json(), "format": "arpg-vq"}
    meta.update(metadata or {})
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta))
