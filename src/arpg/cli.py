"""The ``arpg`` command.

Sub-commands live in :mod:`arpg.commands`: every module there defines ``register(subparsers)`` which adds
its parsers and sets ``func`` (called with the parsed args). User mistakes raise :class:`ARPGError` and
are printed as one line (exit status 2), never as a traceback: so are bad arguments (the parser
prints one line, not its usage block), out-of-memory errors and file-system errors. Anything else is a
bug: it is reported as one "internal error" line (exit status 1); ``ARPG_DEBUG=1`` shows the traceback.
Warnings raised while a command runs print as one ``arpg CMD: warning: ...`` line each.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings

import torch
from tqdm import tqdm

from .util.version import __version__
from . import commands
from .commands._common import OneLineParser
from .errors import ARPGError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="arpg", description="ARPG: randomized parallel decoding for images.")
    parser.add_argument("--version", action="version", version=f"arpg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def _close_progress_bars() -> None:
    """End any live tqdm bar so that an error message starts on a line of its own."""
    try:
        for bar in list(getattr(tqdm, "_instances", [])):
            bar.close()
    except Exception:  # pragma: no cover - cosmetic only
        pass


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _warning_line(name: str):
    """Warnings during a command print as one line, like errors, not as a file:line report."""
    def show(message, category, filename, lineno, file=None, line=None):
        tqdm.write(f"{name}: warning: {_one_line(Warning(message))}", file=sys.stderr)  # above any live bar
    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line argument error: return its status
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    name = f"arpg {args.command}"
    try:
        with warnings.catch_warnings():  # restores the usual display afterwards
            warnings.showwarning = _warning_line(name)
            rc = args.func(args)
    except ARPGError as e:
        _close_progress_bars()
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _close_progress_bars()
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except MemoryError as e:  # host memory; torch.OutOfMemoryError (GPU) is a RuntimeError, below
        _close_progress_bars()
        print(f"{name}: error: out of memory ({_one_line(e)}); use a smaller --batch-size", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied, a file vanished mid-run: the user's environment
        _close_progress_bars()
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        _close_progress_bars()
        if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
            print(f"{name}: error: out of memory ({_one_line(e)[:200]}); use a smaller --batch-size",
                  file=sys.stderr)
            return 2
        if os.environ.get("ARPG_DEBUG"):
            raise
        print(f"{name}: internal error: {type(e).__name__}: {_one_line(e)[:300]} (a bug: please report it; "
              "ARPG_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
