"""Devices and dtypes by name: the one place a user's ``--device`` / ``--dtype`` string becomes a torch object."""

from __future__ import annotations

import re

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
