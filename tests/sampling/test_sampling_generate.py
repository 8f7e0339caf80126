import pytest
import torch

import arpg.sampling.resources as resources_mod
from arpg import ARPGError, generate
from arpg.sampling.guidance import filter_logits
from arpg.sampling.orders import make_orders
from arpg.sampling.reference import reference_generate
from conftest import record_pass2_logits


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_causal_one_token_per_step_equals_teacher_forcing(any_tiny_model, monkeypatch):
    tiny_model = any_tiny_model
    seen = record_pass2_logits(monkeypatch, tiny_model)
    labels = torch.tensor([3, 7])
    orders = make_orders("random", 2, 8, generator=_gen(1))
    codes = generate(tiny_model, labels, steps=64, order=orders, attention="causal", generator=_gen(2))
    got = torch.cat(seen, dim=1)  # [B, 64, V] in decoding order
    ref = tiny_model(codes, labels, orders)
    assert (got - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("cfg_scale,steps", [(1.0, 8), (4.0, 12)])
def test_block_mode_matches_concat_cache_reference(any_tiny_model, cfg_scale, steps):
    tiny_model = any_tiny_model
    labels = torch.tensor([0, 5, 9])
    order = torch.randperm(64, generator=_gen(3))
    kw = dict(steps=steps, cfg_scale=cfg_scale, cfg_schedule="linear", step_schedule="arccos", temperature=1.0)
    ours = generate(tiny_model, labels, order=order, attention="block", generator=_gen(4), token_draw="multinomial",
                    **kw)
    ref = reference_generate(tiny_model, labels, order, generator=_gen(4), **kw)
    assert torch.equal(ours, ref)


def test_reproducible_and_seed_sensitive(tiny_model):
    labels = torch.tensor([1, 2, 3, 4])
    a = generate(tiny_model, labels, steps=8, cfg_scale=2.0, generator=_gen(10))
    b = generate(tiny_model, labels, steps=8, cfg_scale=2.0, generator=_gen(10))
    c = generate(tiny_model, labels, steps=8, cfg_scale=2.0, generator=_gen(11))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 64) and a.dtype == torch.long and 0 <= int(a.min()) and int(a.max()) < 64


def test_random_order_is_per_sample(tiny_model):
    labels = torch.tensor([2, 2, 2])
    a = generate(tiny_model, labels, steps=4, generator=_gen(5))
    orders = make_orders("random", 3, 8, generator=_gen(5))
    assert len({tuple(r.tolist()) for r in orders}) == 3
    g = _gen(5)
    make_orders("random", 3, 8, generator=g)  # consume the same draws as generate does
    b = generate(tiny_model, labels, steps=4, order=orders, generator=g)
    assert torch.equal(a, b)


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.1, 0.6, 0.25, 0.0]])
    logits = probs.clamp_min(1e-12).log()
    kept = filter_logits(logits, top_p=0.8).isfinite()
    assert kept[0].tolist() == [True, True, True, False, False]  # 0.5 + 0.2 = 0.7 < 0.8, + 0.15 reaches it
    assert kept[1].tolist() == [False, False, True, True, False]  # 0.6 + 0.25 >= 0.8
    assert filter_logits(logits, top_p=0.5).isfinite()[0].tolist() == [True, False, False, False, False]
    assert filter_logits(logits, top_k=2).isfinite().sum(dim=1).tolist() == [2, 2]


def test_prefilled_cells_unchanged_and_only_unknown_decoded(tiny_model, monkeypatch):
    calls = []
    original = tiny_model.pass2
    monkeypatch.setattr(tiny_model, "pass2", lambda cells, *a, **k: calls.append(cells.clone()) or original(cells, *a, **k))
    B, k = 3, 5
    known_codes = torch.randint(0, 64, (B, 64))
    mask = torch.ones(B, 64, dtype=torch.bool)
    for row in range(B):
        mask[row, torch.randperm(64)[:k]] = False
    out = generate(tiny_model, torch.tensor([1, 2, 3]), steps=3, known_codes=known_codes, known_mask=mask,
                   cfg_scale=3.0, generator=_gen(6))
    assert torch.equal(out[mask], known_codes[mask])
    queried = torch.cat(calls, dim=1)[:B]  # conditional half
    assert queried.shape[1] == k
    for row in range(B):
        assert sorted(queried[row].tolist()) == sorted((~mask[row]).nonzero().squeeze(1).tolist())


