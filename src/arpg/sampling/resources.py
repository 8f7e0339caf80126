"""What a sampling call needs from its device: a low-precision copy of the weights (made once), and an
estimate of a decoding batch's memory checked against what is free."""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext

import torch

from ..util import devices
from ..errors import ARPGError
from ..model import ARPG
from ..packing import MOVED, is_packed_in_place, pack_state, pack_weights, packed_bytes, packs_set_aside, unpack_weights


CACHED_ATTRIBUTES = ("_cast_weights", "_static_steps")  # what sampling keeps on a model, never copied


def plain_copy(model: ARPG) -> ARPG:
    """A deep copy of ``model`` without what sampling caches on it (weight copies, compiled graphs)."""
    if is_packed_in_place(model):  # its parameters hold stand-ins: a copy would compute with them
        raise ARPGError(MOVED.format(what="a copy of the model (bf16, fp16, int8) cannot be made from them"))
    kept = {k: model.__dict__.pop(k) for k in CACHED_ATTRIBUTES if k in model.__dict__}
    try:
        return copy.deepcopy(model)
    finally:
        model.__dict__.update(kept)


def cast_weights(model: ARPG, dtype: torch.dtype) -> ARPG:
    """A copy of ``model`` whose parameters are ``dtype`` (buffers such as the RoPE table stay float32), made
    once and kept on the model until any parameter changes (moved, trained: in-place updates bump a
    tensor's version). Low-precision weights need no autocast, which re-casts every weight on every call."""
    key = (dtype, id(model), tuple((p.data_ptr(), p._version) for p in model.parameters()))
    hit = model.__dict__.get("_cast_weights")
    if hit is not None and hit[0] == key:
        return hit[1]
    model.__dict__.pop("_cast_weights", None)  # never copy an old copy along
    twin = plain_copy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.data = p.data.to(dtype)
    model.__dict__["_cast_weights"] = (key, twin)  # a plain attribute: not a submodule, not in state_dict
    return twin


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device`` (None when unknown): :func:`arpg.util.devices.available_memory`,
    looked up at each call so that one patch of that probe reaches every check."""
    return devices.available_memory(device)


def sampling_bytes(cfg, rows: int, max_queries: int, itemsize: int) -> int:
    """A lower estimate of the memory one decoding batch of ``rows`` (guidance doubles them) needs: the
    preallocated KV cache of every Pass-1 layer plus the shared Pass-2 keys/values, and the float32 logits,
    probabilities and filtering copies of the widest step."""
    seq = cfg.n_cells + 1
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


def weights_for_call(model: ARPG, pack: bool, own_copy: bool) -> AbstractContextManager:
    """The context a sampling call runs its matmuls in (the combination of options was checked by
    :meth:`arpg.sampling.runtime.Runtime.validate`). ``pack``: through packed copies, made here
    (:func:`use_packed_weights`); moved in place when ``own_copy`` (a weight copy sampling made itself, e.g.
    the bf16 one, so it never holds its weights twice). Otherwise plain ``F.linear``: packed copies an earlier
    call left are set aside for this one, and an own copy packed in place gets its plain weights back."""
    if pack:
        use_packed_weights(model, in_place=own_copy)
        return nullcontext()
    if own_copy and is_packed_in_place(model):
        unpack_weights(model)
    return packs_set_aside(model)


def use_packed_weights(model: ARPG, in_place: bool = False) -> None:
    """Pack ``model``'s decoding weights (:func:`arpg.packing.pack_weights`), refusing in one line a copy that
    the free memory could not hold (``in_place`` needs no room: it moves one matmul's weight at a time). Which
    options may combine with packing is :meth:`arpg.sampling.runtime.Runtime.validate`'s to say."""
    if all(h is not None for h in pack_state(model)) and (is_packed_in_place(model) or not in_place):
        return  # packed already, still valid
    need = 0 if in_place else packed_bytes(model)
    free = available_memory(model.head.weight.device)
    if free is not None and free < need:
        raise ARPGError(f"pack_weights needs about {need / 2**20:.0f} MB for the packed copy and only "
                        f"{free / 2**20:.0f} MB are free: leave it off")
    pack_weights(model, in_place=in_place)
