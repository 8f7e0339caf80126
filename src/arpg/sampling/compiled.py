"""The static-shape decode path behind ``generate(..., compile=True)``.

:class:`StaticSteps` runs the decode loop's two calls -- Pass 1 over last step's tokens, Pass 2 plus
guidance, temperature, top-k/top-p and the token draw for this step's cells -- through the static-shape
steps of :mod:`arpg.static_decode`, each wrapped in ``torch.compile(fullgraph=True, dynamic=False)``.

Shapes: a step's graph depends on (rows, padded token count). The step counts of a schedule are padded
up to a few *buckets* (:func:`bucket_sizes`: the distinct counts when there are few, else the set of
``max_buckets`` sizes that wastes the fewest padded tokens), so a 64-step schedule compiles at most
``max_buckets`` Pass-1 and Pass-2 graphs per row count, once; later calls with the same shapes reuse them.
The cache position, the valid count, the guidance weight and the temperature are tensors, never Python
numbers baked into a graph.

Random numbers: the inverse-CDF uniforms are drawn from the caller's generator *outside* the graph, in the
same number and order as the eager sampler draws them, so compiled and eager sampling give the same tokens
from the same generator (up to float rounding at a CDF boundary). ``token_draw="multinomial"`` returns the
probabilities from the graph and draws with ``torch.multinomial`` eagerly.

Compile time is counted apart: the first call of each new graph (trace, compile and one run) is timed into
:attr:`StaticSteps.compile_seconds`; :func:`compile_report` gives it for a model.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import torch

from ..model.cache import KVCache
from ..errors import ARPGError
from ..fusion import check_fusions
from ..model import ARPG
from ..packing import pack_state
from ..static_decode import key_windows, static_capacity, static_extend, static_query, window_for
from .cuda_graphs import GraphedSteps
from .guidance import draw_from_logits, token_probs
from .resources import available_memory

MAX_BUCKETS = 6
_TOKENS = itertools.count()


def bucket_sizes(counts: list[int] | tuple[int, ...], max_buckets: int = MAX_BUCKETS) -> tuple[int, ...]:
    """The padded sizes for a schedule's step ``counts``: every count is padded up to the smallest bucket
    that holds it. The distinct counts when there are at most ``max_buckets``; otherwise the ``max_buckets``
    sizes (always including the largest count) that minimise the total number of padded tokens."""
    if max_buckets < 1:
        raise ARPGError(f"max_buckets must be >= 1, got {max_buckets}")
    values = sorted(set(int(c) for c in counts))
    if len(values) <= max_buckets:
        return tuple(values)
    freq = {v: 0 for v in values}
    for c in counts:
        freq[int(c)] += 1
    m = len(values)

    def waste(lo: int, hi: int) -> int:  # counts values[lo..hi] padded to values[hi]
        return sum(freq[values[j]] * (values[hi] - values[j]) for j in range(lo, hi + 1))

    # best[k][j]: least waste covering values[0..j] with k buckets, the last one at values[j].
    inf = float("inf")
    best = [[inf] * m for _ in range(max_buckets + 1)]
    back = [[-1] * m for _ in range(max_buckets + 1)]
    for j in range(m):
        best[1][j] = waste(0, j)
    for k in range(2, max_buckets + 1):
        for j in range(m):
            for i in range(j):
                cost = best[k - 1][i] + waste(i + 1, j)
                if cost < best[k][j]:
                    best[k][j], back[k][j] = cost, i
    k = min(range(1, max_buckets + 1), key=lambda kk: best[kk][m - 1])
    chosen, j = [], m - 1
    while j >= 0 and k >= 1:
        chosen.append(values[j])
        j, k = back[k][j], k - 1
    return tuple(sorted(chosen))


def _extras(cache: KVCache) -> tuple[bool, bool]:
    """Which optional cache inputs a graph reads (part of its key)."""
    return cache.condition is not None, cache.condition_active is not None


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Pad [R, T] to [R, width] with copies of the first column."""
    T = x.shape[1]
    return x if T == width else torch.cat([x, x[:, :1].expand(-1, width - T)], dim=1)


