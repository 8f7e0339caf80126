"""Fused q|k|v and w1|w3 projections: same logits, published names, never stale."""

import random

import torch

import arpg
from arpg.fusion import FUSED_ATTRIBUTE, check_fusions, fuse_projections, unfuse_projections
from arpg.model import random_orders


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
    fuse_projections(model)
    n_self, n = len(model.layers.self_dec), len(model.layers.self_dec) + len(model.layers.cross_dec)
    assert check_fusions(model) == n_self + n
    separate = []  # the separate projections must not run while fused
    for lin in (model.layers.self_dec[0].attn.to_k, model.layers.cross_dec[-1].ffn.w3):
        lin.register_forward_hook(lambda *a: separate.append(1))
    torch.testing.assert_close(model(*x), want, atol=1e-5, rtol=1e-5)
    assert separate == []
    kw = dict(steps=5, cfg_scale=2.0, token_draw="inverse-cdf")
    a = arpg.generate(model, x[1], generator=torch.Generator().manual_seed(seed), **kw)
    unfuse_projections(model)
    b = arpg.generate(model, x[1], generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(a, b)
    # state_dict: published names and values; no fused tensor in it
    sd = model.state_dict()
    assert sd.keys() == sd_before.keys() and all(torch.equal(sd[k], sd_before[k]) for k in sd)


def test_fused_model_saves_and_loads_strict(tiny_model, tmp_path):
    fuse_projections(tiny_model)
    path = tmp_path / "fused.safetensors"
    arpg.model.weights.save_model(tiny_model, path)
    back = arpg.load_model(path)  # strict=True loading of the published names
    x = _inputs(tiny_model, random.randrange(10**6))
    torch.testing.assert_close(back(*x), tiny_model(*x), atol=1e-5, rtol=1e-5)


def test_in_place_updates_reach_the_fused_weight_and_replacement_unfuses(tiny_model):
    fuse_projections(tiny_model)
    blk = tiny_model.layers.self_dec[0]
    x = _inputs(tiny_model, random.randrange(10**6))
    with torch.no_grad():
        blk.attn.to_k.weight.mul_(1.5)  # in place: the fused weight is the same memory
    assert check_fusions(tiny_model) > 0 and FUSED_ATTRIBUTE in blk.attn.__dict__
    with torch.no_grad():  # fusions serve decoding (no gradient); training runs the plain projections
        fused_out = tiny_model(*x)
        blk.ffn.w3.weight.data = blk.ffn.w3.weight.data.clone() * 0.5  # replaced: this FFN must unfuse
        out = tiny_model(*x)
    assert FUSED_ATTRIBUTE not in blk.ffn.__dict__ and FUSED_ATTRIBUTE in blk.attn.__dict__
    unfuse_projections(tiny_model)
    torch.testing.assert_close(out, tiny_model(*x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, fused_out)


def test_load_model_fuse(tiny_model, tmp_path):
    path = tmp_path / "m.safetensors"
    arpg.save_model(tiny_model, path)
    fused = arpg.load_model(path, fuse=True)
    assert check_fusions(fused) > 0
    x = _inputs(tiny_model, random.randrange(10**6))
    torch.testing.assert_close(fused(*x), tiny_model(*x), atol=1e-5, rtol=1e-5)
