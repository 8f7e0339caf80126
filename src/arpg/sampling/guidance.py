"""Classifier-free guidance weights and token sampling (temperature, top-k, top-p)."""

from __future__ import annotations

import torch

from ..errors import ARPGError

CFG_SCHEDULES = ("linear", "constant")


def guidance_weight(scale: float, schedule: str, decoded_after: int, total: int) -> float:
    """Guidance weight for a step.

    ``linear``: ``1 + (scale - 1) * decoded_after / total`` where ``decoded_after`` counts the cells decoded
    once this step is done (published ARPG; with prefilled cells ``total`` is the unknown count).
    ``constant``: ``scale``.
    """
    if schedule == "linear":
        return 1.0 + (scale - 1.0) * decoded_after / total
    if schedule == "constant":
        return float(scale)
    raise ARPGError(f"unknown cfg_schedule {schedule!r}; choose one of {', '.join(CFG_SCHEDULES)}")


def apply_guidance(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """``uncond + weight * (cond - uncond)``."""
    return uncond + weight * (cond - uncond)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Mask (to -inf) everything outside the top-k and/or the top-p nucleus, per row of the last dim.

    top-p keeps the smallest set of tokens, taken in order of decreasing probability, whose mass reaches
    ``top_p`` (always at least the most likely token).
    """
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, idx = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p  # the mass was already reached without this token
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


TOKEN_DRAWS = ("multinomial", "inverse-cdf")


def pick_by_uniform(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF pick: for ``probs`` [N, V] and uniforms ``u`` [N, 1] in [0, 1), the index [N, 1] whose
    cumulative-sum interval holds ``u`` (scaled by the row's total mass)."""
    cdf = probs.cumsum(dim=-1)
    return torch.searchsorted(cdf, u.to(cdf.dtype) * cdf[:, -1:], right=True).clamp_max(probs.shape[-1] - 1)


def draw_inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``probs`` [N, V] with probability ``probs`` (exactly the distribution of
    ``torch.multinomial``): one uniform per row, located in the row's cumulative sums. It draws N random
    numbers where multinomial draws N x V, and reads nothing back to the host."""
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=probs.dtype)
    return pick_by_uniform(probs, u)


def token_probs(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0, top_k: int | None = None,
                top_p: float | None = None) -> torch.Tensor:
    """float32 probabilities [..., V] the sampler draws from: ``logits / temperature``, filtered, softmax."""
    logits = logits.float()
    if not (isinstance(temperature, (int, float)) and temperature == 1.0):  # x / 1 == x: skip the pass
        logits = logits / temperature
    return filter_logits(logits, top_k, top_p).softmax(dim=-1)


def sample_tokens(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None,
                  return_probs: bool = False, draw: str = "multinomial"):
    """Sample one token per row of ``logits`` [..., V]; returns LongTensor [...] (and, with
    ``return_probs``, the probability each drawn token had: the sampler's confidence). ``draw``:
    ``"multinomial"`` (the published draw) or ``"inverse-cdf"`` (same distribution, one uniform per token)."""
    probs = token_probs(logits, temperature, top_k, top_p)
    flat = probs.reshape(-1, probs.shape[-1])
    if draw == "inverse-cdf":
        tokens = draw_inverse_cdf(flat, generator)
    else:
        tokens = torch.multinomial(flat, 1, generator=generator)
    if not return_probs:
        return tokens.view(probs.shape[:-1])
    return tokens.view(probs.shape[:-1]), flat.gather(1, tokens).view(probs.shape[:-1])
