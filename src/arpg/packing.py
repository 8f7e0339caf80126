"""Pre-packed Linear weights for CPU decoding: one oneDNN-blocked copy of each decoding matmul's weight,
shared by eager and compiled sampling.

Why: the decoding step's matmuls are thin (2 x batch x tokens-of-the-step rows), and ``F.linear`` re-lays
out the weight for the CPU's vector units on every call. Packing it once into oneDNN's blocked layout
removes that work. ``benchmarks/linear_packing.py`` measures the gain per matmul: on a 2-core AMX Xeon, at
ARPG-L shapes and 128 rows, about 1.1x in float32 and 1.3-1.6x in bf16 (``results/linear_packing_amx.md``). One packed copy serves
every row count, so eager and every compiled graph share it; ``compile="frozen"`` instead keeps a packed
copy per graph (several GB for ARPG-L).

How: :func:`pack_weights` packs the weights (fused q|k|v and w1|w3 included, :mod:`arpg.fusion`) and keeps
the packed tensors in a registry, each module holding only an integer handle. :func:`linear` /
:func:`project` use the packed copy while it still holds the module's weight (same storage, same
``_version``, so an optimizer step or ``load_state_dict`` falls back to ``F.linear`` at once, never to stale
weights), only where no gradient is needed, and otherwise call ``F.linear``. Under ``torch.compile`` the
packed matmul is a custom op (``arpg::packed_linear``) that inductor leaves as it is. Cost: one more copy of
the packed weights in memory (about their size), freed with the model or by :func:`unpack_weights`.
"""

from __future__ import annotations

import itertools
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ARPGError

HANDLE = "packed_handle"  # module attribute: the handle of its own weight's packed copy
FUSED_HANDLE = "fused_packed_handle"  # module attribute: the handle of its fused weight's packed copy

# handle -> (data_ptr, _version, dtype, packed tensor, id of the owning module). Entries are dropped when
# their module is collected, repacked or unpacked.
_REGISTRY: dict[int, tuple[int, int, torch.dtype, torch.Tensor, int]] = {}
_NEXT = itertools.count(1)


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


def _valid(handle: int | None, weight: torch.Tensor) -> torch.Tensor | None:
    entry = _REGISTRY.get(handle) if handle is not None else None
    if entry is None:
        return None
    ptr, version, dtype, packed, _ = entry
    if ptr != weight.data_ptr() or version != weight._version or dtype != weight.dtype:
        return None
    return packed


def _packed_or_plain(x: torch.Tensor, weight: torch.Tensor, handle: int) -> torch.Tensor:
    packed = _valid(handle, weight)
    if packed is None or x.dtype != weight.dtype or x.device.type != "cpu":
        return F.linear(x, weight)
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
    if (handle is None or (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
            or torch.is_autocast_enabled("cpu")):  # autocast decides the matmul's dtype: leave it to F.linear
        return F.linear(x, weight)
    if torch.compiler.is_compiling():
        return torch.ops.arpg.packed_linear(x, weight, handle)
    return _packed_or_plain(x, weight, handle)  # eager: skip the custom op's dispatch cost


def project(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a bias-free Linear, through its packed weight if it has one."""
    handle = layer.__dict__.get(HANDLE)
    return layer(x) if handle is None else linear(x, layer.weight, handle)


def _register(owner: nn.Module, attribute: str, weight: torch.Tensor) -> int:
    with torch.no_grad():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 64)
    old = owner.__dict__.get(attribute)
    if old in _REGISTRY and _REGISTRY[old][4] == id(owner):  # not a handle copied along with a deep copy
        del _REGISTRY[old]
    handle = next(_NEXT)
    _REGISTRY[handle] = (weight.data_ptr(), weight._version, weight.dtype, packed, id(owner))
    owner.__dict__[attribute] = handle
    weakref.finalize(owner, _REGISTRY.pop, handle, None)
    return handle


def _decoding_linears(model: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """(owner, attribute, weight) of every matmul a decoding step runs: fused weights where present."""
    from .fusion import FUSED_ATTRIBUTE

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


def pack_weights(model: nn.Module) -> nn.Module:
    """Pack every decoding matmul's weight of ``model`` (CPU, float32 or bf16) in place; returns ``model``.
    Copies that are still valid are kept, so calling it again after nothing changed costs nothing."""
    weight = model.head.weight
    if weight.device.type != "cpu":
        raise ARPGError(f"packed weights are for CPU decoding (oneDNN); the model is on {weight.device}: "
                        "on a GPU use compile=True")
    why = packing_available(weight.dtype)
    if why:
        raise ARPGError(why)
    for owner, attr, w in _decoding_linears(model):
        if _valid(owner.__dict__.get(attr), w) is None:
            _register(owner, attr, w)
    return model


def unpack_weights(model: nn.Module) -> nn.Module:
    """Drop every packed copy of ``model`` (the weights themselves are untouched); returns ``model``."""
    for m in model.modules():
        for attr in (HANDLE, FUSED_HANDLE):
            handle = m.__dict__.pop(attr, None)
            if handle in _REGISTRY and _REGISTRY[handle][4] == id(m):
                del _REGISTRY[handle]
    return model


def packed_bytes(model: nn.Module) -> int:
    """Bytes the model's weights take, i.e. about what their packed copies hold."""
    return sum(w.numel() * w.element_size() for _, _, w in _decoding_linears(model))
