"""Shared helpers of the benchmark scripts: warm, interleaved A/B rounds; the CPU a result was measured on."""

from __future__ import annotations

import time
from typing import Callable


def interleaved_times(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant over ``repeats`` rounds, each round timing every variant once in turn (so a
    slow phase of a shared machine hits all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the results files: a speed claim names its CPU."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
