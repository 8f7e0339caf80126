"""The decode loop's two steps, run eager or compiled: :class:`DecodeSteps`.

Each step is one body calling the network's one decoding step -- :meth:`ARPG.pass1` (last step's tokens into
the KV cache) and :meth:`ARPG.pass2` plus guidance, temperature, top-k/top-p and the token draw -- with the
cache position as a tensor. Eager, the bodies run as they are, over exactly the filled part of the cache.
Compiled (``compile=True``), the same bodies are wrapped in ``torch.compile(fullgraph=True, dynamic=False)``
(on CUDA with ``mode="reduce-overhead"``: PyTorch's own CUDA graphs) and every step is given static shapes:

* step sizes are padded up to a few *buckets* (:func:`bucket_sizes`), the padded tokens copies of the first
  one, whose keys/values land in spare slots past the valid ones that no valid token sees and a later step
  overwrites (:func:`static_capacity`); padded queries are dropped;
* attention reads one of a few *windows* of the cache (:func:`key_windows`) with a mask of the slots that
  may be seen, so the cache starts zeroed (a masked slot enters the product with weight 0, and ``0 * NaN``
  from uninitialised memory would poison every row).

A schedule then compiles at most ``max_buckets`` graphs per pass, row count and window, once; later calls
reuse them. Random numbers: the inverse-CDF uniforms are drawn from the caller's generator outside the
bodies, in the same number and order eager and compiled, so both give the same tokens from the same
generator (up to float rounding at a CDF boundary). ``token_draw="multinomial"`` returns the probabilities
and draws with ``torch.multinomial`` outside. Compile time is counted apart (:func:`compile_report`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import warnings
import weakref

import torch

from ..errors import ARPGError
from ..model import ARPG
from ..model.cache import KVCache
from ..speedups.fusion import refresh_fusions
from ..speedups.packing import is_packed
from .guidance import draw_from_logits, token_probs
from .resources import available_memory

MAX_BUCKETS = 6
_TOKENS = itertools.count()
COMPILE_MODES = (False, True, "frozen")


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


def static_capacity(n_cells: int, widest: int, prefix: int = 1) -> int:
    """Cache slots for the class token (or a ``prefix`` of prompt slots), every cell and the padding of the widest
    padded step."""
    return n_cells + prefix + max(widest - 1, 0)


def key_windows(capacity: int, parts: int = 4) -> tuple[int, ...]:
    """The attended prefix lengths a compiled step may use: ``parts`` steps up to the full capacity (each a
    multiple of 8). Attending to the smallest window that holds every valid key, instead of always to the
    whole cache, keeps attention near its eager cost for a few more graphs."""
    sizes = set()
    for k in range(1, parts + 1):
        share = -(-capacity * k // parts)  # ceil(capacity * k / parts)
        sizes.add(min(capacity, -(-share // 8) * 8))
    return tuple(sorted(sizes))


def window_for(needed: int, windows: tuple[int, ...]) -> int:
    """The smallest window holding ``needed`` positions."""
    return next(w for w in windows if w >= needed)


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Pad [R, T] to [R, width] with copies of the first column."""
    T = x.shape[1]
    return x if T == width else torch.cat([x, x[:, :1].expand(-1, width - T)], dim=1)


def _extras(cache: KVCache) -> tuple[bool, bool, bool]:
    """Which optional cache inputs a graph reads (part of its key)."""
    return cache.condition is not None, cache.condition_active is not None, cache.key_valid is not None


def pass1_body(model: ARPG, ids: torch.Tensor | None, cells: torch.Tensor, cache: KVCache, start, valid,
               window: int, causal: bool, masked: bool, embedded: torch.Tensor | None = None) -> None:
    """Pass 1 over ``ids``/``cells`` [R, T] (the first ``valid`` real, the rest padding) written at cache
    positions ``start ..``. ``start`` / ``valid``: ints (eager) or 0-d tensors (compiled). Block attention:
    every new token sees the cache up to ``start + valid``; causal: new token ``t`` up to ``start + t``.
    ``masked``: the window holds slots past those (a compiled step), so block attention needs a mask too.
    ``embedded``: the inputs themselves instead of ``ids`` (a prompt prefix)."""
    T = cells.shape[1]
    positions = torch.arange(T, device=cells.device) + start
    slots = torch.arange(window, device=cells.device)
    if causal:
        mask = slots[None, :] <= positions[:, None]
    else:
        mask = (slots < start + valid)[None, :].expand(T, window) if masked else None
    model.pass1(ids, cells, cache, positions, window, mask, embedded)


