"""The decode steps: buckets, static (compiled-shape) steps == eager steps, generate(compile=...) == eager."""

import itertools
import random

import pytest
import torch

import arpg
import arpg.sampling.sampler as sampler_mod
import arpg.sampling.steps as steps_mod
from arpg.errors import ARPGError
from arpg.model import random_orders
from arpg.sampling.steps import (DecodeSteps, bucket_sizes, compile_report, decode_steps, key_windows,
                                 pass1_body, pass2_body, static_capacity, window_for)


def _waste(counts, buckets):
    return sum(min(b for b in buckets if b >= c) - c for c in counts)


def test_buckets_exact_when_few_and_optimal_when_many():
    rng = random.Random()
    for _ in range(20):
        counts = [rng.randint(1, 40) for _ in range(rng.randint(1, 30))]
        k = rng.randint(1, 5)
        got = bucket_sizes(counts, k)
        distinct = sorted(set(counts))
        assert max(got) == max(counts) and len(got) <= k
        if len(distinct) <= k:
            assert got == tuple(distinct)
            continue
        # Brute force: every k-subset of the distinct values that holds the largest.
        best = min(_waste(counts, s + (distinct[-1],)) for s in itertools.combinations(distinct[:-1], k - 1))
        assert _waste(counts, got) == best
    with pytest.raises(ARPGError, match="max_buckets"):
        bucket_sizes([1, 2], 0)


def test_key_windows_cover_the_cache():
    for cap in (17, 64, 257, 1056):
        w = key_windows(cap)
        assert w[-1] == cap and all(a < b for a, b in zip(w, w[1:])) and len(w) <= 5
        assert window_for(cap, w) == cap and window_for(1, w) == w[0]


