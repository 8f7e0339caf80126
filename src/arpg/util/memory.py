"""Giving freed host memory back to the operating system.

glibc keeps freed blocks in its heap, and once a large block has been freed it serves later large requests
from the heap too, so a process that replaces its big tensors one by one (packing weights in place and back)
holds the old and the new set in resident memory although only one is alive. ``malloc_trim`` returns the free
pages; elsewhere (another C library, another OS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return getattr(libc, "malloc_trim", None)
    except OSError:
        return None


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``); a no-op where unavailable."""
    fn = _trim()
    if fn is not None:
        fn(0)
