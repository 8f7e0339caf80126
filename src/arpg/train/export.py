"""Getting whole weights out of a (possibly sharded) training model: full state dicts on rank 0 under FSDP,
a plain model holding them, and the final ``.safetensors`` export."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict)

from ..util.state import load_state_strict
from ..model.weights import save_model
from ..model.config import ARPGConfig
from ..model import ARPG
from .optim import EMA


def full_options(**kw) -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, **kw)


def full_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, ema: EMA | None
                     ) -> tuple[dict, dict | None, dict | None]:
    """Full (gathered) model, EMA and optimizer state dicts; collective under FSDP, complete on rank 0.
    ``optimizer=None`` skips the optimizer state."""
    opts = full_options(cpu_offload=True)
    ema_sd = None
    if ema is not None:
        with ema.swapped_in():
            # Clone: without a process group the helpers return views of the live parameters.
            ema_sd = {k: v.detach().clone() for k, v in get_model_state_dict(model, options=opts).items()}
    model_sd = get_model_state_dict(model, options=opts)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
    return model_sd, ema_sd, optim_sd


def plain_model(config: ARPGConfig, sd: dict, device: torch.device) -> ARPG:
    """A non-distributed model of ``config`` holding ``sd`` (for sampling and export), in eval mode."""
    with torch.device("meta"):  # no random init: every weight is overwritten below
        model = ARPG(config)
    model = model.to_empty(device=device)
    model.rope.copy_(model.rope_table())
    load_state_strict(model, sd, "training state")
    return model.eval()


def export_weights(out: Path, config: ARPGConfig, model_sd: dict, ema_sd: dict | None,
                   metadata: dict[str, str] | None = None) -> tuple[Path, Path | None]:
    """``out/final.safetensors`` (and ``out/final-ema.safetensors``) with the config (and ``metadata``, e.g. a
    text model's prompt encoder) in the metadata."""
    raw = out / "final.safetensors"
    save_model(plain_model(config, model_sd, torch.device("cpu")), raw, metadata)
    ema_path = None
    if ema_sd is not None:
        ema_path = out / "final-ema.safetensors"
        save_model(plain_model(config, ema_sd, torch.device("cpu")), ema_path, metadata)
    return raw, ema_path
