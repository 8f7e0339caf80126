"""Devices and dtypes by name: the one place a user's ``--device`` / ``--dtype`` string becomes a torch object."""

from __future__ import annotations

import re
import warnings

import torch

from ..errors import ARPGError

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def check_device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against this machine; one-line
    :class:`ARPGError` otherwise. Returns the normalised name."""
    name = str(text).strip().lower()
    if not _DEVICE_RE.match(name):
        raise ARPGError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ARPGError(f"device {text!r} requested but CUDA is not available here")
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            raise ARPGError(f"device {text!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ARPGError("device 'mps' requested but MPS is not available here")
    return name


def pick_device(name: str | None) -> torch.device:
    """The device called ``name``; ``auto`` / None is the GPU when there is one, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(check_device_name(name))


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise ARPGError(f"unknown dtype {name!r}; choose one of fp32, bf16, fp16") from None


def cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies ``dtype`` matrices natively (oneDNN's own check: AVX512-BF16, AMX or
    AVX-NE-CONVERT for bf16; AVX512-FP16 / AMX-FP16 for fp16). float32 always is. Without it, torch emulates
    the low-precision matmul, orders of magnitude slower than float32 (``benchmarks/RESULTS.md``)."""
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    if probe is None:
        return True
    try:
        return bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):  # a build without oneDNN (e.g. some ARM wheels): do not guess
        return True


def warn_if_emulated(device: torch.device, dtype: torch.dtype | None) -> None:
    """A one-line warning when ``dtype`` work is asked of a CPU that has no native support for it: the run is
    correct, only far slower than float32 there."""
    if dtype in (torch.bfloat16, torch.float16) and torch.device(device).type == "cpu" and not cpu_has_native(dtype):
        name = "bf16" if dtype == torch.bfloat16 else "fp16"
        warnings.warn(f"this CPU has no native {name} matmul ({torch.backends.cpu.get_cpu_capability()}), so "
                      f"{name} is emulated and far slower than fp32 here; use fp32 on this machine (--dtype fp32)",
                      RuntimeWarning, stacklevel=3)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device`` (None when unknown): the probe every memory check reads
    (tests pin it, so no test depends on how much memory the host has free)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
