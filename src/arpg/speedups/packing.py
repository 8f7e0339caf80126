"""oneDNN-packed Linears for CPU decoding.

Why: a decoding step's matmuls are thin (2 x batch x tokens-of-the-step rows), and ``F.linear`` re-lays out
the weight for the CPU's vector units on every call. Packing it once into oneDNN's blocked layout removes
that work (``benchmarks/linear_packing.py`` measures the gain per matmul and CPU).

How: :func:`pack_weights` replaces every decoding ``nn.Linear`` of an ARPG model by a :class:`PackedLinear`
holding the packed weight. By default the weight *moves* (the Linear's parameter keeps a one-element
stand-in), so the model holds one copy of its weights, packed; :func:`unpack_weights` puts the very same
``nn.Linear`` objects back with their values (packing is a re-layout: exact), so optimizers and other
references to the parameters stay valid. While packed, ``state_dict()`` gives the real values under the
published keys and ``load_state_dict`` repacks what it loads; a gradient, autocast or another input dtype is
refused in one line, and moving or casting the model (``.to()``) gives each weight back to its Linear first
(the model then runs plain matmuls until it is packed again). Under ``torch.compile`` the packed matmul is a custom op
(``arpg::packed_linear``) that inductor leaves as it is.

A model packed and unpacked again and again (``arpg.generate`` does it for each call by default) gets the
same :class:`PackedLinear` objects back, so compiled graphs keep matching it.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn as nn

from ..errors import ARPGError
from ..util.memory import release_freed_memory

PACKED = ("this model's matmuls are packed for CPU sampling (arpg.speedups.pack_weights); {what}: call "
          "arpg.speedups.unpack_weights(model) first")

# nn.Linear -> its PackedLinear, reused by the next packing of the same Linear (compiled graphs keep matching)
_SWAPS: "weakref.WeakKeyDictionary[nn.Linear, PackedLinear]" = weakref.WeakKeyDictionary()


def packing_available(dtype: torch.dtype) -> str | None:
    """None when CPU weights of ``dtype`` can be packed here, else why not (one line)."""
    from ..util.devices import cpu_has_native

    if dtype not in (torch.float32, torch.bfloat16):
        return f"packed weights are float32 or bfloat16, not {str(dtype).replace('torch.', '')}"
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (mkldnn), which packed weights need"
    if dtype == torch.bfloat16 and not cpu_has_native(torch.bfloat16):
        return "this CPU has no native bf16 matmul, so packed bf16 weights would be emulated (slow)"
    return None


def _stand_in(like: torch.Tensor) -> torch.Tensor:
    """A weight-shaped tensor holding one element: what a moved parameter keeps (its shape still reads right)."""
    return torch.zeros(1, dtype=like.dtype, device=like.device).expand(like.shape)


#: Give freed pages back to the OS after each weight at least this big (and once at the end), so resident memory
#: stays one copy of the weights while they move. 0 = after every weight: with 8 MiB (fewer heap walks, about
#: 0.03 s less per call for a dim-512 model) a batch-1 call's peak rose from about the published sampler's to
#: 1.6x it (benchmarks/results/default_path.md), as glibc kept the freed small matrices.
TRIM_BYTES = 0


def _trim_after(weight: torch.Tensor) -> None:
    if weight.numel() * weight.element_size() >= TRIM_BYTES:
        release_freed_memory()


def _reorder(weight: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 64)


@torch.library.custom_op("arpg::packed_linear", mutates_args=())
def _packed_linear_op(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


@_packed_linear_op.register_fake
def _(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], out_features))


class PackedLinear(nn.Module):
    """A bias-free ``nn.Linear`` whose weight lives in oneDNN's blocked layout: same values, CPU decoding only.

    Built from the Linear it replaces (:func:`pack_weights`); ``move`` takes the weight's memory from it."""

    def __init__(self, linear: nn.Linear, move: bool = True):
        super().__init__()
        if linear.bias is not None:
            raise ARPGError("PackedLinear replaces bias-free Linears only")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.__dict__["original"] = linear  # not a submodule: its parameter is not this module's state
        self.__dict__["packed"] = None
        self.moved = False
        self.pack(move)

    def pack(self, move: bool = True) -> None:
        """(Re)pack from the original Linear's current weight; ``move``: leave it a stand-in."""
        w = self.original.weight
        self.__dict__["packed"] = _reorder(w)
        self.moved = move
        if move:
            w.data = _stand_in(w)
            _trim_after(w)

    def unpack(self) -> nn.Linear:
        """The original Linear with its values back (exact); this module lets go of the packed copy (and, until
        packed again, runs the original)."""
        linear = self.original
        if self.moved:
            linear.weight.data = self.packed.to_dense()
        self.__dict__["packed"], self.moved = None, False
        return linear

    @property
    def weight(self) -> torch.Tensor:
        if self.packed is None:
            return self.original.weight
        raise ARPGError(PACKED.format(what="the plain weight is not kept (a gradient or a loss needs it)"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self.packed
        if packed is None:  # unpacked by a move or cast (see _apply): the original Linear runs
            return self.original(x)
        if torch.is_grad_enabled() and x.requires_grad:
            raise ARPGError(PACKED.format(what="a gradient cannot flow through them"))
        if torch.is_autocast_enabled("cpu"):
            raise ARPGError(PACKED.format(what="autocast cannot use them (pass dtype without autocast)"))
        if x.dtype != packed.dtype or x.device.type != "cpu":
            raise ARPGError(PACKED.format(what=f"they take {str(packed.dtype).replace('torch.', '')} inputs on "
                                               f"the CPU, got {str(x.dtype).replace('torch.', '')} on {x.device}"))
        if torch.compiler.is_compiling():
            return torch.ops.arpg.packed_linear(x, packed, self.out_features)
        return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")  # eager: no custom-op dispatch

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        w = self.packed.to_dense() if self.moved else self.original.weight
        destination[prefix + "weight"] = w if keep_vars else w.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        value = state_dict[key]
        shape = (self.out_features, self.in_features)
        if tuple(value.shape) != shape:
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)}, the "
                              f"shape in the current model is {shape}")
            return
        with torch.no_grad():
            if not self.moved:
                self.original.weight.copy_(value)
            if self.packed is not None:
                self.__dict__["packed"] = _reorder(value.to(self.packed.dtype))

    def _apply(self, fn, recurse=True):
        # .to() / .double() / .cuda(): the weight comes back out of its packed copy and moves as a plain one;
        # the model then runs plain matmuls until it is packed again.
        self.unpack()
        self.original._apply(fn, recurse)
        return self

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed (oneDNN)"


