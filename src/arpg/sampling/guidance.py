"""Classifier-free guidance weights and token sampling (temperature, top-k, top-p)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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


def _block_width(V: int) -> int:
    """Width of the blocks :func:`pick_by_uniform` searches in two levels: ceil(sqrt(V)) for V >= 1."""
    return math.isqrt(V - 1) + 1


def _pick(weights: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF pick over nonnegative ``weights`` [N, V] (any positive total) with uniforms ``u`` [N, 1]:
    the index [N, 1] whose interval of the running sums holds ``u * total``, and the row totals [N, 1].

    Two levels instead of one cumulative sum over the whole vocabulary (a sequential scan, and a second
    [N, V] buffer): the weights are summed per block of ~sqrt(V) entries (a vectorised reduction), the
    block is found in the running sums of those, then the entry in the running sums of that block alone.
    Targets are kept strictly below each level's total, so float rounding can never land the pick on an
    entry of weight zero (a masked or underflowed token)."""
    N, V = weights.shape
    width = _block_width(V)
    n_blocks = -(-V // width)
    if n_blocks * width != V:
        weights = F.pad(weights, (0, n_blocks * width - V))
    blocks = weights.view(N, n_blocks, width)
    running = blocks.sum(-1).cumsum(-1)  # [N, n_blocks]
    total = running[:, -1:]
    target = torch.minimum(u.to(total.dtype) * total, torch.nextafter(total, torch.zeros_like(total)))
    block = torch.searchsorted(running, target, right=True)  # first block whose running sum exceeds target
    before = running.gather(1, (block - 1).clamp_min(0)).masked_fill(block == 0, 0.0)
    inner = blocks.gather(1, block[:, :, None].expand(N, 1, width))[:, 0].cumsum(-1)  # [N, width]
    end = inner[:, -1:]
    rest = torch.minimum((target - before).clamp_min(0.0), torch.nextafter(end, torch.zeros_like(end)))
    entry = torch.searchsorted(inner, rest, right=True)
    return block * width + entry, total


def pick_by_uniform(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF pick: for ``probs`` [N, V] (nonnegative, any positive total) and uniforms ``u`` [N, 1] in
    [0, 1), the index [N, 1] whose cumulative-sum interval holds ``u`` times the row's total mass."""
    return _pick(probs, u)[0]


def draw_inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``probs`` [N, V] with probability ``probs`` (exactly the distribution of
    ``torch.multinomial``): one uniform per row, located in the row's cumulative sums. It draws N random
    numbers where multinomial draws N x V, and reads nothing back to the host."""
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=probs.dtype)
    return pick_by_uniform(probs, u)


def draw_from_logits(logits: torch.Tensor, u: torch.Tensor, temperature: float | torch.Tensor = 1.0,
                     top_k: int | None = None, top_p: float | None = None,
                     overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draw straight from ``logits`` [N, V] with uniforms ``u`` [N, 1]: the tokens [N, 1] and
    the probability each had [N, 1] under ``softmax(filter(logits / temperature))``. The weights are
    ``exp(l - max l)``, never normalised (the pick scales ``u`` by their total), so no softmax pass and no
    probability buffer. ``overwrite``: the caller hands over ``logits`` (float32), which then serve as the
    scratch buffer (the sampler's own logits: no [N, V] allocation at all)."""
    x = logits.float()
    own = overwrite or x is not logits
    if not (isinstance(temperature, (int, float)) and temperature == 1.0):  # x / 1 == x: skip the pass
        x = x.div_(temperature) if own else x / temperature
        own = True
    filtered = filter_logits(x, top_k, top_p)
    own = own or filtered is not x
    top = filtered.amax(dim=-1, keepdim=True)
    weights = (filtered.sub_(top) if own else filtered - top).exp_()
    tokens, total = _pick(weights, u)
    return tokens, weights.gather(1, tokens) / total


def token_probs(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0, top_k: int | None = None,
                top_p: float | None = None) -> torch.Tensor:
    """float32 probabilities [..., V] the sampler draws from: ``logits / temperature``, filtered, softmax."""
    logits = logits.float()
    if not (isinstance(temperature, (int, float)) and temperature == 1.0):  # x / 1 == x: skip the pass
        logits = logits / temperature
    return filter_logits(logits, top_k, top_p).softmax(dim=-1)


def sample_tokens(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None,
                  return_probs: bool = False, draw: str = "multinomial", overwrite: bool = False):
    """Sample one token per row of ``logits`` [..., V]; returns LongTensor [...] (and, with
    ``return_probs``, the probability each drawn token had: the sampler's confidence). ``draw``:
    ``"multinomial"`` (the published draw) or ``"inverse-cdf"`` (same distribution, one uniform per token,
    :func:`draw_from_logits`). ``overwrite``: ``logits`` may be used as scratch space (the sampler passes
    its own)."""
    if draw == "inverse-cdf":
        V = logits.shape[-1]
        flat = logits.reshape(-1, V)
        u = torch.rand(flat.shape[0], 1, generator=generator, device=logits.device)
        tokens, chosen = draw_from_logits(flat, u, temperature, top_k, top_p, overwrite=overwrite)
        shape = logits.shape[:-1]
        return (tokens.view(shape), chosen.view(shape)) if return_probs else tokens.view(shape)
    probs = token_probs(logits, temperature, top_k, top_p)
    flat = probs.reshape(-1, probs.shape[-1])
    tokens = torch.multinomial(flat, 1, generator=generator)
    if not return_probs:
        return tokens.view(probs.shape[:-1])
    return tokens.view(probs.shape[:-1]), flat.gather(1, tokens).view(probs.shape[:-1])
