"""Argument checking shared by every sub-command: typed argparse helpers and the one-line parser.

Every number, device, dtype and path a user types is checked here, at parse time, before any model is
loaded or any progress bar starts. A bad value ends the command with one line on stderr
(``arpg COMMAND: error: argument --x: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import ARPGError
from ..speedups.int8 import quantize_int8
from ..sampling.runtime import Runtime
from ..util.devices import check_device_name, parse_dtype
from ..util.hub import PUBLISHED, looks_like_repo, parse_hf_address, published_name

#: Image formats an output image may be written as (by its file extension).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Seeds go to torch.Generator.manual_seed, which takes 64-bit values.
MAX_SEED = 2**63 - 1


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse prints the usage block first by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------------
def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``lo..hi`` (either bound may be None)."""
    def parse(text: str) -> int:
        value = _int(text)
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in the interval (open ends where asked)."""
    def parse(text: str) -> float:
        value = _float(text)
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {text}")
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise argparse.ArgumentTypeError(f"must be {'<' if hi_open else '<='} {hi}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


positive_int = int_range(1)
nonneg_int = int_range(0)
seed_int = int_range(0, MAX_SEED)
finite_float = float_range()
positive_float = float_range(0.0, lo_open=True)
nonneg_float = float_range(0.0)
#: top-p: a probability mass in (0, 1]
probability = float_range(0.0, 1.0, lo_open=True)
#: EMA decay: 0 (off) or a value below 1
decay = float_range(0.0, 1.0, hi_open=True)


# ------------------------------------------------------------------------------------------------
# Devices and dtypes
# ------------------------------------------------------------------------------------------------
def device_name(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (checked against this machine)."""
    try:
        return check_device_name(text)
    except ARPGError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def dtype_name(text: str) -> str:
    """An argparse type: fp32 / bf16 / fp16 (and their long names)."""
    try:
        parse_dtype(text)
    except ARPGError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return str(text).lower()


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", type=device_name, help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="fp32", type=dtype_name,
                   help="compute dtype via autocast: fp32 (default), bf16, fp16")


def apply_int8(args: argparse.Namespace, model):
    """``model``, or its int8 weight-only copy when ``--int8`` was given (checked against --dtype)."""
    if not getattr(args, "int8", False):
        return model
    Runtime(dtype=parse_dtype(args.dtype), int8=True).validate(flags=True)
    return quantize_int8(model)


# ------------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------------
def _writable_ancestor(path: Path) -> None:
    """Raise unless ``path`` could be created: no file on the way, and the nearest existing folder takes a
    new file (probed by creating one: permission bits alone say nothing for root or read-only mounts)."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {parent} is a file, not a folder")
    probe = path if path.is_dir() else parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=".arpg-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: cannot write into {probe} ({e.strerror or e})") from None


def output_dir(text: str) -> Path:
    """An argparse type: a folder to write into (existing or to be made)."""
    path = Path(text).expanduser()
    if str(text).strip() == "":
        raise argparse.ArgumentTypeError("the output folder must not be empty")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} exists and is a file, not a folder")
    _writable_ancestor(path)
    return path


def output_file(suffixes: tuple[str, ...] | None = None) -> Callable[[str], Path]:
    """An argparse type: a file to write (its folder is made if missing); ``suffixes`` restricts the extension."""
    def parse(text: str) -> Path:
        path = Path(text).expanduser()
        if str(text).strip() == "" or path.name in ("", ".", ".."):
            raise argparse.ArgumentTypeError(f"{text!r} is not a file name")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name")
        if suffixes is not None and path.suffix.lower() not in suffixes:
            got = f"extension {path.suffix!r}" if path.suffix else "no extension"
            raise argparse.ArgumentTypeError(f"{path} has {got}; use one of {', '.join(suffixes)}")
        _writable_ancestor(path)
        return path
    parse.__name__ = "path"
    return parse


def output_path(text: str) -> Path:
    """An argparse type: a ``.safetensors`` file to write, or a folder (anything without that ending)."""
    if str(text).lower().endswith(".safetensors"):
        return output_file((".safetensors",))(text)
    if Path(text).suffix.lower() in (".pt", ".pth", ".bin", ".ckpt"):
        raise argparse.ArgumentTypeError(f"{text}: arpg writes .safetensors files (no pickles) or a folder")
    return output_dir(text)


def weights_source(text: str) -> str:
    """An argparse type: an existing weights file or folder, a published name (ARPG-L, ARPG-XL, ARPG-XXL,
    VQ-16), an ``hf://OWNER/REPO/FILE`` address or a Hub repository ``OWNER/REPO``."""
    if Path(text).expanduser().exists() or published_name(text) or looks_like_repo(text):
        return str(Path(text).expanduser()) if Path(text).expanduser().exists() else text
    try:
        if parse_hf_address(text):
            return text
    except ARPGError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    raise argparse.ArgumentTypeError(f"file not found: {text} (nor a published name: {', '.join(PUBLISHED)})")


def input_file(text: str) -> Path:
    """An argparse type: an existing, readable file."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"file not found: {path}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{path} is not readable")
    return path