class StaticSteps:
    """Static-shape, optionally compiled, decode steps for one model (kept on it across calls)."""

    def __init__(self, model: ARPG, compile: bool = True, max_buckets: int = MAX_BUCKETS, freeze: bool = False,
                 graphs: GraphedSteps | None = None):
        self.model = model
        self.device = model.embeddings.weight.device
        self.graphs = graphs  # CUDA graphs over the steps (a GPU model: see static_steps)
        self._caches: dict[tuple, KVCache] = {}
        self.compiled = compile
        self.freeze = freeze
        self.weights_key = weights_key(model)
        self.pack_state = pack_state(model)  # the packed-weight handles the graphs bake in (arpg.packing)
        # torch.compile caches graphs per code object and reuses one whose guards pass; reading this number
        # in the graph bodies makes it a guard, so no instance ever runs another's (e.g. frozen) graphs.
        self.token = next(_TOKENS)
        self.max_buckets = max_buckets
        self.buckets: tuple[int, ...] = ()
        self.seen: set[tuple] = set()
        self.compile_seconds = 0.0
        extend, query = self._extend_graph, self._query_graph
        if compile:
            extend = torch.compile(extend, fullgraph=True, dynamic=False)
            query = torch.compile(query, fullgraph=True, dynamic=False)
        self._extend, self._query = extend, query
        self._positions: torch.Tensor | None = None

    # The two graph bodies: plain tensor code, traced once per shape.
    def _extend_graph(self, ids, cells, cache, start, n_valid, causal: bool, window: int):
        if self.token < 0:  # never true: see __init__
            raise ARPGError("bad StaticSteps token")
        static_extend(self.model, ids, cells, cache, start, n_valid, causal, window)

    def _query_graph(self, cells, cache, length, window: int, half: int, weight, temperature, top_k, top_p,
                     uniforms):
        if self.token < 0:  # never true: see __init__
            raise ARPGError("bad StaticSteps token")
        # guidance: conditional rows first, then the unconditional ones (guided at the head's input)
        logits = static_query(self.model, cells, cache, length, window, (half, weight) if half else None)
        if uniforms is None:
            return token_probs(logits, temperature, top_k, top_p), None
        V = logits.shape[-1]  # the eager sampler's draw (arithmetic and all), on the graph's own logits
        tokens, chosen = draw_from_logits(logits.reshape(-1, V), uniforms.reshape(-1, 1), temperature, top_k,
                                          top_p, overwrite=True)
        return tokens.view(logits.shape[:-1]), chosen.view(logits.shape[:-1])

    def _call(self, fn, key: tuple, *args):
        if self.graphs is not None:
            run = fn
            fn = lambda *a: self.graphs.run(key, run, *a)  # noqa: E731  (capture on first use, then replay)
        if key in self.seen or not (self.compiled or self.graphs is not None):
            return fn(*args)
        if self.freeze:
            self._check_room_for_frozen_graph()
        start = time.perf_counter()
        # One graph per shape: never fall back to eager silently when a schedule needs many of them.
        with torch._dynamo.config.patch(recompile_limit=4096, accumulated_recompile_limit=1 << 16,
                                        fail_on_recompile_limit_hit=True), \
                torch._inductor.config.patch(freezing=self.freeze):
            out = fn(*args)
        if args[0].device.type == "cuda":
            torch.cuda.synchronize(args[0].device)
        self.compile_seconds += time.perf_counter() - start
        self.seen.add(key)
        return out

    def _check_room_for_frozen_graph(self) -> None:
        """A frozen graph keeps its own packed copy of the weights it uses (inductor folds them in as
        constants, per graph): refuse a new one, in one line, when the free memory would not hold a copy of
        every weight, rather than let the machine run out mid-compile."""
        need = sum(p.numel() * p.element_size() for p in self.model.parameters())
        free = available_memory(self.device)
        if free is not None and free < need:
            raise ARPGError(f'compile="frozen" keeps a packed weight copy in every graph (up to {need / 2**20:.0f} '
                            f"MB each, {len(self.seen)} graphs built so far) and only {free / 2**20:.0f} MB are "
                            "free: use compile=True (--compile), whose graphs share the model's weights")

    def _scalar(self, value: int, device: torch.device) -> torch.Tensor:
        # Views of one device table: choosing a position costs no host-to-device copy.
        if self._positions is None or self._positions.device != device or self._positions.numel() <= value:
            self._positions = torch.arange(max(4096, value + 1), device=device)
        return self._positions[value]

    def width(self, count: int) -> int:
        return next((b for b in self.buckets if b >= count), count)

    def new_cache(self, rows: int, counts: list[int], dtype: torch.dtype, device: torch.device) -> KVCache:
        """A zeroed cache for one group, with the spare slots its padded steps need; sets the buckets."""
        self.buckets = bucket_sizes(counts, self.max_buckets)
        widest = max(self.width(c) for c in counts)
        capacity = static_capacity(self.model.config.n_cells, widest)
        if self.graphs is None:
            return self.model.new_cache(rows, dtype=dtype, device=device, max_len=capacity, zeroed=True)
        # CUDA graphs read and write fixed addresses: one cache per shape, handed out again (emptied: the old
        # entries are finite, never visible to the new call, and overwritten as it goes).
        key = (rows, capacity, dtype, str(device))
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = self.model.new_cache(rows, dtype=dtype, device=device, max_len=capacity,
                                                              zeroed=True)
        return dataclasses.replace(cache, length=0, class_ids=None, condition=None, condition_active=None)

    def extend(self, ids: torch.Tensor, cells: torch.Tensor, cache: KVCache, attention: str) -> None:
        """Like :meth:`ARPG.extend` (``cache.length`` advances by the real token count)."""
        R, T = ids.shape
        W = self.width(T)
        if cache.length + W > cache.capacity:
            raise ARPGError(f"KV cache overflow: {cache.length} + {W} > capacity {cache.capacity}")
        if cache.length == 0:
            cache.class_ids = ids[:, 0]
        causal = attention == "causal" and T > 1
        window = window_for(cache.length + T, key_windows(cache.capacity))
        key = ("extend", R, W, causal, window, ids.dtype, _extras(cache))
        self._call(self._extend, key, _pad(ids, W), _pad(cells, W), cache, self._scalar(cache.length, ids.device),
                   self._scalar(T, ids.device), causal, window)
        cache.length += T

    def query_tokens(self, cells: torch.Tensor, cache: KVCache, half: int, weight: float, temperature: float,
                     top_k: int | None, top_p: float | None, draw: str, generator: torch.Generator | None,
                     want_probs: bool):
        """Pass 2, guidance (``half`` > 0: rows ``[:half]`` conditional, ``[half:]`` unconditional), the
        filters and the draw for ``cells`` [R, Q]: tokens [R or half, Q] and, with ``want_probs``, their
        probabilities."""
        R, Q = cells.shape
        W = self.width(Q)
        out_rows = half or R
        device = cells.device
        uniforms = None
        if draw == "inverse-cdf":  # the eager sampler's draws, in its order: one per real token
            u = torch.rand(out_rows * Q, 1, generator=generator, device=device)
            uniforms = _pad(u.view(out_rows, Q), W)
        w = torch.full((), float(weight), device=device)
        t = torch.full((), float(temperature), device=device)
        window = window_for(cache.length, key_windows(cache.capacity))
        key = ("query", R, W, window, half, top_k, top_p, uniforms is None, _extras(cache))
        first, second = self._call(self._query, key, _pad(cells, W), cache, self._scalar(cache.length, device),
                                   window, half, w, t, top_k, top_p, uniforms)
        if uniforms is not None:
            tokens, chosen = first[:, :Q], second[:, :Q]
        else:
            flat = first[:, :Q].reshape(-1, first.shape[-1])
            picked = torch.multinomial(flat, 1, generator=generator)
            tokens, chosen = picked.view(out_rows, Q), flat.gather(1, picked).view(out_rows, Q)
        return (tokens, chosen) if want_probs else tokens


