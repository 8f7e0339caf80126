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

from ..model.control import CONDITION_GUIDANCE
from ..errors import ARPGError
from ..model import ARPG
from ..speedups import is_packed, pack_weights, unpack_weights
from .resources import cast_weights, check_memory
from .steps import DecodeSteps, decode_steps
from .guidance import guidance_weight
from .orders import make_orders
from .request import check_request, resolve_sampling  # noqa: F401  (resolve_sampling: public here too)
from .runtime import Runtime, call_weights, resolve_runtime
from .schedules import step_counts
from .settings import SamplingConfig
from ..util.devices import warn_if_emulated


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def generate(
    model: ARPG,
    labels: torch.Tensor | Sequence[int] | None = None,
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
    prompts: Sequence[str] | None = None,
    text_encoder: Any = None,
    text: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample codes with randomized parallel decoding.

    Every sampling argument left as None takes the model's recommended value: ``sampling`` if given, else
    the settings stored with the model or the pinned recipe of its architecture (the paper's for ARPG-L /
    XL / XXL, the tuned one for the shipped demo model; see :func:`~arpg.sampling.recipes.recommended_sampling`).
    Explicit arguments always win. :func:`resolve_sampling` returns exactly what a call will use.

    Args:
        model: an :class:`~arpg.ARPG` (put in eval mode by this call).
        labels: class ids [B] in ``0..num_classes-1`` (class models; None for a text model).
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
        compile: True: run the two decode steps compiled by ``torch.compile`` with static shapes (one graph per
            row count, padded step size and attention window, kept for the model across calls; on CUDA as
            CUDA graphs, ``mode="reduce-overhead"``; :mod:`arpg.sampling.steps`). Same tokens as eager from the
            same generator; the first call pays the compile time (:func:`~arpg.sampling.steps.compile_report`).
            ``"frozen"``: weights folded into the graphs (each graph keeps a packed copy of the weights it
            uses). None (default): off (the default rule, :mod:`arpg.sampling.runtime`).
        pack_weights: CPU: run every decoding matmul through oneDNN-packed weights (:mod:`arpg.speedups.packing`).
            None (default): on wherever it can run and pays (a CPU, a model at least
            :data:`~arpg.sampling.runtime.PACK_MIN_DIM` wide, float32 weights or bf16 ones on a CPU with native
            bf16, no autocast, int8, fusion or frozen compile). The caller's model is packed in place for the
            call and gets its own Linears back at the end, so memory stays one copy of the weights; a model
            packed by hand (:func:`arpg.speedups.pack_weights`) stays packed; the bf16 copy ``dtype`` makes is
            packed and stays so. True: the same, refused in one line where it cannot run. False: plain
            matmuls. Same values as unpacked up to float rounding.
        prompts: text models: one prompt per image, encoded by ``text_encoder`` (:mod:`arpg.text`).
        text_encoder: what turns ``prompts`` into features (:class:`arpg.text.TextEncoder`).
        text: text models: precomputed prompt features [B, text_len, text_dim] instead of ``prompts``.
        text_mask: which slots of ``text`` hold real tokens, BoolTensor [B, text_len] (None: all).
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
                         batch_size=batch_size, progress=progress, on_step=on_step, prompts=prompts,
                         text_encoder=text_encoder, text=text, text_mask=text_mask)