def decoding_linears(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every projection a decoding step runs: each Linear of the two passes, and the head."""
    found = [(parent, name) for parent in model.layers.modules() for name, child in parent.named_children()
             if isinstance(child, (nn.Linear, PackedLinear))]
    return found + [(model, "head")]


def is_packed(model: nn.Module) -> bool:
    """True while some of ``model``'s projections run from packed weights (:class:`PackedLinear`)."""
    return any(isinstance(m, PackedLinear) and m.packed is not None for m in model.modules())


def pack_weights(model: nn.Module, move: bool = True) -> nn.Module:
    """Swap every decoding ``nn.Linear`` of ``model`` (CPU, float32 or bf16) for a :class:`PackedLinear`, one at a
    time (so it never holds two copies of every weight); returns ``model``. ``move=False`` keeps the plain weights
    too (two copies). Already packed projections stay as they are."""
    from .fusion import is_fused

    weight = model.head.weight if isinstance(model.head, nn.Linear) else None
    if weight is not None and weight.device.type != "cpu":
        raise ARPGError(f"packed weights are for CPU decoding (oneDNN); the model is on {weight.device}")
    why = packing_available(model.embeddings.weight.dtype)
    if why:
        raise ARPGError(why)
    if is_fused(model):
        raise ARPGError("this model's projections are fused (arpg.speedups.fuse_projections, meant for GPUs): "
                        "call arpg.speedups.unfuse_projections(model) before packing them")
    for parent, name in decoding_linears(model):
        linear = getattr(parent, name)
        if isinstance(linear, PackedLinear):
            if linear.packed is None:  # unpacked by a move or cast: pack it again
                linear.pack(move)
            continue
        swap = _SWAPS.get(linear)
        if swap is None or swap.packed is not None:
            swap = _SWAPS[linear] = PackedLinear(linear, move)
        else:
            swap.pack(move)
        setattr(parent, name, swap)
    release_freed_memory()
    return model


def unpack_weights(model: nn.Module) -> nn.Module:
    """Put back every Linear :func:`pack_weights` swapped out, with its values (exact); returns ``model``."""
    for parent, name in decoding_linears(model):
        swap = getattr(parent, name)
        if isinstance(swap, PackedLinear):
            setattr(parent, name, swap.unpack())
            _trim_after(swap.original.weight)
    release_freed_memory()
    return model
