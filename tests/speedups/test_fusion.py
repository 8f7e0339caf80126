"""Fused q|k|v and w1|w3 projections as module swaps: same logits, published names, never stale, undone exactly."""

import random

import torch

import arpg
from arpg.model import random_orders
from arpg.model.blocks import FeedForward, SelfAttention
from arpg.speedups import fuse_projections, is_fused, unfuse_projections
from arpg.speedups.fusion import FusedFeedForward, FusedSelfAttention, refresh_fusions


def _inputs(model, seed):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.n_cells), generator=g)
    labels = torch.randint(0, cfg.num_classes, (2,), generator=g)
    return tokens, labels, random_orders(2, cfg.n_cells, generator=g)


def test_fused_logits_equal_unfused_and_decoding_matches(any_tiny_model):
    model = any_tiny_model
    seed = random.randrange(10**6)
    x = _inputs(model, seed)
    want = model(*x)
    sd_before = {k: v.clone() for k, v in model.state_dict().items()}
    attn0 = model.layers.self_dec[0].attn
    fuse_projections(model)
    assert is_fused(model) and isinstance(model.layers.self_dec[0].attn, FusedSelfAttention)
    assert all(isinstance(b.ffn, FusedFeedForward) for b in list(model.layers.self_dec) + list(model.layers.cross_dec))
    n_self, n = len(model.layers.self_dec), len(model.layers.self_dec) + len(model.layers.cross_dec)
    assert refresh_fusions(model) == n_self + n
    separate = []  # the separate projections must not run while fused
    for lin in (model.layers.self_dec[0].attn.to_k, model.layers.cross_dec[-1].ffn.w3):
        lin.register_forward_hook(lambda *a: separate.append(1))
    with torch.no_grad():
        torch.testing.assert_close(model(*x), want, atol=1e-5, rtol=1e-5)
    assert separate == []
    kw = dict(steps=5, cfg_scale=2.0, token_draw="inverse-cdf")
    a = arpg.generate(model, x[1], generator=torch.Generator().manual_seed(seed), **kw)
    # state_dict while fused: published names and values; no fused tensor in it
    sd = model.state_dict()
    assert sd.keys() == sd_before.keys() and all(torch.equal(sd[k], sd_before[k]) for k in sd)
    unfuse_projections(model)
    assert not is_fused(model) and model.layers.self_dec[0].attn is attn0  # the very module back
    assert type(model.layers.self_dec[0].attn) is SelfAttention and type(model.layers.self_dec[0].ffn) is FeedForward
    b = arpg.generate(model, x[1], generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(a, b)


def test_fused_model_saves_and_loads_strict(tiny_model, tmp_path):
    fuse_projections(tiny_model)
    path = tmp_path / "fused.safetensors"
    arpg.save_model(tiny_model, path)
    back = arpg.load_model(path)  # strict=True loading of the published names
    x = _inputs(tiny_model, random.randrange(10**6))
    with torch.no_grad():
        torch.testing.assert_close(back(*x), tiny_model(*x), atol=1e-5, rtol=1e-5)


def test_in_place_updates_reach_the_fused_weight_and_replacement_unfuses(tiny_model):
    fuse_projections(tiny_model)
    blk = tiny_model.layers.self_dec[0]
    x = _inputs(tiny_model, random.randrange(10**6))
    with torch.no_grad():
        blk.attn.to_k.weight.mul_(1.5)  # in place: the fused weight is the same memory
        assert blk.attn.fused_weight() is not None
        fused_out = tiny_model(*x)
        blk.ffn.w3.weight.data = blk.ffn.w3.weight.data.clone() * 0.5  # replaced: this FFN must unfuse
        out = tiny_model(*x)
    assert blk.ffn.fused_weight() is None and blk.attn.fused_weight() is not None
    unfuse_projections(tiny_model)
    with torch.no_grad():
        torch.testing.assert_close(out, tiny_model(*x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, fused_out)


def test_a_fused_model_trains_with_the_same_gradients(tiny_model):
    x = _inputs(tiny_model, random.randrange(10**6))
    tiny_model.train()
    torch.manual_seed(0)
    tiny_model(*x, drop_labels=torch.zeros(2, dtype=torch.bool), return_loss=True).backward()
    want = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    fuse_projections(tiny_model)
    torch.manual_seed(0)
    tiny_model(*x, drop_labels=torch.zeros(2, dtype=torch.bool), return_loss=True).backward()
    got = dict(tiny_model.named_parameters())
    for n, g in want.items():
        torch.testing.assert_close(got[n].grad, g, atol=1e-5, rtol=1e-4)
