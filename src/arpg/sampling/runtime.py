"""How a sampling call runs, as one value: :class:`Runtime` (compute dtype, autocast, compile mode, packed
weights, int8 weights), the one place where the rules of which options combine live (:meth:`Runtime.validate`),
and the rule that picks the fastest path on the machine at hand for what the caller leaves unset
(:func:`resolve_runtime`).

The default rule (options left as None):

* on a CPU, a float32 model (or bf16 where the CPU has native bf16) at least :data:`PACK_MIN_DIM` wide runs
  every decoding matmul through oneDNN-packed weights (:mod:`arpg.speedups.packing`). The user's model is
  packed in place for the call and its own ``nn.Linear`` objects are put back at the end
  (:func:`packed_for_call`), so memory stays one copy of the weights and, after the call, the model trains,
  saves, loads and moves exactly as before. Compilation stays opt-in: on a CPU its compile time rarely pays
  for one call (``benchmarks/results/default_path.md``).
* on CUDA, a float32 model runs through a bf16 copy of its weights (made once, kept beside the model) where
  the GPU has bf16. ``compile=True`` (PyTorch's CUDA graphs through ``mode="reduce-overhead"``) stays opt-in
  until a GPU has measured its compile time against what it saves (``benchmarks/gpu_check.py``).

Which draw turns probabilities into tokens is a sampling setting (``token_draw``, inverse-CDF by default).
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
from ..speedups import is_fused, is_int8, is_packed, pack_weights, packing_available, unpack_weights
from ..speedups.packing import PACKED
from .steps import COMPILE_MODES

#: The default packs only models at least this wide: at width 192 (the demo model) the packed matmuls lost to
#: plain ones, at 512 and 1024 they won (benchmarks/results/default_path.md).
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
        int8: the model holds int8 weight-only layers (:mod:`arpg.speedups.int8`).
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
    w = model.embeddings.weight  # not a sharded (FSDP) parameter
    return type(w.data) is torch.Tensor


def resolve_runtime(model: ARPG, *, dtype: torch.dtype | None = None, autocast: bool = False,
                    compile: bool | str | None = None, pack_weights: bool | None = None) -> Runtime:
    """The :class:`Runtime` a call with these options uses: each option given (not None) as given, the rest
    by the default rule (module docstring); validated."""
    int8 = is_int8(model)
    rt = Runtime(dtype=dtype, autocast=bool(autocast), compile=False if compile is None else compile,
                 pack_weights=bool(pack_weights), int8=int8).validate()
    device = model.embeddings.weight.device
    weights_dtype = model.embeddings.weight.dtype
    packed = is_packed(model)
    if packed and pack_weights is False:
        raise ARPGError(PACKED.format(what="this call runs without them (pack_weights=False)"))
    if dtype is None and device.type == "cuda" and weights_dtype == torch.float32 and not autocast \
            and torch.cuda.is_bf16_supported():
        rt = dataclasses.replace(rt, dtype=torch.bfloat16)  # the default on a GPU: bf16 weights
    own = rt.dtype is None or rt.dtype == weights_dtype or rt.autocast
    if packed and not own:
        raise ARPGError(PACKED.format(what="a copy of the model (bf16, fp16) cannot be made from them"))
    if pack_weights is None:
        runs_in = weights_dtype if own else rt.dtype
        if packed:
            return dataclasses.replace(rt, pack_weights=True).validate()
        if (device.type != "cpu" or model.config.dim < PACK_MIN_DIM or rt.autocast or rt.compile == "frozen"
                or int8 or packing_available(runs_in) or is_fused(model) or not _plain_tensor_weights(model)):
            return rt
        rt = dataclasses.replace(rt, pack_weights=True)
    elif pack_weights:
        if device.type != "cpu":
            raise ARPGError(f"packed weights are for CPU decoding (oneDNN); the model is on {device}")
        if is_fused(model):
            raise ARPGError("pack_weights takes unfused models: call arpg.speedups.unfuse_projections(model) first "
                            "(fusion is meant for GPUs)")
        why = packing_available(weights_dtype if own else rt.dtype)
        if why:
            raise ARPGError(why)
    # A low-precision copy made by the call (dtype) is packed on that copy and stays so; the caller's own model
    # is packed in place for the call and restored after it.
    return dataclasses.replace(rt, packed_for_call=rt.pack_weights and own and not packed)


_LOCK = threading.Lock()
_USERS: "weakref.WeakKeyDictionary[ARPG, int]" = weakref.WeakKeyDictionary()


@contextmanager
def packed_for_call(model: ARPG) -> Iterator[None]:
    """Hold ``model``'s decoding weights packed in place for the body, then put its own Linears back with their
    values (exactly: packing is a re-layout). Nested or concurrent calls on one model share one packing: the first
    in packs, the last out restores. Runs outside inference mode, so the restored parameters stay ordinary
    tensors that autograd can use."""
    with _LOCK:
        users = _USERS.get(model, 0)
        if users == 0:
            pack_weights(model)
        _USERS[model] = users + 1
    try:
        yield
    finally:
        with _LOCK:
            _USERS[model] -= 1
            if _USERS[model] == 0:
                del _USERS[model]
                unpack_weights(model)


def pack_once(model: ARPG, *, dtype: torch.dtype | None = None, compile: bool | str | None = None,
              pack_weights: bool | None = None) -> bool:
    """For a process that owns ``model`` and samples it many times (``arpg sample-fid``): where calls with these
    options would pack it for each call, pack it once now instead (:func:`arpg.speedups.pack_weights`, one copy
    of the weights), so no call pays the packing again (about 2 s per call for ARPG-L on a 2-core CPU). The model
    then stays packed: only for callers that never train, save or copy it afterwards. Returns whether it packed."""
    if resolve_runtime(model, dtype=dtype, compile=compile, pack_weights=pack_weights).packed_for_call:
        packed_in_place(model)
        return True
    return False


def packed_in_place(model: ARPG) -> ARPG:
    """:func:`arpg.speedups.pack_weights` (named apart: :func:`pack_once` takes a ``pack_weights`` option)."""
    return pack_weights(model)


def call_weights(model: ARPG, runtime: Runtime):
    """The context the whole call runs in: :func:`packed_for_call` when the runtime says so."""
    return packed_for_call(model) if runtime.packed_for_call else nullcontext()
