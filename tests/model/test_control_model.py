"""ControlARPG's model side: the condition encoder, target-aware queries, and that models without it are
untouched."""

import pytest
import torch

from arpg import ARPG, ARPGError, generate, random_orders

TINY_CONTROL = dict(condition_channels=1, condition_stride=2, condition_kind="canny")


def _controlled(mode="add", seed=0, **extra):
    torch.manual_seed(seed)
    m = ARPG.from_preset("ARPG-tiny", condition_mode=mode, **TINY_CONTROL, **extra)
    torch.nn.init.normal_(m.head.weight, std=0.5)
    return m.eval()


def _randomise_encoder(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.condition_encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _batch(model, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (B, cfg.n_cells), generator=g)
    labels = torch.randint(0, cfg.num_classes, (B,), generator=g)
    orders = random_orders(B, cfg.n_cells, generator=g)
    cond = (torch.rand(B, 1, cfg.condition_side, cfg.condition_side, generator=g) > 0.5).float() \
        if cfg.controlled else None
    return tokens, labels, orders, cond


def test_published_models_have_no_condition_parameters():
    m = ARPG.from_preset("ARPG-tiny")
    assert not m.config.controlled
    assert not any(k.startswith("condition_encoder") for k in m.state_dict())
    with pytest.raises(ARPGError, match="no condition encoder"):
        m.encode_condition(torch.rand(1, 1, 8, 8))


def test_add_mode_starts_exactly_at_the_base_model():
    """Zero-initialised encoder output: a fresh controlled model with the base weights IS the base model."""
    base = ARPG.from_preset("ARPG-tiny")
    torch.nn.init.normal_(base.head.weight, std=0.5)
    ctl = _controlled("add")
    missing, unexpected = ctl.load_state_dict(base.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("condition_encoder.") for k in missing)
    tokens, labels, orders, cond = _batch(ctl)
    assert torch.equal(ctl(tokens, labels, orders, condition=cond), base.eval()(tokens, labels, orders))


def test_encoder_gives_one_feature_per_cell():
    m = _controlled()
    _randomise_encoder(m)
    feats = m.encode_condition(torch.rand(3, 1, 16, 16))
    assert feats.shape == (3, 64, m.config.dim)
    with pytest.raises(ARPGError, match=r"shaped \[3, 1, 16, 16\].*got \[3, 1, 8, 8\]"):
        m.encode_condition(torch.rand(3, 1, 8, 8))
    with pytest.raises(ARPGError, match="floats"):
        m.encode_condition(torch.ones(3, 1, 16, 16, dtype=torch.long))


@pytest.mark.parametrize("mode", ["add", "replace"])
def test_a_cell_feature_reaches_only_queries_of_that_cell(mode):
    m = _controlled(mode)
    _randomise_encoder(m)
    tokens, labels, orders, cond = _batch(m, B=1)
    feats = m.encode_condition(cond)
    cache = m.new_cache(1)
    m.extend(m.class_ids(labels)[:, None], torch.full((1, 1), -1), cache)
    m.extend(tokens[:, :5], torch.arange(5)[None], cache)
    cells = torch.tensor([[10, 20, 30, 40]])
    cache.condition = feats
    ref = m.query(cells, cache)
    changed = feats.clone()
    changed[:, 20] += torch.randn(m.config.dim)
    cache.condition = changed
    out = m.query(cells, cache)
    assert torch.allclose(out[:, [0, 2, 3]], ref[:, [0, 2, 3]], atol=1e-6)
    assert (out[:, 1] - ref[:, 1]).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["add", "replace"])
def test_inactive_rows_are_the_plain_model(mode):
    m = _controlled(mode)
    _randomise_encoder(m)
    tokens, labels, orders, cond = _batch(m)
    plain = m(tokens, labels, orders)
    dropped = m(tokens, labels, orders, condition=cond, drop_condition=torch.tensor([True, False]))
    assert torch.allclose(dropped[0], plain[0], atol=1e-6)
    assert (dropped[1] - plain[1]).abs().max() > 1e-3


def test_causality_holds_with_a_condition():
    m = _controlled("replace")
    _randomise_encoder(m)
    tokens, labels, orders, cond = _batch(m)
    ref = m(tokens, labels, orders, condition=cond)
    for i in (0, 17, 50):
        changed = tokens.clone()
        changed.scatter_(1, orders[:, i:], torch.randint(0, 64, orders[:, i:].shape))
        out = m(changed, labels, orders, condition=cond)
        assert torch.allclose(out[:, :i + 1], ref[:, :i + 1], atol=1e-5)


def test_cached_decoding_matches_teacher_forcing_with_a_condition():
    m = _controlled("add")
    _randomise_encoder(m)
    tokens, labels, orders, cond = _batch(m)
    ref = m(tokens, labels, orders, condition=cond)
    cache = m.new_cache(2)
    cache.condition = m.encode_condition(cond)
    m.extend(m.class_ids(labels)[:, None], torch.full((2, 1), -1), cache)
    outs = []
    for i in range(64):
        outs.append(m.query(orders[:, i:i + 1], cache))
        if i < 63:
            m.extend(tokens.gather(1, orders[:, i:i + 1]), orders[:, i:i + 1], cache, "causal")
    assert (torch.cat(outs, 1) - ref).abs().max() < 1e-4


def test_generate_condition_errors_and_guidance_modes():
    m = _controlled()
    _randomise_encoder(m)
    plain = ARPG.from_preset("ARPG-tiny").eval()
    with pytest.raises(ARPGError, match="no condition encoder"):
        generate(plain, [0], steps=4, condition=torch.rand(1, 1, 16, 16))
    with pytest.raises(ARPGError, match=r"shaped \[2, 1, 16, 16\]"):
        generate(m, [0, 1], steps=4, condition=torch.rand(3, 1, 16, 16))
    with pytest.raises(ARPGError, match="condition_guidance"):
        generate(m, [0], steps=4, condition=torch.rand(1, 16, 16), condition_guidance="maybe")
    cond = (torch.rand(1, 16, 16) > 0.5).float()  # one map for every row
    outs = {}
    for how in ("keep", "drop"):
        g = torch.Generator().manual_seed(3)
        outs[how] = generate(m, [0, 1, 2], steps=8, cfg_scale=3.0, condition=cond, condition_guidance=how,
                             generator=g)
    assert outs["keep"].shape == (3, 64) and not torch.equal(outs["keep"], outs["drop"])


def test_condition_with_prefilled_cells_keeps_the_known_ones():
    m = _controlled()
    _randomise_encoder(m)
    known = torch.zeros(2, 64, dtype=torch.bool)
    known[:, :20] = True
    codes = torch.randint(0, 64, (2, 64))
    out = generate(m, [1, 2], steps=6, known_codes=codes, known_mask=known, condition=torch.rand(2, 1, 16, 16),
                   refine_rounds=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :20], codes[:, :20])


def test_config_checks_the_condition_fields():
    with pytest.raises(ARPGError, match="power of 2"):
        ARPG.from_preset("ARPG-tiny", condition_channels=1, condition_stride=3)
    with pytest.raises(ARPGError, match="condition_mode"):
        ARPG.from_preset("ARPG-tiny", condition_channels=1, condition_mode="concat")
