"""Reading and writing files safely: atomic writes, and loaders that never run pickled code.

Every loader here turns a bad file into one :class:`~arpg.errors.ARPGError` line in our words, and tells
two cases apart because users act on them differently:

* *not readable* -- missing, truncated, corrupt, or not that kind of file at all;
* *unsafe* -- a pickle that would import and call Python objects (``os.system`` and friends). It is
  refused before anything runs: ``torch.load(weights_only=True)`` and ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ARPGError, CheckpointError


# ------------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------------
def temp_beside(path: Path, suffix: str = ".tmp") -> str:
    """A new empty temp file in ``path``'s folder (same file system, so ``os.replace`` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    _chmod_umask(tmp)
    return tmp


def _chmod_umask(path: str) -> None:
    """mkstemp (and some writers, e.g. safetensors) make 0600 files; give the usual permissions (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Write ``path`` via ``write_fn(tmp_path)`` into a temp file in the same folder, fsync, then rename.

    A crash (even ``kill -9``) mid-write leaves the previous file intact.
    """
    path = Path(path)
    tmp = temp_beside(path)
    try:
        write_fn(tmp)
        _chmod_umask(tmp)  # again: the writer may have replaced the file
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# ------------------------------------------------------------------------------------------------
# Safe reading
# ------------------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


#: Modules whose objects a weights-only torch file may name (tensor rebuilding, ordered dicts, byte codecs,
#: the argparse Namespace training scripts store): anything else in a pickle means it wants to run code.
_PLAIN_MODULES = ("torch", "collections", "_codecs", "argparse")


def pickle_globals(path: Path, limit: int = 256 * 2**20) -> list[str]:
    """The ``module.name`` objects a pickle (or a torch zip file's ``data.pkl``) would import, read with
    :mod:`pickletools` -- nothing is executed. A damaged stream gives what was read up to the damage."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                data = z.read(names[0]) if names else b""
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
    except (OSError, zipfile.BadZipFile, KeyError):
        return []
    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # the stream is damaged past this point
        pass
    return found


def unsafe_reason(e: BaseException, path: Path | None = None) -> str | None:
    """The Python object a refused pickle tried to load (``posix.system``), or None when the file is not
    such a pickle. torch's weights-only unpickler names it as ``GLOBAL module.name``; for streams it
    cannot parse (other pickle protocols) the pickle's imports are read directly."""
    text = str(e)
    if "GLOBAL" in text:
        after = text.split("GLOBAL", 1)[1].split()
        return after[0] if after else "a Python object"
    if path is not None:
        for name in pickle_globals(path):
            if name.split(".")[0] not in _PLAIN_MODULES:
                return name
    return None


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint", error=CheckpointError,
                    mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``, with one-line errors that say whether the file is unreadable or
    unsafe. Training scripts store their argparse arguments beside the weights; a Namespace holds only
    plain data, so allowing it keeps the guarantee that no code runs."""
    path = Path(path)
    if not path.exists():
        raise error(f"{what} not found: {path}")
    if path.is_dir():
        raise error(f"{path} is a folder, not a {what} file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol hints: the outcome is reported below
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # corrupt, truncated, foreign or code-carrying pickles all land here
        bad = unsafe_reason(e, path)
        if bad is not None:
            raise error(f"refused {path}: the file contains Python objects that are not plain tensors "
                        f"({bad}); it is unsafe to load, and nothing in it was run") from None
        raise error(f"{path} is not a {what} (corrupt, truncated or not a torch file)") from None


def load_npy(path: str | os.PathLike, what: str = "array file", mmap: bool = False) -> np.ndarray:
    """``np.load`` of one ``.npy`` array without pickles, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ARPGError(f"{what} not found: {path}")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e) or "Python objects" in str(e):
            raise ARPGError(f"refused {path}: it holds Python objects, not plain numbers (unsafe to load; nothing "
                            "in it was run)") from None
        raise ARPGError(f"{path} is not a readable {what} (corrupt or not a .npy file: {_first_line(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ARPGError(f"{path} is not a readable {what} (corrupt or not a .npy file: {_first_line(e)})") from None
    if not isinstance(arr, np.ndarray):
        raise ARPGError(f"{path} is not a {what}: it holds several arrays (.npz), one was expected")
    return arr


def read_jsonl(path: str | os.PathLike, what: str = "file") -> list[tuple[int, Any]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file; one-line :class:`ARPGError` for
    a file that cannot be read or a line that is not JSON (naming ``path:line``)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ARPGError(f"cannot read the {what} {path}: {type(e).__name__}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise ARPGError(f"{path}:{n} is not JSON ({e.msg})") from None
    return rows