def pass2_body(model: ARPG, cells: torch.Tensor, cache: KVCache, length, window: int, masked: bool, half: int,
               weight, temperature, top_k: int | None, top_p: float | None, uniforms: torch.Tensor | None):
    """Pass 2 for ``cells`` [R, Q] over the first ``length`` cache slots, guidance (``half`` > 0: rows ``[:half]``
    conditional, the rest unconditional, guided at the head's input), the filters and the draw: tokens and the
    probabilities they were drawn with (inverse-CDF with ``uniforms``), or the probabilities [.., V] and None."""
    Q = cells.shape[1]
    mask = (torch.arange(window, device=cells.device) < length)[None, :].expand(Q, window) if masked else None
    logits = model.pass2(cells, cache, window, mask, (half, weight) if half else None)
    if uniforms is None:
        return token_probs(logits, temperature, top_k, top_p), None
    V = logits.shape[-1]
    tokens, chosen = draw_from_logits(logits.reshape(-1, V), uniforms.reshape(-1, 1), temperature, top_k, top_p,
                                      overwrite=True)  # our own logits: scratch space
    return tokens.view(logits.shape[:-1]), chosen.view(logits.shape[:-1])


class DecodeSteps:
    """The two decoding steps for one model, eager (``compile=False``) or compiled (``True`` / ``"frozen"``);
    the compiled ones are kept per model across calls (:func:`decode_steps`)."""

    def __init__(self, model: ARPG, compile: bool | str = False, max_buckets: int = MAX_BUCKETS,
                 compiler=torch.compile):
        """``compiler``: what wraps the bodies when compiled (tests pass one that leaves them as they are, to run
        the static shapes without compiling)."""
        if compile not in COMPILE_MODES:
            raise ARPGError(f"compile must be one of {COMPILE_MODES}, got {compile!r}")
        self.model = model
        self.device = model.embeddings.weight.device
        self.compiled = bool(compile)
        self.freeze = compile == "frozen"
        self.weights_key = weights_key(model) if self.compiled else None
        self.max_buckets = max_buckets
        self.buckets: tuple[int, ...] = ()
        self.seen: set[tuple] = set()
        self.compile_seconds = 0.0
        self._caches: dict[tuple, KVCache] = {}
        # torch.compile keeps graphs per code object and reuses one whose guards pass; reading this number in
        # the graph bodies makes it a guard, so no instance ever runs another's (e.g. frozen) graphs.
        self.token = next(_TOKENS)
        self._pass1, self._pass2 = self._pass1_graph, self._pass2_graph
        if self.compiled:
            # CUDA: PyTorch's CUDA graphs replay each step (one launch instead of hundreds).
            mode = "reduce-overhead" if self.device.type == "cuda" and not self.freeze else None
            self._pass1 = compiler(self._pass1_graph, fullgraph=True, dynamic=False, mode=mode)
            self._pass2 = compiler(self._pass2_graph, fullgraph=True, dynamic=False, mode=mode)

    def _pass1_graph(self, *args):
        if self.token < 0:  # never true: see __init__
            raise ARPGError("bad DecodeSteps token")
        pass1_body(self.model, *args)

    def _pass2_graph(self, *args):
        if self.token < 0:  # never true: see __init__
            raise ARPGError("bad DecodeSteps token")
        return pass2_body(self.model, *args)

    # -- shapes -------------------------------------------------------------------------------------
    def width(self, count: int) -> int:
        """The padded size of a step of ``count`` tokens (eager: ``count``)."""
        return next((b for b in self.buckets if b >= count), count) if self.compiled else count

    def _window(self, needed: int, cache: KVCache) -> int:
        return window_for(needed, key_windows(cache.capacity)) if self.compiled else needed

    def new_cache(self, rows: int, counts: list[int], dtype: torch.dtype, device: torch.device) -> KVCache:
        """The cache for one group of rows decoding with step ``counts`` (compiled: zeroed, with the spare slots
        its padded steps need; sets the buckets)."""
        if not self.compiled:
            return self.model.new_cache(rows, dtype=dtype, device=device)
        self.buckets = bucket_sizes(counts, self.max_buckets)
        cfg = self.model.config
        capacity = static_capacity(cfg.n_cells, max(self.width(c) for c in counts), cfg.prefix_len)
        if self.device.type != "cuda":
            return self.model.new_cache(rows, dtype=dtype, device=device, max_len=capacity, zeroed=True)
        # CUDA graphs read and write fixed addresses: one cache per shape, handed out again (emptied: the old
        # entries are finite, never visible to the new call, and overwritten as it goes).
        key = (rows, capacity, dtype, str(device))
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = self.model.new_cache(rows, dtype=dtype, device=device, max_len=capacity,
                                                              zeroed=True)
            for t in [*cache.self_k, *cache.self_v, cache.shared_k, cache.shared_v]:
                torch._dynamo.mark_static_address(t)
        return dataclasses.replace(cache, length=0, class_ids=None, condition=None, condition_active=None,
                                   key_valid=None)

    # -- the two steps ------------------------------------------------------------------------------
    def extend(self, ids: torch.Tensor | None, cells: torch.Tensor, cache: KVCache, attention: str,
               eager: bool = False, embedded: torch.Tensor | None = None) -> None:
        """Pass 1 over ``ids``/``cells`` [R, T] after what ``cache`` holds (``cache.length`` advances by ``T``).
        ``eager``: run uncompiled over exactly the filled slots (a one-off shape such as an editing prefill or a
        prompt prefix). ``embedded``: the inputs [R, T, dim] instead of ``ids`` (a prompt prefix; eager)."""
        R, T = cells.shape
        start = cache.length
        compiled = self.compiled and not eager and embedded is None
        W = self.width(T) if compiled else T
        if start + W > cache.capacity:
            raise ARPGError(f"KV cache overflow: {start} + {W} > capacity {cache.capacity}")
        if start == 0:
            if not bool((cells[:, 0] == -1).all()):
                raise ARPGError("the first token in an empty KV cache must be the class token (cell -1)")
            cache.class_ids = ids[:, 0] if ids is not None else torch.full(  # what Pass-2 queries start from
                (R,), self.model.config.null_class_id, dtype=torch.long, device=cells.device)
        causal = attention == "causal" and T > 1
        if not compiled:
            pass1_body(self.model, ids, cells, cache, start, T, start + T, causal, False, embedded)
        else:
            window = self._window(start + T, cache)
            key = ("pass1", R, W, causal, window, _extras(cache))
            self._run(self._pass1, key, _pad(ids, W), _pad(cells, W), cache, self._scalar(start),
                      self._scalar(T), window, causal, True)
        cache.length = start + T

    def tokens(self, cells: torch.Tensor, cache: KVCache, half: int, weight: float, temperature: float,
               top_k: int | None, top_p: float | None, draw: str, generator: torch.Generator | None,
               want_probs: bool):
        """Pass 2, guidance (``half`` > 0: rows ``[:half]`` conditional, ``[half:]`` unconditional), the
        filters and the draw for ``cells`` [R, Q]: tokens [R or half, Q] and, with ``want_probs``, their
        probabilities."""
        R, Q = cells.shape
        W = self.width(Q)
        out_rows = half or R
        uniforms = None
        if draw == "inverse-cdf":  # one uniform per real token, drawn here: the same ones eager and compiled
            uniforms = _pad(torch.rand(out_rows * Q, 1, generator=generator, device=cells.device).view(out_rows, Q), W)
        window = self._window(cache.length, cache)
        if self.compiled:
            w = torch.full((), float(weight), device=cells.device)
            t = torch.full((), float(temperature), device=cells.device)
            key = ("pass2", R, W, window, half, top_k, top_p, uniforms is None, _extras(cache))
            first, second = self._run(self._pass2, key, _pad(cells, W), cache,
                                      self._scalar(cache.length), window, True, half, w, t, top_k, top_p, uniforms)
        else:
            first, second = pass2_body(self.model, cells, cache, cache.length, window, False, half, weight,
                                       temperature, top_k, top_p, uniforms)
        if uniforms is not None:
            tokens, chosen = first[:, :Q], second[:, :Q]
        else:
            flat = first[:, :Q].reshape(-1, first.shape[-1])
            picked = torch.multinomial(flat, 1, generator=generator)
            tokens, chosen = picked.view(out_rows, Q), flat.gather(1, picked).view(out_rows, Q)
        return (tokens, chosen) if want_probs else tokens

    # -- running compiled bodies ----------------------------------------------------------------------
    def _scalar(self, value: int) -> torch.Tensor:
        # Views of one device table: choosing a position costs no host-to-device copy.
        table = self.__dict__.get("_table")
        if table is None or table.numel() <= value:
            table = self.__dict__["_table"] = torch.arange(max(4096, value + 1), device=self.device)
        return table[value]

    def _run(self, fn, key: tuple, *args):
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs were consumed
        key = key + (is_packed(self.model),)  # packed and plain Linears are different graphs
        first = key not in self.seen
        if first and self.freeze:
            self._check_room_for_frozen_graph()
        start = time.perf_counter()
        # One graph per shape: never fall back to eager silently when a schedule needs many of them.
        with torch._dynamo.config.patch(recompile_limit=4096, accumulated_recompile_limit=1 << 16,
                                        fail_on_recompile_limit_hit=True), \
                torch._inductor.config.patch(freezing=self.freeze), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not support code generation for complex.*")
            out = fn(*args)
        if self.device.type == "cuda":
            out = _cloned(out)  # CUDA-graph outputs live in memory the next replay reuses
            if first:
                torch.cuda.synchronize(self.device)
        if first:
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


