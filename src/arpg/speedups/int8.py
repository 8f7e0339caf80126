"""int8 weight-only sampling on the CPU: every ``nn.Linear`` of a copy of the model swapped for torch's dynamically
quantized Linear.

Weights are stored as int8 (per-tensor scale), activations stay float32 and are quantized on the fly inside
each matmul (torch's dynamic quantization, fbgemm / qnnpack CPU kernels). It is opt-in because it trades a
small, measured loss of quality for speed (``benchmarks/int8.py``, ``benchmarks/results/int8.md``).
"""

from __future__ import annotations

import copy
import warnings

import torch

from ..errors import ARPGError
from ..model import ARPG
from .packing import PACKED, is_packed

# the dynamically quantized Linear torch.ao swaps in
_INT8_LINEAR = torch.ao.nn.quantized.dynamic.Linear


def quantize_int8(model: ARPG) -> ARPG:
    """An int8 weight-only copy of ``model`` for sampling on the CPU (the original is untouched).

    Pass it to :func:`arpg.generate` like any model; it cannot be trained, saved as a checkpoint or moved to
    a GPU (the quantized kernels are CPU only).
    """
    if model.embeddings.weight.device.type != "cpu":
        raise ARPGError("int8 weights run on the CPU only: load the model with device='cpu'")
    if model.embeddings.weight.dtype != torch.float32:
        raise ARPGError(f"int8 quantization starts from float32 weights, got {model.embeddings.weight.dtype}")
    if is_packed(model):  # its Linears hold stand-ins: a copy would compute with them
        raise ARPGError(PACKED.format(what="an int8 copy cannot be made from them"))
    twin = copy.deepcopy(model).eval()
    with warnings.catch_warnings():  # torch marks torch.ao dynamic quantization deprecated; it is what runs here
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(twin, {torch.nn.Linear}, dtype=torch.qint8)


def is_int8(model: torch.nn.Module) -> bool:
    """True when ``model``'s projections are int8 weight-only layers (:func:`quantize_int8`)."""
    return any(isinstance(m, _INT8_LINEAR) for m in model.modules())