COMPILE_MODES = (False, True, "frozen")


def weights_key(model: ARPG) -> tuple:
    """Changes whenever a parameter is replaced or updated in place (tensor versions count in-place ops)."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def static_steps(model: ARPG, mode: bool | str = True) -> StaticSteps:
    """The :class:`StaticSteps` kept on ``model`` (made on first use), so compiled graphs survive across
    ``generate`` calls. ``mode``: True (weights are graph inputs) or ``"frozen"`` (weights folded into the
    graphs as constants, which lets inductor pre-pack them for oneDNN on a CPU: faster small matmuls, one
    packed copy of the weights per graph; rebuilt when a parameter changes). On a GPU the steps are CUDA
    graphs, which read the weights at fixed addresses: they are rebuilt when a parameter changes too."""
    check_fusions(model)  # a fused weight whose parts were replaced must not reach a graph (arpg.fusion)
    freeze = mode == "frozen"
    device = model.embeddings.weight.device
    hit = model.__dict__.get("_static_steps")
    pinned = freeze or device.type == "cuda"  # graphs that hold the weights themselves, or their addresses
    stale = hit is not None and ((pinned and hit.weights_key != weights_key(model))
                                 or hit.pack_state != pack_state(model))
    if hit is None or hit.freeze != freeze or hit.device != device or stale:
        hit = StaticSteps(model, True, freeze=freeze, graphs=GraphedSteps() if device.type == "cuda" else None)
        model.__dict__["_static_steps"] = hit  # a plain attribute: not a submodule, not in state_dict
    return hit


def compile_report(model: ARPG) -> dict:
    """What ``compile=True`` has cost on ``model`` so far: graphs built and seconds spent building them
    (the first call of each graph: trace, compile and one run), counting the graphs of its cached bf16 / fp16
    weight copy too (where ``generate(..., dtype=...)`` runs)."""
    graphs, seconds = 0, 0.0
    cast = model.__dict__.get("_cast_weights")
    for m in (model, None if cast is None else cast[1]):
        hit = None if m is None else m.__dict__.get("_static_steps")
        if hit is not None:
            graphs, seconds = graphs + len(hit.seen), seconds + hit.compile_seconds
    return {"graphs": graphs, "compile_seconds": round(seconds, 3)}
