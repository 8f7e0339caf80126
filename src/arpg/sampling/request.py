"""A sampling request checked before any work: :func:`resolve_sampling` (the settings a call uses) and
:func:`check_request` (every refusal of labels, prefilled cells and conditions, in one line each)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..errors import ARPGError
from ..model import ARPG
from ..model.control import check_condition
from ..model.text import check_text
from .orders import make_orders
from .recipes import recommended_sampling
from .schedules import step_counts
from .settings import SamplingConfig, parse_step_schedule


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


@dataclasses.dataclass
class Request:
    """A checked request: what every chunk decodes."""

    labels: torch.Tensor
    sc: SamplingConfig
    orders: torch.Tensor
    known_codes: torch.Tensor | None
    known_mask: torch.Tensor | None
    condition: torch.Tensor | None
    widest: int
    text: torch.Tensor | None = None  # text models: prompt features [B, text_len, text_dim]
    text_mask: torch.Tensor | None = None  # [B, text_len], True = a real token  # the most cells one step decodes (for the memory check)


def check_request(model: ARPG, labels, *, steps, cfg_scale, cfg_schedule, step_schedule, temperature, top_k,
                   top_p, order, attention, generator, sampling, guidance_interval, temperature_schedule,
                   temperature_end, refine_rounds, refine_fraction, token_draw, known_codes, known_mask,
                   condition, prompts=None, text_encoder=None, text=None, text_mask=None) -> Request:
    """Every refusal of a request, in one line each, before any work; the settings it resolves to."""
    cfg = model.config
    device = model.embeddings.weight.device
    if cfg.texted:
        labels, text, text_mask = _prompt_features(model, labels, prompts, text_encoder, text, text_mask)
    else:
        if prompts is not None or text is not None:
            raise ARPGError("this is a class-conditional model: it takes class labels, not prompts")
        if labels is None:
            raise ARPGError("give the class labels to sample (one per image)")
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        if labels.dim() != 1:
            raise ARPGError(f"labels must be a 1-D sequence of class ids, got shape {list(labels.shape)}")
        model.check_labels(labels)
    if condition is not None:
        if not cfg.controlled:
            model.encode_condition(condition)  # raises the one-line "no condition encoder" error
        condition = check_condition(condition, labels.shape[0], cfg.condition_channels, cfg.condition_side)
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
    if plan is not None:
        widest = max(plan)
    elif isinstance(sc.step_schedule, str):
        unknown_max = int((~known_mask).sum(dim=1).max())
        widest = max(step_counts(unknown_max, min(sc.steps, unknown_max), sc.step_schedule)) if unknown_max else 1
    else:
        widest = n
    return Request(labels, sc, orders, known_codes, known_mask, condition, widest, text, text_mask)


def _prompt_features(model: ARPG, labels, prompts, text_encoder, text, text_mask):
    """A text model's request: the prompt features [B, L, D] and mask (encoded from ``prompts`` by
    ``text_encoder``, or given), and placeholder labels (one per row) for the decode loop."""
    cfg = model.config
    if labels is not None:
        raise ARPGError("this is a text-to-image model: give prompts (or prompt features), not class labels")
    if prompts is not None:
        if text is not None:
            raise ARPGError("give prompts or prompt features (text=), not both")
        from ..text import check_prompts

        prompts = check_prompts(prompts)
        if text_encoder is None:
            raise ARPGError("prompts need a text encoder (text_encoder=arpg.text.load_text_encoder(...)) or give "
                            "precomputed prompt features (text=)")
        if (text_encoder.dim, text_encoder.length) != (cfg.text_dim, cfg.text_len):
            raise ARPGError(f"the text encoder gives {text_encoder.length} x {text_encoder.dim} features; this model "
                            f"takes {cfg.text_len} x {cfg.text_dim}")
        text, text_mask = text_encoder.encode(prompts)
    if text is None:
        raise ARPGError("a text-to-image model needs prompts (with a text_encoder) or prompt features (text=)")
    text, text_mask = check_text(text, text_mask, None, cfg.text_len, cfg.text_dim)
    device = model.embeddings.weight.device
    labels = torch.zeros(text.shape[0], dtype=torch.long, device=device)
    return labels, text.to(device), text_mask.to(device)
