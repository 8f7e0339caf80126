"""Pre-packed Linear weights for CPU decoding: one oneDNN-blocked copy of each decoding matmul's weight,
shared by eager and compiled sampling.

Why: the decoding step's matmuls are thin (2 x batch x tokens-of-the-step rows), and ``F.linear`` re-lays
out the weight for the CPU's vector units on every call. Packing it once into oneDNN's blocked layout
removes that work (``benchmarks/linear_packing.py`` measures the gain per matmul and CPU). One packed copy serves
every row count, so eager and every compiled graph share it; ``compile="frozen"`` instead keeps a packed
copy per graph (several GB for ARPG-L).

How: :func:`pack_weights` packs the weights (fused q|k|v and w1|w3 included, :mod:`arpg.fusion`) and keeps
the packed tensors in a registry, each module holding only an integer handle. :func:`linear` /
:func:`project` use the packed copy while it still holds the module's weight (same storage, same
``_version``, so an optimizer step or ``load_state_dict`` falls back to ``F.linear`` at once, never to stale
weights), only where no gradient is needed, and otherwise call ``F.linear``. Under ``torch.compile`` the
packed matmul is a custom op (``arpg::packed_linear``) that inductor leaves as it is. Cost: one more copy of
the packed weights in memory (about their size), freed with the model or by :func:`unpack_weights`.

``pack_weights(model, in_place=True)`` moves the weights instead: each packed weight's parameter keeps only a
one-element stand-in (:func:`arpg.fusion.stand_in`), so the model holds one copy of its weights, packed.
Such a model decodes; ``state_dict()`` still returns the real values (unpacked on the fly),
``load_state_dict`` unpacks first, and :func:`unpack_weights` puts the plain weights back. What cannot run
from a packed copy (a gradient, autocast, a sampling call told not to use packed weights) raises a one-line
error instead of reading the stand-ins.
"""

from __future__ import annotations

import itertools
import weakref
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ARPGError
from .fusion import FUSED_ATTRIBUTE, is_stand_in, stand_in
from .util.memory import release_freed_memory

HANDLE = "packed_handle"  # module attribute: the handle of its own weight's packed copy
FUSED_HANDLE = "fused_packed_handle"  # module attribute: the handle of its fused weight's packed copy

# handle -> (data_ptr, _version, dtype, packed tensor, id of the owning module). An entry is replaced when its
# module is repacked and dropped when the module is collected or unpacked.
_REGISTRY: dict[int, tuple[int, int, torch.dtype, torch.Tensor, int]] = {}
_NEXT = itertools.count(1)
_HANDLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {attribute: its handle}
HOOKS = "_packed_in_place_hooks"  # model attribute: the state-dict hooks of a model packed in place
MOVED = ("this model's weights were packed in place (arpg.packing.pack_weights(model, in_place=True)) and live "
         "only in their packed copies; {what}: call arpg.packing.unpack_weights(model) first")


def packing_available(dtype: torch.dtype) -> str | None:
    """None when CPU weights of ``dtype`` can be packed here, else why not (one line)."""
    from .util.devices import cpu_has_native

    if dtype not in (torch.float32, torch.bfloat16):
        return f"packed weights are float32 or bfloat16, not {str(dtype).replace('torch.', '')}"
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (mkldnn), which packed weights need"
    if dtype == torch.bfloat16 and not cpu_has_native(torch.bfloat16):
        return "this CPU has no native bf16 matmul, so packed bf16 weights would be emulated (slow)"
    return None


def _version(weight: torch.Tensor) -> int:
    # Tensors made under inference mode (e.g. the bf16 copy sampling casts) keep no version counter; nothing
    # may update them in place outside inference mode, and sampling never does inside it.
    return -1 if weight.is_inference() else weight._version


def _valid(handle: int | None, weight: torch.Tensor) -> torch.Tensor | None:
    entry = _REGISTRY.get(handle) if handle is not None else None
    if entry is None:
        return None
    ptr, version, dtype, packed, _ = entry
    if ptr != weight.data_ptr() or version != _version(weight) or dtype != weight.dtype:
        return None
    return packed


def _plain(x: torch.Tensor, weight: torch.Tensor, what: str) -> torch.Tensor:
    if is_stand_in(weight):  # never compute with a stand-in's one element
        raise ARPGError(MOVED.format(what=what))
    return F.linear(x, weight)


def _packed_or_plain(x: torch.Tensor, weight: torch.Tensor, handle: int) -> torch.Tensor:
    packed = _valid(handle, weight)
    if packed is None or x.dtype != weight.dtype or x.device.type != "cpu":
        return _plain(x, weight, "a matmul needs them in another dtype or on another device")
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


@torch.library.custom_op("arpg::packed_linear", mutates_args=())
def _packed_linear_op(x: torch.Tensor, weight: torch.Tensor, handle: int) -> torch.Tensor:
    return _packed_or_plain(x, weight, handle)


