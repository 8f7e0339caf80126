"""The randomized parallel decoding loop.

Per call: the KV cache is allocated once (class token + every cell), guidance runs as one doubled batch
(conditional rows first, then the null class), each step pushes only the previous step's new tokens
through Pass 1 and only this step's queries through Pass 2, and the final step's tokens never enter Pass 1.
All step sizes are computed on the host before the loop, so on a GPU the loop issues kernels without
reading anything back.

Prefilling (zero-shot editing): cells marked in ``known_mask`` are fed to Pass 1 first, at their true
positions, in one causal block (as in training, whatever ``attention`` says: one huge unmasked block is
far from anything the model saw). Only the unknown cells are then decoded, and the known codes are
returned unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..model.control import CONDITION_GUIDANCE, check_condition
from ..errors import ARPGError
from ..model import ARPG
from .compiled import StaticSteps, static_steps
from .resources import cast_weights, check_memory, weights_for_call
from .guidance import guidance_weight, sample_tokens
from .orders import make_orders
from .recipes import recommended_sampling
from .runtime import Runtime, call_weights, resolve_runtime
from .schedules import step_counts
from .settings import SamplingConfig, parse_step_schedule
from ..util.devices import warn_if_emulated


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_sampling(model: ARPG, sampling: SamplingConfig | None = None, **given: Any) -> SamplingConfig:
    """The settings a call uses: each argument given (not None) wins, then ``sampling``, then the model's
    recommended settings (:func:`~arpg.sampling.recipes.recommended_sampling`). An explicit step list sets
    ``steps`` to its length; an explicit ``steps`` that disagrees with an explicit list is refused."""
    base = sampling if sampling is not None else recommended_sampling(model)
    if not isinstance(base, SamplingConfig):
        raise ARPGError(f"sampling must be a SamplingConfig, got {type(base).__name__}")
    if given.get("step_schedule") is not None:
        given["step_schedule"] = parse_step_schedule(given["step_schedule"])
    cfg = base.replace(**given)
    if isinstance(cfg.step_schedule, tuple):
        n = len(cfg.step_schedule)
        if given.get("steps") is not None and given["steps"] != n:
            raise ARPGError(f"steps={given['steps']} contradicts the explicit step_schedule of {n} counts; give one "
                            "of them")
        cfg = cfg.replace(steps=n)
    return cfg


def generate(
    model: ARPG,
    labels: torch.Tensor | Sequence[int],
    *,
    steps: int | None = None,
    cfg_scale: float | None = None,
    cfg_schedule: str | None = None,
    step_schedule: str | Sequence[int] | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    order: str | Sequence[int] | torch.Tensor | None = None,
    attention: str | None = None,
    generator: torch.Generator | None = None,
    sampling: SamplingConfig | None = None,
    guidance_interval: tuple[float, float] | None = None,
    temperature_schedule: str | None = None,
    temperature_end: float | None = None,
    refine_rounds: int | None = None,
    refine_fraction: float | None = None,
    token_draw: str | None = None,
    known_codes: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    condition: torch.Tensor | None = None,
    condition_guidance: str = "keep",
    dtype: torch.dtype | None = None,
    autocast: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    compile: bool | str | None = None,
    pack_weights: bool | None = None,
) -> torch.Tensor:
    """Sample codes with randomized parallel decoding.

    Every sampling argument left as None takes the model's recommended value: ``sampling`` if given, else
    the settings stored with the model or the pinned recipe of its architecture (the paper's for ARPG-L /
    XL / XXL, the tuned one for the shipped demo model; see :func:`~arpg.sampling.recipes.recommended_sampling`).
    Explicit arguments always win. :func:`resolve_sampling` returns exactly what a call will use.

    Args:
        model: an :class:`~arpg.ARPG` (put in eval mode by this call).
        labels: class ids [B] in ``0..num_classes-1``.
        steps: decoding steps (an explicit ``step_schedule`` list fixes them; a contradicting value is refused).
        cfg_scale: classifier-free guidance scale ``w``; 1.0 disables guidance (no doubled batch).
        cfg_schedule: ``"linear"`` (``w_s = 1 + (w-1) * decoded_after_s / unknown``, published) or ``"constant"``.
        step_schedule: ``"arccos"`` (published), ``"cosine"``, ``"linear"`` or explicit per-step counts.
        temperature: divides the guided logits before sampling.
        top_k: keep only the ``top_k`` most likely tokens (after temperature).
        top_p: keep the smallest set of tokens reaching probability ``top_p`` (after temperature).
        order: ``"random"`` (one permutation per sample), ``"shared-random"`` (one for the batch, as
            published), ``"raster"``, ``"alternate"``, ``"z-curve"``, ``"spiral-in"``, ``"spiral-out"``,
            the per-sample orders that spread each step's cells ``"halton"``, ``"locality"`` (built for the
            step sizes), ``"farthest-first"`` (:mod:`arpg.sampling.spread_orders`), or an explicit
            permutation [n] / [B, n]. With prefilled cells, unknown cells are decoded in the
            order's sequence and known cells are fed in it too.
        attention: ``"block"`` (tokens fed in one step see each other, as published) or ``"causal"``.
        generator: a ``torch.Generator`` on the model's device for reproducible sampling.
        sampling: a :class:`~arpg.sampling.settings.SamplingConfig` to start from instead of the model's.
        guidance_interval: ``(lo, hi)``: guidance only at steps whose share of decoded cells (after the step)
            is in (lo, hi]; outside it only the conditional rows run (and after it they are all that is kept).
        temperature_schedule: ``"constant"`` or ``"anneal"`` (linear from ``temperature`` at the first step
            towards ``temperature_end``, by the share of cells decoded before the step).
        temperature_end: the temperature ``"anneal"`` heads for.
        refine_rounds: after the last step, re-predict the least confident ``refine_fraction`` of the
            decoded cells this many times, each in one step with every other cell known (prefilled). Known
            cells never change.
        refine_fraction: the share of decoded cells each refinement round re-predicts.
        token_draw: ``"inverse-cdf"`` (default) or ``"multinomial"`` (the published draw): the same
            distribution; inverse-CDF draws one uniform number per token instead of one per vocabulary entry.
            ``"multinomial"`` gives the published sampler's tokens for the same generator.
        known_codes: codes of the prefilled cells, LongTensor [B, n] (raster order; read where ``known_mask``).
        known_mask: which cells are prefilled, BoolTensor [B, n] (raster order).
        condition: ControlARPG models only: condition maps [B, C, S, S] or one [C, S, S] for every row, floats
            in [0, 1] with ``S = model.config.condition_side`` (:mod:`arpg.data.conditions` makes them). Combines
            with prefilled cells (control + inpaint): the condition steers the cells that are decoded.
        condition_guidance: what the unconditional half of guidance sees: ``"keep"`` (class dropped,
            condition kept: the paper's choice, guidance sharpens the class) or ``"drop"`` (both dropped).
        dtype: compute dtype (``torch.bfloat16`` recommended on GPU); None = the model's dtype. A float32
            model is run through a bf16 / fp16 copy of its parameters made once and kept on the model until
            a parameter changes (:func:`cast_weights`; buffers stay float32), not under autocast, which
            re-casts every weight on every call (``benchmarks/cache_ab.py --dtype bf16`` measures the two).
        autocast: run a float32 model under ``torch.autocast(dtype)`` instead (the published sampler's way;
            the benchmarks use it to compare like with like).
        batch_size: split larger requests into chunks of this size (progress bar when ``progress``).
        on_step: called as ``on_step(done, total)`` after every decoding step (refinement rounds included)
            of each group of rows decoded together (a chunk; with prefilling, rows of equal known counts),
            e.g. to drive a progress display. Host-side only: it adds no device sync.
        compile: True: run the decode steps as static-shape graphs built by ``torch.compile`` (one per row
            count, padded step size and attention window, kept on the model for later calls;
            :mod:`arpg.sampling.compiled`). Same tokens as eager from the same generator; the first call pays
            the compile time (:func:`~arpg.sampling.compiled.compile_report`). ``"frozen"``: weights folded
            into the graphs (each graph keeps a packed copy of the weights it uses). None (default): off.
        pack_weights: CPU: run every decoding matmul through oneDNN-packed weights (:mod:`arpg.packing`).
            None (default): on wherever it can run and pays (a CPU, a model at least
            :data:`~arpg.sampling.runtime.PACK_MIN_DIM` wide, float32 weights or bf16 ones on a CPU with native
            bf16, no autocast, int8 or frozen compile): the model is packed in place for the call and gets its
            plain weights back at the end, so memory stays one copy of the weights
            (:mod:`arpg.sampling.runtime`). True: a packed copy is made and kept on the model until a
            parameter changes (one more copy of the weights, unless the model was packed in place with
            ``arpg.packing.pack_weights(model, in_place=True)``); the bf16 copy ``dtype`` makes is always
            packed in place. False: plain matmuls. Same values as unpacked up to float rounding.
    Returns:
        LongTensor [B, n] of codes in raster order, on the model's device.
    """
    runtime = resolve_runtime(model, dtype=dtype, autocast=autocast, compile=compile, pack_weights=pack_weights)
    with call_weights(model, runtime):  # outside inference mode: restored weights stay ordinary tensors
        return _generate(model, labels, runtime, steps=steps, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule,
                         step_schedule=step_schedule, temperature=temperature, top_k=top_k, top_p=top_p, order=order,
                         attention=attention, generator=generator, sampling=sampling,
                         guidance_interval=guidance_interval, temperature_schedule=temperature_schedule,
                         temperature_end=temperature_end, refine_rounds=refine_rounds,
                         refine_fraction=refine_fraction, token_draw=token_draw, known_codes=known_codes,
                         known_mask=known_mask, condition=condition, condition_guidance=condition_guidance,
                         batch_size=batch_size, progress=progress, on_step=on_step)


@torch.inference_mode()
def _generate(model: ARPG, labels, runtime: Runtime, *, steps, cfg_scale, cfg_schedule, step_schedule, temperature,
              top_k, top_p, order, attention, generator, sampling, guidance_interval, temperature_schedule,
              temperature_end, refine_rounds, refine_fraction, token_draw, known_codes, known_mask, condition,
              condition_guidance, batch_size, progress, on_step) -> torch.Tensor:
    """The body of :func:`generate` for a resolved :class:`~arpg.sampling.runtime.Runtime`."""
    cfg = model.config
    device = model.embeddings.weight.device
    dtype, autocast, compile, pack_weights = runtime.dtype, runtime.autocast, runtime.compile, runtime.pack_weights
    compute_dtype = dtype or model.embeddings.weight.dtype  # warned about once the request is known to be good
    source = model
    if dtype in (torch.bfloat16, torch.float16) and model.embeddings.weight.dtype == torch.float32 and not autocast:
        model, dtype = cast_weights(model, dtype), None  # low-precision weights, converted once
    # the packed copies this call runs through, or plain matmuls with any earlier call's set aside
    with weights_for_call(model, pack_weights, own_copy=model is not source):
        fast = static_steps(model, compile) if compile else None
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        if labels.dim() != 1:
            raise ARPGError(f"labels must be a 1-D sequence of class ids, got shape {list(labels.shape)}")
        model.check_labels(labels)
        if condition is not None:
            if not cfg.controlled:
                model.encode_condition(condition)  # raises the one-line "no condition encoder" error
            condition = check_condition(condition, labels.shape[0], cfg.condition_channels, cfg.condition_side)
        if condition_guidance not in CONDITION_GUIDANCE:
            raise ARPGError(f"condition_guidance must be one of {CONDITION_GUIDANCE}, got {condition_guidance!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ARPGError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        named_order = order if isinstance(order, str) else None
        sc = resolve_sampling(model, sampling, steps=steps, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule,
                              step_schedule=step_schedule, temperature=temperature, top_k=top_k, top_p=top_p,
                              order=named_order, attention=attention, guidance_interval=guidance_interval,
                              temperature_schedule=temperature_schedule, temperature_end=temperature_end,
                              refine_rounds=refine_rounds, refine_fraction=refine_fraction, token_draw=token_draw)
        sc.validate(cfg.n_cells if known_mask is None and known_codes is None else None)
        if order is None or named_order is not None:
            order = sc.order
        B, n = labels.shape[0], cfg.n_cells
        if known_mask is not None or known_codes is not None:
            if known_mask is None or known_codes is None:
                raise ARPGError("prefilling needs both known_codes and known_mask")
            known_mask = torch.as_tensor(known_mask, dtype=torch.bool, device=device)
            known_codes = torch.as_tensor(known_codes, dtype=torch.long, device=device)
            if known_mask.dim() == 1:
                known_mask, known_codes = known_mask.expand(B, -1), known_codes.expand(B, -1)
            if tuple(known_mask.shape) != (B, n) or tuple(known_codes.shape) != (B, n):
                raise ARPGError(f"known_mask and known_codes must be shaped [{B}, {n}] (batch, grid cells), got "
                                f"{list(known_mask.shape)} and {list(known_codes.shape)}")
            sel = known_codes[known_mask]
            if sel.numel() and (int(sel.min()) < 0 or int(sel.max()) >= cfg.vocab_size):
                raise ARPGError(f"known codes must be in 0..{cfg.vocab_size - 1}")
        plan = step_counts(n, sc.steps, sc.step_schedule) if known_mask is None else None
        orders = make_orders(order, B, cfg.grid_size, generator=generator, device=device, counts=plan)
        model.eval()

        chunk = batch_size or B
        if plan is not None:
            widest = max(plan)
        elif isinstance(sc.step_schedule, str):
            unknown_max = int((~known_mask).sum(dim=1).max())
            widest = max(step_counts(unknown_max, min(sc.steps, unknown_max), sc.step_schedule)) if unknown_max else 1
        else:
            widest = n
        check_memory(model, min(chunk, B), sc.cfg_scale != 1.0, widest, dtype)
        # Every refusal above comes before this warning: a refused request prints its one error line only.
        warn_if_emulated(device, compute_dtype)
        starts = range(0, B, chunk)
        out = torch.empty(B, n, dtype=torch.long, device=device)
        bar = tqdm(total=B, desc="sampling", unit="img", disable=not progress)
        with _autocast(device, dtype):
            for s in starts:
                sl = slice(s, s + chunk)
                control = None if condition is None else (model.encode_condition(condition[sl]), condition_guidance)
                if known_mask is None:
                    out[sl] = _decode_group(model, labels[sl], orders[sl], None, None, dtype, sc, generator, on_step,
                                            control=control, fast=fast)
                else:
                    # Rows with different numbers of known cells cannot share a rectangular step: group them.
                    counts = known_mask[sl].sum(dim=1)
                    for k in counts.unique().tolist():
                        local = (counts == k).nonzero().squeeze(1)
                        rows = local + s
                        part = None if control is None else (control[0][local], control[1])
                        out[rows] = _decode_group(model, labels[rows], orders[rows], known_codes[rows], known_mask[rows],
                                                  dtype, sc, generator, on_step, control=part, fast=fast)
                bar.update(min(chunk, B - s))
        bar.close()
        return out


def _decode_group(model: ARPG, labels: torch.Tensor, orders: torch.Tensor, known_codes: torch.Tensor | None,
                  known_mask: torch.Tensor | None, dtype: torch.dtype | None, sc: SamplingConfig,
                  generator: torch.Generator | None, on_step: Callable[[int, int], None] | None = None,
                  return_confidence: bool = False, control: tuple[torch.Tensor, str] | None = None,
                  fast: StaticSteps | None = None):
    """Decode one rectangular group: every row has the same number of known cells. Returns the codes (and,
    with ``return_confidence``, the probability each decoded cell's token was drawn with; 1 for known).
    ``control``: the rows' condition features [B, n, d] and the condition guidance mode. ``fast``: run the
    steps through these static-shape (compiled) steps instead of :meth:`ARPG.extend` / :meth:`ARPG.query`."""
    cfg = model.config
    B, n = orders.shape
    device = orders.device
    codes = torch.zeros(B, n, dtype=torch.long, device=device)
    n_known = 0 if known_mask is None else int(known_mask[0].sum())
    if known_mask is not None:
        codes = torch.where(known_mask, known_codes, codes)
        # Stable sort moves each row's known cells to the front while keeping the order's sequence.
        is_known = known_mask.gather(1, orders)
        rank = (~is_known).long().argsort(dim=1, stable=True)
        orders = orders.gather(1, rank)
    unknown = n - n_known
    if unknown == 0:
        raise ARPGError("every cell is known: there is nothing to decode")
    counts = step_counts(unknown, sc.steps, sc.step_schedule)
    guided_at = sc.guided_steps(counts)
    last_guided = max((i for i, g in enumerate(guided_at) if g), default=-1)

    doubled_rows = last_guided >= 0  # the cache holds the unconditional half while a guided step is ahead
    rows = 2 * B if doubled_rows else B
    cache_dtype = dtype if dtype not in (None, torch.float32) else model.embeddings.weight.dtype
    if fast is None:
        cache = model.new_cache(rows, dtype=cache_dtype, device=device)
        extend = model.extend
    else:
        cache = fast.new_cache(rows, counts, cache_dtype, device)
        extend = fast.extend
    if control is not None:
        feats, how = control
        cache.condition = torch.cat([feats, feats]) if doubled_rows else feats
        if doubled_rows and how == "drop":  # the unconditional half: no class and no condition
            cache.condition_active = torch.arange(rows, device=device) < B

    def doubled(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=0) if doubled_rows else x

    cls = model.class_ids(labels)
    if doubled_rows:
        cls = torch.cat([cls, torch.full_like(cls, cfg.null_class_id)])
    extend(cls[:, None], torch.full((rows, 1), -1, dtype=torch.long, device=device), cache, sc.attention)
    if n_known:  # one big causal block, run once: eager in both paths
        cells = orders[:, :n_known]
        model.extend(doubled(codes.gather(1, cells)), doubled(cells), cache, "causal")

    track = return_confidence or sc.refine_rounds > 0  # confidences cost a gather and a scatter per step
    confidence = torch.ones(B, n, device=device) if track else None
    pos, decoded = n_known, 0
    for i, c in enumerate(counts):
        cells = orders[:, pos:pos + c]
        temperature = sc.temperature_at(decoded, unknown)
        decoded += c
        if fast is not None:
            half = B if guided_at[i] else 0
            w = guidance_weight(sc.cfg_scale, sc.cfg_schedule, decoded, unknown) if half else 1.0
            drawn = fast.query_tokens(doubled(cells) if half else cells,
                                      cache if half or not doubled_rows else cache.rows(B), half, w, temperature,
                                      sc.top_k, sc.top_p, sc.token_draw, generator, track)
        elif guided_at[i]:
            w = guidance_weight(sc.cfg_scale, sc.cfg_schedule, decoded, unknown)
            logits = model.query(doubled(cells), cache, guidance=(B, w))  # guided at the head's input
        else:  # outside the guidance interval: the conditional rows only
            logits = model.query(cells, cache.rows(B) if doubled_rows else cache)
        if fast is None:
            drawn = sample_tokens(logits, temperature, sc.top_k, sc.top_p, generator, return_probs=track,
                                  draw=sc.token_draw, overwrite=True)  # our own logits: scratch space
        tokens = drawn[0] if track else drawn
        codes.scatter_(1, cells, tokens)
        if track:
            confidence.scatter_(1, cells, drawn[1].to(confidence.dtype))
        if i < len(counts) - 1:  # the final step's tokens are never needed by Pass 1
            if doubled_rows and i >= last_guided:  # no guided step left: drop the unconditional half
                cache, doubled_rows = cache.rows(B), False
            extend(doubled(tokens), doubled(cells), cache, sc.attention)
        pos += c
        if on_step is not None:
            on_step(i + 1, len(counts) + sc.refine_rounds)
    if sc.refine_rounds:
        total = len(counts) + sc.refine_rounds
        codes, confidence = _refine(model, labels, codes, confidence, known_mask, dtype, sc, generator,
                                    None if on_step is None else lambda r: on_step(len(counts) + r, total), control,
                                    fast)
    return (codes, confidence) if return_confidence else codes


def _refine(model: ARPG, labels: torch.Tensor, codes: torch.Tensor, confidence: torch.Tensor,
            known_mask: torch.Tensor | None, dtype: torch.dtype | None, sc: SamplingConfig,
            generator: torch.Generator | None,
            on_round: Callable[[int], None] | None = None,
            control: tuple[torch.Tensor, str] | None = None,
            fast: StaticSteps | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``sc.refine_rounds`` rounds: the ``refine_fraction`` least confident decoded cells are re-predicted in one
    step with every other cell known (prefilled, as editing does); known cells never change."""
    B, n = codes.shape
    free = torch.ones(B, n, dtype=torch.bool, device=codes.device) if known_mask is None else ~known_mask
    k = max(1, round(sc.refine_fraction * int(free[0].sum())))
    final_t = sc.temperature_at(int(free[0].sum()), int(free[0].sum()))
    one_step = dataclasses.replace(sc, steps=1, step_schedule="arccos", refine_rounds=0, temperature=final_t,
                                   temperature_schedule="constant", guidance_interval=(0.0, 1.0))
    for r in range(sc.refine_rounds):
        chosen = confidence.masked_fill(~free, float("inf")).topk(k, dim=1, largest=False).indices
        keep = torch.ones_like(free).scatter_(1, chosen, False)
        orders = make_orders("random", B, model.config.grid_size, generator=generator, device=codes.device)
        codes, conf = _decode_group(model, labels, orders, codes, keep, dtype, one_step, generator,
                                    return_confidence=True, control=control, fast=fast)
        confidence = torch.where(keep, confidence, conf)
        if on_round is not None:
            on_round(r + 1)
    return codes, confidence