def test_prefill_groups_rows_with_different_known_counts(tiny_model):
    known_codes = torch.randint(0, 64, (2, 64))
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, :32] = True
    mask[1, :10] = True
    out = generate(tiny_model, torch.tensor([4, 5]), steps=4, known_codes=known_codes, known_mask=mask,
                   generator=_gen(7))
    assert torch.equal(out[mask], known_codes[mask])


def test_batch_split_matches_shapes(tiny_model):
    out = generate(tiny_model, torch.arange(10) % 10, steps=4, batch_size=4, generator=_gen(8))
    assert out.shape == (10, 64)


def test_bf16_autocast_runs(tiny_model):
    out = generate(tiny_model, torch.tensor([1, 2]), steps=4, cfg_scale=2.0, dtype=torch.bfloat16, generator=_gen(9))
    assert out.shape == (2, 64)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(labels=[10]), "labels must be in 0..9"),
    (dict(labels=[-1]), "labels must be in 0..9"),
    (dict(steps=0), "steps must be"),
    (dict(steps=65), "steps must be an integer in 1..64"),
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(order=[0] * 64), "permutation"),
    (dict(attention="sparse"), "attention must be"),
    (dict(known_codes=torch.zeros(1, 10, dtype=torch.long), known_mask=torch.zeros(1, 10, dtype=torch.bool)),
     "must be shaped"),
    (dict(known_codes=torch.zeros(1, 64, dtype=torch.long), known_mask=torch.ones(1, 64, dtype=torch.bool)),
     "nothing to decode"),
])
def test_bad_input_one_line_errors(tiny_model, kwargs, msg):
    args = dict(labels=[1], steps=4)
    args.update(kwargs)
    labels = args.pop("labels")
    with pytest.raises(ARPGError, match=msg) as e:
        generate(tiny_model, labels, **args)
    assert "\n" not in str(e.value)