@_packed_linear_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, handle: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def linear(x: torch.Tensor, weight: torch.Tensor, handle: int | None) -> torch.Tensor:
    """``F.linear(x, weight)`` through the packed copy ``handle`` names, when it is valid and no gradient is
    needed; plain ``F.linear`` otherwise."""
    if handle is None:
        return _plain(x, weight, "this matmul runs without them")
    if torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad):
        return _plain(x, weight, "a gradient cannot flow through them")
    if torch.is_autocast_enabled("cpu"):  # autocast decides the matmul's dtype: leave it to F.linear
        return _plain(x, weight, "autocast cannot use them")
    if torch.compiler.is_compiling():
        return torch.ops.arpg.packed_linear(x, weight, handle)
    return _packed_or_plain(x, weight, handle)  # eager: skip the custom op's dispatch cost


def project(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a bias-free Linear, through its packed weight if it has one."""
    handle = layer.__dict__.get(HANDLE)
    if handle is None and is_stand_in(layer.weight):
        raise ARPGError(MOVED.format(what="this matmul runs without them"))
    return layer(x) if handle is None else linear(x, layer.weight, handle)


def _register(owner: nn.Module, attribute: str, weight: torch.Tensor) -> int:
    if is_stand_in(weight):
        raise ARPGError(MOVED.format(what="one of them no longer matches its parameter and cannot be packed again"))
    with torch.no_grad():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 64)
    # One handle per module and attribute for the module's whole life: repacking (after an optimizer step,
    # unpack_weights, packing in place) keeps it, so compiled graphs, which bake it in, stay valid.
    mine = _HANDLES.setdefault(owner, {})
    handle = mine.get(attribute)
    if handle is None:
        handle = mine[attribute] = next(_NEXT)
        weakref.finalize(owner, _REGISTRY.pop, handle, None)
    _REGISTRY[handle] = (weight.data_ptr(), _version(weight), weight.dtype, packed, id(owner))
    owner.__dict__[attribute] = handle  # a deep copy carries this along, but never _HANDLES' entry
    return handle


def _decoding_linears(model: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """(owner, attribute, weight) of every matmul a decoding step runs: fused weights where present."""
    out: list[tuple[nn.Module, str, torch.Tensor]] = []
    layers = model.layers
    for blk in list(layers.self_dec) + list(layers.cross_dec):
        attn, ffn = blk.attn, blk.ffn
        fused = attn.__dict__.get(FUSED_ATTRIBUTE)
        if fused is not None:
            out.append((attn, FUSED_HANDLE, fused))
        else:
            out += [(lin, HANDLE, lin.weight) for lin in (getattr(attn, n, None) for n in ("to_q", "to_k", "to_v"))
                    if lin is not None]
        out.append((attn.proj, HANDLE, attn.proj.weight))
        fused = ffn.__dict__.get(FUSED_ATTRIBUTE)
        if fused is not None:
            out.append((ffn, FUSED_HANDLE, fused))
        else:
            out += [(ffn.w1, HANDLE, ffn.w1.weight), (ffn.w3, HANDLE, ffn.w3.weight)]
        out.append((ffn.w2, HANDLE, ffn.w2.weight))
    out += [(layers.to_k, HANDLE, layers.to_k.weight), (layers.to_v, HANDLE, layers.to_v.weight),
            (model.head, HANDLE, model.head.weight)]
    return out


def pack_state(model: nn.Module) -> tuple[int | None, ...]:
    """The handles of the model's valid packed copies (None where a matmul is not packed): compiled graphs
    bake the handles in, so a change of this value means new graphs."""
    return tuple(h if _valid(h := owner.__dict__.get(attr), w) is not None else None
                 for owner, attr, w in _decoding_linears(model))


def packed_count(model: nn.Module) -> int:
    """How many of the model's decoding matmuls run through a valid packed copy right now."""
    return sum(_valid(owner.__dict__.get(attr), w) is not None for owner, attr, w in _decoding_linears(model))


def pack_weights(model: nn.Module, in_place: bool = False) -> nn.Module:
    """Pack every decoding matmul's weight of ``model`` (CPU, float32 or bf16); returns ``model``. Copies that
    are still valid are kept, so calling it again after nothing changed costs nothing. ``in_place``: move the
    weights into the packed copies (the parameters keep one-element stand-ins), so the model holds one copy
    of its weights instead of two; packing goes one matmul at a time, so it never holds both whole."""
    weight = model.head.weight
    if weight.device.type != "cpu":
        raise ARPGError(f"packed weights are for CPU decoding (oneDNN); the model is on {weight.device}: "
                        "on a GPU use compile=True")
    why = packing_available(weight.dtype)
    if why:
        raise ARPGError(why)
    todo = _decoding_linears(model)
    todo.reverse()
    while todo:  # popped one by one, so the list holds no reference to a weight already moved
        owner, attr, w = todo.pop()
        if _valid(owner.__dict__.get(attr), w) is None:
            _register(owner, attr, w)
        if in_place and not is_stand_in(w):
            del w
            _move(owner, attr)
            release_freed_memory()  # the plain weight's pages: resident memory stays one copy as it goes
    if in_place and HOOKS not in model.__dict__:
        model.__dict__[HOOKS] = (model.register_state_dict_post_hook(_real_values),
                                 model.register_load_state_dict_pre_hook(_unpack_before_load))
    return model


def _parts(owner: nn.Module) -> list[nn.Linear]:
    """The Linears whose weights are views of ``owner``'s fused weight (q|k|v or w1|w3, :mod:`arpg.fusion`)."""
    return [owner.to_q, owner.to_k, owner.to_v] if hasattr(owner, "to_k") else [owner.w1, owner.w3]


def _move(owner: nn.Module, attr: str) -> None:
    """Replace the weight behind ``owner``'s (valid) packed copy by stand-ins, freeing its memory."""
    handle = owner.__dict__[attr]
    _, _, dtype, packed, oid = _REGISTRY[handle]
    with torch.no_grad():
        if attr == FUSED_HANDLE:
            for lin in _parts(owner):
                lin.weight.data = stand_in(lin.weight)
            owner.__dict__[FUSED_ATTRIBUTE] = now = stand_in(owner.__dict__[FUSED_ATTRIBUTE])
        else:
            owner.weight.data = stand_in(owner.weight)
            now = owner.weight  # a parameter keeps its own version counter across a .data swap
    _REGISTRY[handle] = (now.data_ptr(), _version(now), dtype, packed, oid)


def _restore(owner: nn.Module, attr: str) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The plain weight behind ``owner``'s stand-in(s), and its value for each parameter (by id): row
    blocks of it for a fused weight."""
    handle = owner.__dict__.get(attr)
    w = owner.__dict__[FUSED_ATTRIBUTE] if attr == FUSED_HANDLE else owner.weight
    packed = _valid(handle, w)
    if packed is None:
        raise ARPGError("this model's weights were packed in place, and the packed copy of "
                        f"{type(owner).__name__} no longer matches its parameter: its values are lost")
    dense = packed.to_dense()
    if attr != FUSED_HANDLE:
        return dense, {id(owner.weight): dense}
    out, row = {}, 0
    for lin in _parts(owner):
        n = lin.weight.shape[0]
        out[id(lin.weight)] = dense[row:row + n]
        row += n
    return dense, out


def _moved(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(owner, attr) for owner, attr, w in _decoding_linears(model) if is_stand_in(w)]


def is_packed_in_place(model: nn.Module) -> bool:
    """True when some of ``model``'s weights live only in packed copies (``pack_weights(..., in_place=True)``)."""
    return bool(_moved(model))


def _real_values(module: nn.Module, state: dict, prefix: str, _metadata) -> None:
    """state_dict post-hook of a model packed in place: the real values instead of the stand-ins."""
    values: dict[int, torch.Tensor] = {}
    for owner, attr in _moved(module):
        values.update(_restore(owner, attr)[1])
    for name, param in module.named_parameters():
        if id(param) in values:
            state[prefix + name] = values[id(param)]


def _unpack_before_load(module: nn.Module, *_args) -> None:
    unpack_weights(module)  # load_state_dict copies into the parameters: give them their memory back first


def unpack_weights(model: nn.Module) -> nn.Module:
    """Drop every packed copy of ``model``, first giving weights packed in place their plain values back;
    returns ``model``."""
    with torch.no_grad():
        for owner, attr in _moved(model):
            dense, values = _restore(owner, attr)
            for lin in (_parts(owner) if attr == FUSED_HANDLE else [owner]):
                lin.weight.data = values[id(lin.weight)]
            if attr == FUSED_HANDLE:  # the parts are row blocks of one tensor again: it stays their fusion
                owner.__dict__[FUSED_ATTRIBUTE] = dense
            # this matrix's packed copy goes now, not after the loop: never both copies of every weight
            handle = owner.__dict__.pop(attr, None)
            if handle in _REGISTRY and _REGISTRY[handle][4] == id(owner):
                del _REGISTRY[handle]
            del dense, values
            release_freed_memory()
    for hook in model.__dict__.pop(HOOKS, ()):
        hook.remove()
    for m in model.modules():
        for attr in (HANDLE, FUSED_HANDLE):
            handle = m.__dict__.pop(attr, None)
            if handle in _REGISTRY and _REGISTRY[handle][4] == id(m):
                del _REGISTRY[handle]
    return model


@contextmanager
def packs_set_aside(model: nn.Module) -> Iterator[None]:
    """Run the body with plain ``F.linear`` (the packed copies are kept for later), e.g. a sampling call told
    not to use packed weights. A model packed in place has no plain weights to run: it raises."""
    if is_packed_in_place(model):
        raise ARPGError(MOVED.format(what="this call runs without them (pack_weights=False)"))
    taken = {}
    for m in model.modules():
        handles = {a: m.__dict__.pop(a) for a in (HANDLE, FUSED_HANDLE) if a in m.__dict__}
        if handles:
            taken[m] = handles
    try:
        yield
    finally:
        for m, handles in taken.items():
            m.__dict__.update(handles)


def packed_bytes(model: nn.Module) -> int:
    """Bytes the model's weights take, i.e. about what their packed copies hold."""
    return sum(w.numel() * w.element_size() for _, _, w in _decoding_linears(model))