def _filled_cache(model, rows, capacity, seed):
    """An eager cache and a zeroed static one, both holding the class token and some cells."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    cls = model.class_ids(torch.randint(0, cfg.num_classes, (rows,), generator=g))
    order = random_orders(rows, cfg.n_cells, generator=g)
    eager = model.new_cache(rows)
    static = model.new_cache(rows, max_len=capacity, zeroed=True)
    first = torch.full((rows, 1), -1)
    pre = torch.randint(0, cfg.vocab_size, (rows, 5), generator=g)
    for cache in (eager, static):
        model.extend(cls[:, None], first, cache)
        model.extend(pre, order[:, :5], cache, "causal")
    return eager, static, order, g


@pytest.mark.parametrize("attention", ["block", "causal"])
def test_static_steps_equal_eager_steps(tiny_model, attention):
    """Padded, windowed, masked steps (the compiled shapes) give the eager logits and write the same keys/values."""
    model, cfg = tiny_model, tiny_model.config
    torch.manual_seed(random.randrange(10**6))
    rows, T, W = 3, 3, 5  # three real tokens padded to five
    capacity = static_capacity(cfg.n_cells, W)
    eager, static, order, g = _filled_cache(model, rows, capacity, random.randrange(10**6))
    ids = torch.randint(0, cfg.vocab_size, (rows, T), generator=g)
    cells = order[:, 5:5 + T]
    model.extend(ids, cells, eager, attention)
    pad = lambda x: torch.cat([x, x[:, :1].expand(-1, W - T)], dim=1)  # noqa: E731
    start, n_valid = torch.tensor(static.length), torch.tensor(T)
    window = window_for(static.length + T, key_windows(capacity))
    pass1_body(model, pad(ids), pad(cells), static, start, n_valid, window, attention == "causal", True)
    L = eager.length
    for a, b in zip(eager.self_k + [eager.shared_k], static.self_k + [static.shared_k]):
        torch.testing.assert_close(b[:, :, :L], a[:, :, :L], atol=1e-5, rtol=1e-5)
    targets = order[:, 5 + T:5 + T + 4]
    want = model.query(targets, eager).softmax(-1)
    for window in (capacity, window_for(L, key_windows(capacity))):
        got, none = pass2_body(model, pad(targets)[:, :4], static, torch.tensor(L), window, True, 0, 1.0, 1.0,
                               None, None, None)
        assert none is None
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.fixture
def eager_static(monkeypatch):
    """generate(compile=True) running the static shapes without torch.compile (fast, same code path)."""
    made = {}

    def make(model, mode=True):
        if not mode:
            return DecodeSteps(model)
        if model not in made:
            made[model] = DecodeSteps(model, mode, max_buckets=3, compiler=lambda fn, **kw: fn)
        return made[model]

    monkeypatch.setattr(sampler_mod, "decode_steps", make)
    return made


@pytest.mark.parametrize("case", [
    dict(token_draw="inverse-cdf"),
    dict(token_draw="multinomial", top_k=7, top_p=0.9, temperature=1.3),
    dict(token_draw="inverse-cdf", guidance_interval=(0.2, 0.7), attention="causal"),
    dict(token_draw="inverse-cdf", refine_rounds=2, refine_fraction=0.25, cfg_scale=1.0),
])
def test_generate_static_equals_eager(any_tiny_model, eager_static, case):
    model = any_tiny_model
    seed = random.randrange(10**6)
    labels = torch.randint(0, model.config.num_classes, (3,))
    kw = dict(steps=6, cfg_scale=3.0, order="random")
    kw.update(case)
    a = arpg.generate(model, labels, generator=torch.Generator().manual_seed(seed), **kw)
    b = arpg.generate(model, labels, generator=torch.Generator().manual_seed(seed), compile=True, **kw)
    assert torch.equal(a, b)
    steps = eager_static[model]
    assert len(steps.buckets) <= 3 and len(steps.seen) >= 2  # static shapes ran (uncompiled)


def test_generate_static_prefill_and_control(eager_static):
    torch.manual_seed(0)
    m = arpg.ARPG.from_preset("ARPG-tiny", condition_channels=1, condition_stride=2, condition_kind="canny")
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    m.eval()
    cfg = m.config
    seed = random.randrange(10**6)
    B = 2
    known = torch.rand(B, cfg.n_cells) < 0.4
    codes = torch.randint(0, cfg.vocab_size, (B, cfg.n_cells))
    cond = (torch.rand(B, 1, cfg.condition_side, cfg.condition_side) > 0.5).float()
    kw = dict(steps=4, cfg_scale=2.5, known_codes=codes, known_mask=known, condition=cond,
              condition_guidance="drop", token_draw="inverse-cdf")
    a = arpg.generate(m, [1, 2], generator=torch.Generator().manual_seed(seed), **kw)
    b = arpg.generate(m, [1, 2], generator=torch.Generator().manual_seed(seed), compile=True, **kw)
    assert torch.equal(a, b) and torch.equal(a[known], codes[known])


def test_compile_refusals(tiny_model):
    with pytest.raises(ARPGError, match="compile must be one of"):
        arpg.generate(tiny_model, [0], compile="yes")
    with pytest.raises(ARPGError, match="autocast"):
        arpg.generate(tiny_model, [0], compile=True, dtype=torch.bfloat16, autocast=True)
    assert compile_report(tiny_model) == {"graphs": 0, "compile_seconds": 0.0}


def test_frozen_refuses_a_graph_the_free_memory_cannot_hold(tiny_model, monkeypatch):
    weights = sum(p.numel() * p.element_size() for p in tiny_model.parameters())
    monkeypatch.setattr(steps_mod, "available_memory", lambda device: weights - 1)
    with pytest.raises(ARPGError, match=r'compile="frozen" keeps a packed weight copy.*use compile=True'):
        arpg.generate(tiny_model, [0], steps=2, compile="frozen")
    assert compile_report(tiny_model)["graphs"] == 0  # refused before any compile work


def test_frozen_steps_rebuilt_when_weights_change(tiny_model):
    a = decode_steps(tiny_model, "frozen")
    assert decode_steps(tiny_model, "frozen") is a and decode_steps(tiny_model, True) is not a
    b = decode_steps(tiny_model, True)
    assert decode_steps(tiny_model, True) is b  # kept across calls
    a = decode_steps(tiny_model, "frozen")
    with torch.no_grad():
        tiny_model.head.weight.add_(1.0)  # an in-place update bumps the version
    assert decode_steps(tiny_model, "frozen") is not a


@pytest.mark.slow
@pytest.mark.parametrize("mode,packed", [(True, False), (True, True), ("frozen", False)])
def test_compiled_equals_eager_without_recompiles(tiny_model, mode, packed, monkeypatch):
    """torch.compile for real: same tokens as eager, and a second call builds no graph at all (also when the
    default packs the model for each call: the same packed modules come back)."""
    import torch._dynamo.utils as dyn_utils

    monkeypatch.setattr(arpg.sampling.runtime, "PACK_MIN_DIM", 0 if packed else 10**9)
    model = tiny_model
    labels = torch.randint(0, model.config.num_classes, (2,))
    kw = dict(steps=4, cfg_scale=2.0, step_schedule="linear", token_draw="inverse-cdf")
    seed = random.randrange(10**6)
    a = arpg.generate(model, labels, generator=torch.Generator().manual_seed(seed), **kw)
    b = arpg.generate(model, labels, generator=torch.Generator().manual_seed(seed), compile=mode, **kw)
    assert torch.equal(a, b) if not packed else (a == b).float().mean() > 0.9  # packed: float rounding
    report = compile_report(model)
    assert report["graphs"] >= 2 and report["compile_seconds"] > 0
    before = dyn_utils.counters["stats"]["unique_graphs"]
    c = arpg.generate(model, labels, generator=torch.Generator().manual_seed(seed), compile=mode, **kw)
    assert torch.equal(b, c)
    assert dyn_utils.counters["stats"]["unique_graphs"] == before  # no recompiles across steps or calls
    assert compile_report(model) == report


@pytest.mark.slow
def test_cli_sample_compile_writes_the_same_images(tmp_path):
    """arpg sample --compile: same PNGs as eager (inverse-CDF draw), compile time in sample.json."""
    import json

    from arpg.cli import main

    common = ["--num", "2", "--steps", "4", "--token-draw", "inverse-cdf", "--seed", str(random.randrange(1000))]
    assert main(["sample", "--out", str(tmp_path / "eager"), *common]) == 0
    assert main(["sample", "--out", str(tmp_path / "comp"), "--compile", *common]) == 0
    record = json.loads((tmp_path / "comp" / "sample.json").read_text())
    assert record["compile"]["mode"] == "on" and record["compile"]["graphs"] > 0
    assert record["compile"]["compile_seconds"] > 0
    for name in record["files"]:
        assert (tmp_path / "comp" / name).read_bytes() == (tmp_path / "eager" / name).read_bytes()


@pytest.mark.slow
def test_frozen_and_plain_steps_never_share_graphs(tiny_model):
    """torch.compile caches per code object; each DecodeSteps must still build (and run) its own graphs."""
    import torch._dynamo.utils as dyn_utils

    labels = torch.randint(0, tiny_model.config.num_classes, (2,))
    kw = dict(steps=2, cfg_scale=1.0, step_schedule="linear", token_draw="inverse-cdf")
    arpg.generate(tiny_model, labels, compile=True, **kw)
    before = dyn_utils.counters["stats"]["unique_graphs"]
    arpg.generate(tiny_model, labels, compile="frozen", **kw)
    assert dyn_utils.counters["stats"]["unique_graphs"] > before


def test_generate_static_equals_eager_for_a_text_model(eager_static):
    """A prompt prefix (padded slots masked in every step) through the static shapes: the eager tokens."""
    torch.manual_seed(random.randrange(10**6))
    m = arpg.ARPG.from_preset("ARPG-tiny-T2I")
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    m.eval()
    cfg = m.config
    text = torch.randn(3, cfg.text_len, cfg.text_dim)
    mask = torch.ones(3, cfg.text_len, dtype=torch.bool)
    mask[0, :3] = False
    mask[2, :1] = False
    seed = random.randrange(10**6)
    kw = dict(text=text, text_mask=mask, steps=5, cfg_scale=2.5, token_draw="inverse-cdf")
    a = arpg.generate(m, generator=torch.Generator().manual_seed(seed), **kw)
    b = arpg.generate(m, generator=torch.Generator().manual_seed(seed), compile=True, **kw)
    assert torch.equal(a, b)


@pytest.mark.slow
def test_compiled_calls_alternating_packed_and_plain_weights(tiny_model, monkeypatch):
    """One model's compiled steps see packed Linears in one call and plain ones in the next (the default packs,
    pack_weights=False does not): each layout gets its graphs, and neither call fails or falls back."""
    monkeypatch.setattr(arpg.sampling.runtime, "PACK_MIN_DIM", 0)
    labels = torch.randint(0, tiny_model.config.num_classes, (2,))
    kw = dict(steps=3, cfg_scale=2.0, step_schedule="linear", token_draw="inverse-cdf", compile=True)
    seed = random.randrange(10**6)
    runs = [arpg.generate(tiny_model, labels, generator=torch.Generator().manual_seed(seed), pack_weights=p, **kw)
            for p in (None, False, None, False)]
    assert torch.equal(runs[0], runs[2]) and torch.equal(runs[1], runs[3])
