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
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _trim():
    return getattr(_libc(), "malloc_trim", None)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def fix_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """Serve every allocation of ``nbytes`` or more with its own mapping, returned to the OS when freed, and
    stop glibc from raising that threshold as large blocks are freed (which leaves a training step's freed
    activations resident, fragmented, step after step). Process-wide; ``arpg train`` calls it on a CPU. True
    where it took effect (glibc), False elsewhere. ``MALLOC_MMAP_THRESHOLD_`` in the environment does the
    same for any process."""
    fn = getattr(_libc(), "mallopt", None)
    return bool(fn is not None and fn(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(int(nbytes))) == 1)


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``); a no-op where unavailable."""
    fn = _trim()
    if fn is not None:
        fn(0)
