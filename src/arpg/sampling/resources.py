"""What a sampling call needs from its device: a low-precision copy of the weights (made once), and an
estimate of a decoding batch's memory checked against what is free."""

from __future__ import annotations

import copy
import weakref

import torch

from ..util import devices
from ..errors import ARPGError
from ..model import ARPG
from ..speedups.packing import PACKED, is_packed

# model -> (key, its low-precision copy): kept beside the model, never on it
_CAST: "weakref.WeakKeyDictionary[ARPG, tuple]" = weakref.WeakKeyDictionary()


def plain_copy(model: ARPG) -> ARPG:
    """A deep copy of ``model`` (what sampling keeps for it, weight copies and compiled graphs, stays behind)."""
    if is_packed(model):  # its Linears hold stand-ins: a copy would compute with them
        raise ARPGError(PACKED.format(what="a copy of the model (bf16, fp16, int8) cannot be made from them"))
    return copy.deepcopy(model)


def cast_copy_of(model: ARPG) -> ARPG | None:
    """The low-precision copy :func:`cast_weights` keeps for ``model``, if any."""
    hit = _CAST.get(model)
    return None if hit is None else hit[1]


def cast_weights(model: ARPG, dtype: torch.dtype) -> ARPG:
    """A copy of ``model`` whose parameters are ``dtype`` (buffers such as the RoPE table stay float32), made
    once and kept on the model until any parameter changes (moved, trained: in-place updates bump a
    tensor's version). Low-precision weights need no autocast, which re-casts every weight on every call."""
    key = (dtype, tuple((p.data_ptr(), p._version) for p in model.parameters()))
    hit = _CAST.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    _CAST.pop(model, None)  # the old copy goes before a new one is made
    twin = plain_copy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.data = p.data.to(dtype)
    _CAST[model] = (key, twin)
    return twin


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device`` (None when unknown): :func:`arpg.util.devices.available_memory`,
    looked up at each call so that one patch of that probe reaches every check."""
    return devices.available_memory(device)


def sampling_bytes(cfg, rows: int, max_queries: int, itemsize: int) -> int:
    """A lower estimate of the memory one decoding batch of ``rows`` (guidance doubles them) needs: the
    preallocated KV cache of every Pass-1 layer plus the shared Pass-2 keys/values, and the float32 logits,
    probabilities and filtering copies of the widest step."""
    seq = cfg.n_cells + cfg.prefix_len
    cache = rows * seq * cfg.dim * 2 * (cfg.n_layer // 2 + 1) * itemsize
    logits = rows * max_queries * cfg.vocab_size * 4 * 3
    return cache + logits


def check_memory(model: ARPG, batch: int, guided: bool, max_queries: int, dtype: torch.dtype | None) -> None:
    """Refuse, with one line, a batch whose decoding cannot fit in the device's free memory."""
    device = model.embeddings.weight.device
    free = available_memory(device)
    if free is None:
        return
    itemsize = (dtype if dtype not in (None, torch.float32) else model.embeddings.weight.dtype).itemsize
    rows = batch * (2 if guided else 1)
    need = sampling_bytes(model.config, rows, max_queries, itemsize)
    if need > 0.9 * free:
        per = sampling_bytes(model.config, 2 if guided else 1, max_queries, itemsize)
        fits = max(1, int(0.9 * free // per))
        raise ARPGError(f"a decoding batch of {batch} needs about {need / 2**30:.1f} GiB but {device} has "
                        f"{free / 2**30:.1f} GiB free; use a batch size of at most {fits}")
