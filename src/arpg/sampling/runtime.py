"""How a sampling call runs, as one value: :class:`Runtime` (compute dtype, autocast, compile mode, packed
weights, int8 weights), the one place where the rules of which options combine live (:meth:`Runtime.validate`),
and the rule that picks the fastest path on the machine at hand for what the caller leaves unset
(:func:`resolve_runtime`).

The default rule (options left as None): on a CPU, a float32 model (or bf16 where the CPU has native bf16) at
least :data:`PACK_MIN_DIM` wide runs every decoding matmul through oneDNN-packed weights (:mod:`arpg.packing`).
The user's model is packed in place for the call and given its plain weights back at the end
(:func:`packed_for_call`), so memory stays one copy of the weights and, after the call, the model trains,
saves, loads and moves exactly as before.
Compilation stays opt-in: on a CPU its compile time rarely pays for one call, and on CUDA the compiled
path has not yet been run on a GPU (``benchmarks/gpu_check.py`` is prepared for the first one). Which draw
turns probabilities into tokens is a sampling setting (``token_draw``, inverse-CDF by default).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import torch

from ..errors import ARPGError
from ..model import ARPG
from ..packing import is_packed_in_place, pack_state, pack_weights, packing_available, unpack_weights

COMPILE_MODES = (False, True, "frozen")
#: The default packs only models at least this wide: at width 192 (the demo model) the packed matmuls lost to
#: plain ones, at 512 and 1024 they won (benchmarks/results/default_path.md, default_path_L.md).
PACK_MIN_DIM = 512

#: Option names as the library and as the command line spell them, for the refusal messages.
_API = {"compile": "compile=True", "frozen": 'compile="frozen"', "pack": "pack_weights", "int8": "int8 weights",
        "dtype": "dtype"}
_CLI = {"compile": "--compile", "frozen": "--compile frozen", "pack": "--pack-weights", "int8": "--int8",
        "dtype": "--dtype"}


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How a call runs (never what it samples).

    Attributes:
        dtype: compute dtype; None = the weights' own.
        autocast: run a float32 model under ``torch.autocast(dtype)`` (the published sampler's way).
        compile: False, True (static-shape steps compiled by ``torch.compile``) or ``"frozen"``.
        pack_weights: run the decoding matmuls through oneDNN-packed weights (CPU).
        int8: the model holds int8 weight-only layers (:mod:`arpg.sampling.quantize`).
        packed_for_call: the default rule packs the caller's model in place for this call only.
    """

    dtype: torch.dtype | None = None
    autocast: bool = False
    compile: bool | str = False
    pack_weights: bool = False
    int8: bool = False
    packed_for_call: bool = False

    def validate(self, flags: bool = False) -> "Runtime":
        """One-line :class:`ARPGError` for a combination that cannot run; ``flags``: name the options as the
        command line does. Returns ``self``."""
        n = _CLI if flags else _API
        if not (isinstance(self.compile, bool) or self.compile == "frozen"):
            raise ARPGError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.int8 and self.dtype not in (None, torch.float32):
            raise ARPGError(f"{'--int8' if flags else 'an int8-weight model'} computes in float32: leave "
                            f"{n['dtype']} unset (or fp32)")
        if self.compile and self.int8:
            raise ARPGError(f"{n['compile']} does not take {n['int8']} (torch.compile cannot trace the quantized "
                            "layers); use one of the two")
        if self.compile and self.autocast:
            raise ARPGError("compile=True runs low-precision weights, not autocast: pass dtype without autocast")
        if self.pack_weights:
            if self.autocast:
                raise ARPGError("pack_weights runs the weights' own dtype, not autocast: pass dtype without autocast")
            if self.compile == "frozen":
                raise ARPGError(f"{n['pack']} does not take {n['frozen']} (both pack the weights their own way); "
                                f"use {n['pack']} with {n['compile']} (one shared packed copy), or frozen alone")
            if self.int8:
                raise ARPGError(f"{n['pack']} does not take {n['int8']} (they are packed by their quantized "
                                "layers); use one of the two")
            if self.dtype not in (None, torch.float32, torch.bfloat16):
                raise ARPGError(packing_available(self.dtype))
        return self

    def describe(self) -> dict[str, Any]:
        """What ran, for the record written beside an output."""
        return {"dtype": None if self.dtype is None else str(self.dtype).replace("torch.", ""),
                "autocast": self.autocast, "compile": self.compile, "pack_weights": self.pack_weights,
                "int8": self.int8}


def _plain_tensor_weights(model: ARPG) -> bool:
    w = model.head.weight  # not a sharded (FSDP) parameter, nor a stand-in of weights packed in place
    return is_packed_in_place(model) or (type(w.data) is torch.Tensor and w.stride() != (0, 0))


def resolve_runtime(model: ARPG, *, dtype: torch.dtype | None = None, autocast: bool = False,
                    compile: bool | str | None = None, pack_weights: bool | None = None) -> Runtime:
    """The :class:`Runtime` a call with these options uses: each option given (not None) as given, the rest
    by the default rule (module docstring); validated."""
    int8 = bool(model.__dict__.get("int8_weights"))
    rt = Runtime(dtype=dtype, autocast=bool(autocast), compile=False if compile is None else compile,
                 pack_weights=bool(pack_weights), int8=int8).validate()
    if pack_weights is not None:
        return rt
    device = model.embeddings.weight.device
    weights_dtype = model.embeddings.weight.dtype
    runs_in = weights_dtype if dtype is None or autocast else dtype
    if (device.type != "cpu" or model.config.dim < PACK_MIN_DIM or rt.autocast or rt.compile == "frozen" or int8
            or packing_available(runs_in) or not _plain_tensor_weights(model)):
        return rt
    # A low-precision copy made by the call (dtype) is packed in place on that copy; the caller's own
    # model is packed in place for the call and restored after it.
    own = dtype is None or dtype == weights_dtype
    return dataclasses.replace(rt, pack_weights=True, packed_for_call=own and not _already_packed(model))


def _already_packed(model: ARPG) -> bool:
    return is_packed_in_place(model) or all(h is not None for h in pack_state(model))


_LOCK = threading.Lock()
_USERS: "weakref.WeakKeyDictionary[ARPG, int]" = weakref.WeakKeyDictionary()


@contextmanager
def packed_for_call(model: ARPG) -> Iterator[None]:
    """Hold ``model``'s decoding weights packed in place for the body, then give the plain weights back
    (exactly: packing is a re-layout). Nested or concurrent calls on one model share one packing: the first
    in packs, the last out restores. Runs outside inference mode, so the restored parameters stay ordinary
    tensors that autograd can use."""
    with _LOCK:
        users = _USERS.get(model, 0)
        if users == 0:
            pack_weights(model, in_place=True)
        _USERS[model] = users + 1
    try:
        yield
    finally:
        with _LOCK:
            _USERS[model] -= 1
            if _USERS[model] == 0:
                del _USERS[model]
                unpack_weights(model)


def call_weights(model: ARPG, runtime: Runtime):
    """The context the whole call runs in: :func:`packed_for_call` when the default rule chose it."""
    return packed_for_call(model) if runtime.packed_for_call else nullcontext()
