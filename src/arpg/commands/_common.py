"""Argument helpers shared by several sub-commands."""

from __future__ import annotations

import argparse

import torch

from ..errors import ARPGError

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ARPGError(f"unknown dtype {name!r}; choose one of fp32, bf16, fp16") from None


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ARPGError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="fp32", help="compute dtype via autocast: fp32 (default), bf16, fp16")
