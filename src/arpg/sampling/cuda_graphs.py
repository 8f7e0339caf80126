"""CUDA graphs over the static-shape decode steps (used by ``compile=True`` when the model is on a GPU).

Each static step (:mod:`arpg.sampling.compiled`) is captured once per shape key and then replayed: one
launch per step instead of hundreds of kernel launches. What a replay needs:

* **inputs through static buffers**: every tensor argument except the KV cache is copied into a buffer
  made at capture time (``copy_`` is a device-side kernel: no host sync);
* **the KV cache at fixed addresses**: :class:`~arpg.sampling.compiled.StaticSteps` keeps one cache per
  (rows, capacity, dtype) and hands the same memory to every call, so the captured writes and reads land
  in it; a replay with a cache elsewhere is refused;
* **no host reads inside the loop**: positions come from a device table, weights and temperatures are
  filled on the device, uniforms are drawn before the replay.

Capture: two warm-up runs on a side stream (the first also compiles), then ``torch.cuda.graph``. A step
writes the same keys/values at the same positions on every run with the same inputs, so the warm-ups
leave the cache as one run would; captured kernels do not execute, so the first replay follows capture.
Outputs are cloned (graphs share one memory pool: the next replay may reuse an output's memory).

The CUDA calls are injected (``graph_factory``, ``capture``, ``side_stream``), so the CPU tests drive the
whole path with a stand-in graph that records the step and replays it from the static buffers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable

import torch

from ..model.cache import KVCache
from ..errors import ARPGError

PERSISTENT_FIELDS = ("self_k", "self_v", "shared_k", "shared_v")  # the cache memory a graph writes/reads


def _ptrs(cache: KVCache) -> tuple[int, ...]:
    return tuple(t.data_ptr() for f in PERSISTENT_FIELDS for t in
                 (getattr(cache, f) if isinstance(getattr(cache, f), list) else [getattr(cache, f)]))


class GraphedSteps:
    """Capture-once, replay-after calls of static-shape step functions, keyed by shape."""

    def __init__(self, graph_factory: Callable[[], Any] | None = None,
                 capture: Callable[..., Any] | None = None,
                 side_stream: Callable[[], Any] | None = None, warmups: int = 2):
        self.graph_factory = graph_factory or torch.cuda.CUDAGraph
        self.capture = capture or (lambda graph, pool: torch.cuda.graph(graph, pool=pool))
        self.side_stream = side_stream or _cuda_side_stream
        self.warmups = warmups
        self.pool = None
        self.entries: dict[tuple, dict] = {}

    def _static(self, args: tuple) -> tuple:
        """Static copies of the call's inputs; the cache keeps its big tensors, its small ones are copied."""
        out = []
        for a in args:
            if isinstance(a, KVCache):
                small = {f: (None if getattr(a, f) is None else getattr(a, f).clone())
                         for f in ("class_ids", "condition", "condition_active")}
                out.append(dataclasses.replace(a, **small))
            elif isinstance(a, torch.Tensor):
                out.append(a.clone())
            else:
                out.append(a)
        return tuple(out)

    @staticmethod
    def _load(static: tuple, args: tuple) -> None:
        for s, a in zip(static, args):
            if isinstance(a, KVCache):
                if _ptrs(a) != _ptrs(s):
                    raise ARPGError("a CUDA-graph step was replayed with a KV cache at other addresses than "
                                    "it was captured with")
                for f in ("class_ids", "condition", "condition_active"):
                    if getattr(a, f) is not None:
                        getattr(s, f).copy_(getattr(a, f))
            elif isinstance(a, torch.Tensor):
                s.copy_(a)

    def run(self, key: tuple, fn: Callable, *args):
        entry = self.entries.get(key)
        if entry is None:
            static = self._static(args)
            with self.side_stream():
                for _ in range(self.warmups):  # compiles on the first run; idempotent on the cache
                    fn(*static)
            graph = self.graph_factory()
            with self.capture(graph, self.pool):
                out = fn(*static)
            if self.pool is None and hasattr(graph, "pool"):
                self.pool = graph.pool()  # every later graph shares this memory pool
            if hasattr(graph, "bind"):  # a stand-in graph (tests) is told what it captured
                graph.bind(fn, static, out)
            entry = self.entries[key] = dict(graph=graph, static=static, out=out)
        else:
            self._load(entry["static"], args)
        entry["graph"].replay()
        return _clone(entry["out"])


def _clone(out):
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, tuple):
        return tuple(_clone(o) for o in out)
    return out


@contextlib.contextmanager
def _cuda_side_stream():
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        yield
    torch.cuda.current_stream().wait_stream(stream)