@torch.inference_mode()
def _generate(model: ARPG, labels, runtime: Runtime, *, batch_size, progress, on_step, condition_guidance,
              **request) -> torch.Tensor:
    """The body of :func:`generate`: check the request, prepare the runtime, run the chunks."""
    if condition_guidance not in CONDITION_GUIDANCE:
        raise ARPGError(f"condition_guidance must be one of {CONDITION_GUIDANCE}, got {condition_guidance!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ARPGError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    req = check_request(model, labels, **request)
    B = req.labels.shape[0]
    chunk = batch_size or B
    check_memory(model, min(chunk, B), req.sc.cfg_scale != 1.0, req.widest, runtime.dtype)
    # Every refusal above comes before this warning: a refused request prints its one error line only.
    warn_if_emulated(model.embeddings.weight.device, runtime.dtype or model.embeddings.weight.dtype)

    run_model, autocast_dtype = _prepare(model, runtime)
    steps = decode_steps(run_model, runtime.compile)

    out = torch.empty(B, model.config.n_cells, dtype=torch.long, device=req.labels.device)
    bar = tqdm(total=B, desc="sampling", unit="img", disable=not progress)
    with _autocast(req.labels.device, autocast_dtype):
        for s in range(0, B, chunk):
            rows = torch.arange(s, min(s + chunk, B), device=req.labels.device)
            features = None if req.condition is None else run_model.encode_condition(req.condition[rows])
            if req.known_mask is None:
                groups = [rows]
            else:  # rows with different numbers of known cells cannot share a rectangular step: group them
                known = req.known_mask[rows].sum(dim=1)
                groups = [rows[known == k] for k in known.unique().tolist()]
            for group in groups:
                local = group - s
                control = None if features is None else (features[local], condition_guidance)
                prompt = None if req.text is None else (req.text[group], req.text_mask[group])
                out[group] = _decode_group(run_model, steps, req.labels[group], req.orders[group],
                                           _rows(req.known_codes, group), _rows(req.known_mask, group), req.sc,
                                           request["generator"], on_step, control=control, prompt=prompt)
            bar.update(len(rows))
    bar.close()
    return out


def _rows(t: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t[rows]


def _prepare(model: ARPG, runtime: Runtime) -> tuple[ARPG, torch.dtype | None]:
    """The model the steps run (the caller's, or a bf16 / fp16 copy of its weights made once and kept beside
    it, packed when the runtime packs) and the autocast dtype, if any."""
    dtype = runtime.dtype
    if runtime.autocast or dtype is None or dtype == model.embeddings.weight.dtype:
        return model, (dtype if runtime.autocast and dtype != torch.float32 else None)
    twin = cast_weights(model, dtype)  # low-precision weights, converted once
    if runtime.pack_weights and not is_packed(twin):
        pack_weights(twin)  # the copy is ours: packed in place, and kept so
    elif not runtime.pack_weights and is_packed(twin):
        unpack_weights(twin)
    return twin, None


def _decode_group(model: ARPG, steps: DecodeSteps, labels: torch.Tensor, orders: torch.Tensor,
                  known_codes: torch.Tensor | None, known_mask: torch.Tensor | None, sc: SamplingConfig,
                  generator: torch.Generator | None, on_step: Callable[[int, int], None] | None = None,
                  return_confidence: bool = False, control: tuple[torch.Tensor, str] | None = None,
                  prompt: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Decode one rectangular group: every row has the same number of known cells. Returns the codes (and,
    with ``return_confidence``, the probability each decoded cell's token was drawn with; 1 for known).
    ``control``: the rows' condition features [B, n, d] and the condition guidance mode. ``prompt``: a text
    model's prompt features and mask for the rows."""
    B, n = orders.shape
    codes = torch.zeros(B, n, dtype=torch.long, device=orders.device)
    n_known = 0 if known_mask is None else int(known_mask[0].sum())
    if known_mask is not None:
        codes = torch.where(known_mask, known_codes, codes)
        # Stable sort moves each row's known cells to the front while keeping the order's sequence.
        orders = orders.gather(1, (~known_mask.gather(1, orders)).long().argsort(dim=1, stable=True))
    if n_known == n:
        raise ARPGError("every cell is known: there is nothing to decode")
    counts = step_counts(n - n_known, sc.steps, sc.step_schedule)
    guided_at = sc.guided_steps(counts)
    last_guided = max((i for i, g in enumerate(guided_at) if g), default=-1)
    doubled = last_guided >= 0  # the cache holds the unconditional half while a guided step is ahead
    cache = _start_cache(model, steps, labels, orders, codes, n_known, counts, doubled, control, sc.attention, prompt)

    def twice(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x]) if doubled else x

    track = return_confidence or sc.refine_rounds > 0  # confidences cost a gather and a scatter per step
    confidence = torch.ones(B, n, device=orders.device) if track else None
    pos = n_known
    for i, c in enumerate(counts):
        cells = orders[:, pos:pos + c]
        temperature = sc.temperature_at(pos - n_known, n - n_known)
        pos += c
        half = B if guided_at[i] else 0  # guided: both halves, mixed at the head's input
        w = guidance_weight(sc.cfg_scale, sc.cfg_schedule, pos - n_known, n - n_known) if half else 1.0
        drawn = steps.tokens(twice(cells) if half else cells, cache if half or not doubled else cache.rows(B),
                             half, w, temperature, sc.top_k, sc.top_p, sc.token_draw, generator, track)
        tokens = drawn[0] if track else drawn
        codes.scatter_(1, cells, tokens)
        if track:
            confidence.scatter_(1, cells, drawn[1].to(confidence.dtype))
        if i < len(counts) - 1:  # the final step's tokens are never needed by Pass 1
            if doubled and i >= last_guided:  # no guided step left: drop the unconditional half
                cache, doubled = cache.rows(B), False
            steps.extend(twice(tokens), twice(cells), cache, sc.attention)
        if on_step is not None:
            on_step(i + 1, len(counts) + sc.refine_rounds)
    if sc.refine_rounds:
        total = len(counts) + sc.refine_rounds
        codes, confidence = _refine(model, steps, labels, codes, confidence, known_mask, sc, generator,
                                    None if on_step is None else lambda r: on_step(len(counts) + r, total), control,
                                    prompt)
    return (codes, confidence) if return_confidence else codes


def _start_cache(model: ARPG, steps: DecodeSteps, labels: torch.Tensor, orders: torch.Tensor, codes: torch.Tensor,
                 n_known: int, counts: list[int], doubled: bool, control: tuple[torch.Tensor, str] | None,
                 attention: str, prompt: tuple[torch.Tensor, torch.Tensor] | None = None):
    """A group's KV cache holding the class token (and the null class for guidance's unconditional half,
    after the conditional rows) or a text model's prompt prefix (and the null caption), the condition
    features, and the known cells (one causal block, eager)."""
    B = labels.shape[0]
    rows = 2 * B if doubled else B
    device = orders.device
    # under autocast (the published sampler's way) the cache holds the autocast dtype, as its keys come out
    autocast = torch.is_autocast_enabled(device.type)
    dtype = torch.get_autocast_dtype(device.type) if autocast else model.embeddings.weight.dtype
    cache = steps.new_cache(rows, counts, dtype, device)
    if control is not None:
        feats, how = control
        cache.condition = torch.cat([feats, feats]) if doubled else feats
        if doubled and how == "drop":  # the unconditional half: no class and no condition
            cache.condition_active = torch.arange(rows, device=device) < B
    if prompt is None:
        cls = model.class_ids(labels)
        if doubled:
            cls = torch.cat([cls, torch.full_like(cls, model.config.null_class_id)])
        steps.extend(cls[:, None], torch.full((rows, 1), -1, dtype=torch.long, device=device), cache, attention)
    else:  # the prompt prefix, causal as in training, eager (one shape, run once)
        feats, valid = prompt
        if doubled:
            null, all_valid = model.caption.null(B)
            feats, valid = torch.cat([feats.to(null.dtype), null]), torch.cat([valid, all_valid])
        prefix, valid = model.caption(feats, valid)
        cache.key_valid = valid
        steps.extend(None, torch.full(valid.shape, -1, dtype=torch.long, device=device), cache, "causal",
                     eager=True, embedded=prefix)
    if n_known:
        cells = orders[:, :n_known]
        reps = 2 if doubled else 1
        steps.extend(codes.gather(1, cells).repeat(reps, 1), cells.repeat(reps, 1), cache, "causal", eager=True)
    return cache


def _refine(model: ARPG, steps: DecodeSteps, labels: torch.Tensor, codes: torch.Tensor, confidence: torch.Tensor,
            known_mask: torch.Tensor | None, sc: SamplingConfig, generator: torch.Generator | None,
            on_round: Callable[[int], None] | None = None,
            control: tuple[torch.Tensor, str] | None = None,
            prompt: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        codes, conf = _decode_group(model, steps, labels, orders, codes, keep, one_step, generator,
                                    return_confidence=True, control=control, prompt=prompt)
        confidence = torch.where(keep, confidence, conf)
        if on_round is not None:
            on_round(r + 1)
    return codes, confidence