def _cloned(out):
    return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out)


def weights_key(model: ARPG) -> tuple:
    """Changes whenever a parameter is replaced or updated in place (tensor versions count in-place ops)."""
    # (tensors made under inference mode keep no version counter; nothing updates them in place)
    return tuple((p.data_ptr(), -1 if p.is_inference() else p._version) for p in model.parameters())


_COMPILED: "weakref.WeakKeyDictionary[ARPG, DecodeSteps]" = weakref.WeakKeyDictionary()


def decode_steps(model: ARPG, compile: bool | str = False) -> DecodeSteps:
    """The steps a call runs: fresh eager ones, or the compiled ones kept for ``model`` (made on first use, so
    graphs survive across calls). ``"frozen"`` folds the weights into the graphs as constants (inductor then
    pre-packs them for oneDNN on a CPU; one packed copy of the weights per graph): rebuilt when a parameter
    changes. With weights as graph inputs (``True``) torch.compile's own guards follow swapped modules."""
    if not compile:
        return DecodeSteps(model)
    refresh_fusions(model)  # a fused weight whose parts were replaced must not reach a graph
    hit = _COMPILED.get(model)
    stale = hit is not None and hit.freeze and hit.weights_key != weights_key(model)
    if hit is None or hit.freeze != (compile == "frozen") or hit.device != model.embeddings.weight.device or stale:
        hit = _COMPILED[model] = DecodeSteps(model, compile)
    return hit


def compile_report(model: ARPG) -> dict:
    """What ``compile=True`` has cost on ``model`` so far: graphs built and seconds spent building them
    (the first call of each graph: trace, compile and one run), counting the graphs of its cached bf16 / fp16
    weight copy too (where ``generate(..., dtype=...)`` runs)."""
    from .resources import cast_copy_of

    graphs, seconds = 0, 0.0
    for m in (model, cast_copy_of(model)):
        hit = None if m is None else _COMPILED.get(m)
        if hit is not None:
            graphs, seconds = graphs + len(hit.seen), seconds + hit.compile_seconds
    return {"graphs": graphs, "compile_seconds": round(seconds, 3)}