def test_generate_without_settings_uses_the_models_recommended_ones(tiny_model):
    """No argument given == the recommended settings given explicitly (same draws, same codes)."""
    from arpg.sampling import SamplingConfig, recommended_sampling, resolve_sampling

    tiny_model.sampling = SamplingConfig(steps=5, cfg_scale=2.5, cfg_schedule="constant", temperature=0.8)
    labels = torch.tensor([1, 2, 3])
    assert resolve_sampling(tiny_model) == recommended_sampling(tiny_model) == tiny_model.sampling
    a = generate(tiny_model, labels, generator=_gen(4))
    b = generate(tiny_model, labels, steps=5, cfg_scale=2.5, cfg_schedule="constant", temperature=0.8,
                 generator=_gen(4))
    c = generate(tiny_model, labels, steps=5, cfg_scale=2.5, cfg_schedule="linear", temperature=0.8,
                 generator=_gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Explicit arguments win over the model's settings.
    assert resolve_sampling(tiny_model, temperature=1.3).temperature == 1.3


def test_recommended_settings_of_presets_and_the_demo_model():
    from arpg import ARPG
    from arpg.demo.assets import demo_paths
    from arpg.sampling import get_recipe, recommended_sampling

    with torch.device("meta"):
        large = ARPG.from_preset("ARPG-L")
    assert recommended_sampling(large) == get_recipe("ARPG-L").sampling
    assert recommended_sampling(large).cfg_scale == 5.0 and recommended_sampling(large).steps == 64
    demo = arpg_load(demo_paths().model)
    assert recommended_sampling(demo) == get_recipe("demo").sampling
    assert recommended_sampling(demo).temperature == 0.65


def arpg_load(path):
    from arpg import load_model

    return load_model(path)


def test_sampling_settings_round_trip_through_the_weights_file(tiny_model, tmp_path):
    from arpg import load_model, save_model
    from arpg.sampling import SamplingConfig, recommended_sampling

    tiny_model.sampling = SamplingConfig(steps=7, cfg_scale=3.0, step_schedule="cosine", top_k=5)
    save_model(tiny_model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.sampling == tiny_model.sampling.to_dict()  # read back as stored: a plain dict
    assert recommended_sampling(loaded) == tiny_model.sampling


@pytest.mark.parametrize("kwargs,words", [
    (dict(steps=4, step_schedule=[32, 32]), "contradicts the explicit step_schedule"),
    (dict(step_schedule=[30, 30]), "must sum to the 64 cells"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=65), "steps must be an integer in 1..64"),
    (dict(temperature=float("inf")), "temperature must be a finite number"),
    (dict(cfg_scale=float("nan")), "cfg_scale must be a finite number"),
    (dict(top_p=1.5), "top_p must be in (0, 1]"),
    (dict(top_k=0), "top_k must be a positive integer"),
    (dict(order="bogus"), "order must be one of"),
    (dict(attention="bogus"), "attention must be one of"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
])
def test_generate_refuses_bad_settings(tiny_model, kwargs, words):
    with pytest.raises(ARPGError) as e:
        generate(tiny_model, [1, 2], generator=_gen(0), **kwargs)
    assert words in str(e.value)


def test_explicit_step_list_sets_steps(tiny_model):
    from arpg.sampling import resolve_sampling

    sc = resolve_sampling(tiny_model, step_schedule="32,16,16")
    assert sc.step_schedule == (32, 16, 16) and sc.steps == 3


def test_memory_check_refuses_a_batch_that_cannot_fit(tiny_model, monkeypatch):
    monkeypatch.setattr(resources_mod, "available_memory", lambda device: 10 * 2**20)  # 10 MiB free
    with pytest.raises(ARPGError, match="use a batch size of at most"):
        generate(tiny_model, torch.arange(4000) % 10, generator=_gen(0), steps=8)
    generate(tiny_model, torch.arange(4) % 10, generator=_gen(0), steps=8)  # a small one still runs


def test_low_precision_generation_converts_the_weights_once(tiny_model):
    """dtype=bf16 on a float32 model runs a bf16 copy of the parameters (made once, refreshed when a weight
    changes), with the same draws as a model converted by hand; the model's own state is untouched."""
    from arpg.sampling.resources import cast_weights

    keys = list(tiny_model.state_dict())
    a = generate(tiny_model, [1, 2], steps=8, cfg_scale=2.0, dtype=torch.bfloat16, generator=_gen(3))
    twin = cast_weights(tiny_model, torch.bfloat16)
    assert cast_weights(tiny_model, torch.bfloat16) is twin  # cached
    assert twin.head.weight.dtype == torch.bfloat16 and twin.rope.dtype == torch.float32
    assert tiny_model.head.weight.dtype == torch.float32 and list(tiny_model.state_dict()) == keys
    import copy

    by_hand = copy.deepcopy(tiny_model)
    by_hand.__dict__.pop("_cast_weights", None)
    for p in by_hand.parameters():
        p.data = p.data.to(torch.bfloat16)
    assert torch.equal(a, generate(by_hand, [1, 2], steps=8, cfg_scale=2.0, generator=_gen(3)))
    with torch.no_grad():
        tiny_model.head.weight.mul_(1.5)  # training or editing the weights invalidates the copy
    assert cast_weights(tiny_model, torch.bfloat16) is not twin


def test_on_step_reports_each_step_and_refinement_round_and_changes_nothing(tiny_model):
    calls = []
    labels = torch.randint(0, tiny_model.config.num_classes, (3,))
    seed = int(torch.randint(0, 10_000, ()))
    out = generate(tiny_model, labels, steps=5, refine_rounds=2, generator=_gen(seed),
                   on_step=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 7) for i in range(1, 8)]
    assert torch.equal(out, generate(tiny_model, labels, steps=5, refine_rounds=2, generator=_gen(seed)))
