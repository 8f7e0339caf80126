"""A straightforward sampler, kept as a yardstick for tests and benchmarks.

It follows the structure of the published ARPG sampler: one random order for the whole batch, block
attention, the KV cache grown by concatenation every step (so each step re-allocates and copies every
layer's cache), and guidance as a doubled batch. It shares the model's weights and the sampling
functions with :func:`arpg.generate`, so given the same order and generator both must produce the same
tokens; :func:`arpg.generate` must only be faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import ARPG
from ..model.rope import apply_rope, position_index
from .guidance import apply_guidance, guidance_weight, sample_tokens
from .schedules import step_counts


@torch.inference_mode()
def reference_generate(model: ARPG, labels: torch.Tensor, order: torch.Tensor, *, steps: int = 64,
                       cfg_scale: float = 1.0, cfg_schedule: str = "linear", step_schedule="arccos",
                       temperature: float = 1.0, top_k=None, top_p=None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample codes [B, n] decoding cells in ``order`` [n] (shared by the batch), growing caches by concat."""
    cfg = model.config
    model.eval()
    B, n = labels.shape[0], cfg.n_cells
    device = model.embeddings.weight.device
    guided = cfg_scale != 1.0
    rows = 2 * B if guided else B
    order = order.to(device)
    counts = step_counts(n, steps, step_schedule)

    past_k = [None] * len(model.layers.self_dec)
    past_v = [None] * len(model.layers.self_dec)
    shared_k = shared_v = None

    def push(ids: torch.Tensor, cells: torch.Tensor) -> None:
        nonlocal shared_k, shared_v
        rope = model.rope[position_index(cells)]
        h = model.embeddings(ids)
        for i, blk in enumerate(model.layers.self_dec):
            q, k, v = blk.attn.qkv(blk.attn_norm(h), rope)
            past_k[i] = k if past_k[i] is None else torch.cat([past_k[i], k], dim=2)
            past_v[i] = v if past_v[i] is None else torch.cat([past_v[i], v], dim=2)
            y = F.scaled_dot_product_attention(q, past_k[i], past_v[i])  # no mask: block attention
            h = h + blk.attn.out(y)
            h = h + blk.ffn(blk.ffn_norm(h))
        hn = model.layers.norm(h)
        T = ids.shape[1]
        k = apply_rope(model.layers.to_k(hn).view(rows, T, cfg.n_head, cfg.head_dim), rope).transpose(1, 2)
        v = model.layers.to_v(hn).view(rows, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
        shared_k = k if shared_k is None else torch.cat([shared_k, k], dim=2)
        shared_v = v if shared_v is None else torch.cat([shared_v, v], dim=2)

    cls = model.class_ids(labels.to(device))
    if guided:
        cls = torch.cat([cls, torch.full_like(cls, cfg.null_class_id)])
    push(cls[:, None], torch.full((rows, 1), -1, dtype=torch.long, device=device))

    codes = torch.zeros(B, n, dtype=torch.long, device=device)
    pos = 0
    for i, c in enumerate(counts):
        cells = order[pos:pos + c].expand(rows, c)
        x = model.query_inputs(cls, c)
        rope = model.rope[position_index(cells)]
        for blk in model.layers.cross_dec:
            x = blk(x, rope, shared_k, shared_v, is_causal=False)
        logits = model.head(model.norm(x)).float()
        if guided:
            logits = apply_guidance(logits[:B], logits[B:], guidance_weight(cfg_scale, cfg_schedule, pos + c, n))
        tokens = sample_tokens(logits, temperature, top_k, top_p, generator)
        codes[:, order[pos:pos + c]] = tokens
        if i < len(counts) - 1:
            push(torch.cat([tokens, tokens]) if guided else tokens, cells)
        pos += c
    return codes
