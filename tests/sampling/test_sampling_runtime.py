"""The runtime value: every combination rule in one validate(), and the default rule (fast, one copy of the
weights, the model unchanged after the call)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import arpg
from arpg import speedups
from arpg.errors import ARPGError
from arpg.sampling import runtime
from arpg.sampling.runtime import Runtime, packed_for_call, resolve_runtime
from arpg.util import devices

needs_onednn = pytest.mark.skipif(speedups.packing_available(torch.float32) is not None, reason="no oneDNN")


@pytest.mark.parametrize("kw,api,cli", [
    (dict(compile="bogus"), "compile must be one of", "compile must be one of"),
    (dict(int8=True, dtype=torch.bfloat16), "an int8-weight model computes in float32", "--int8 computes in float32"),
    (dict(compile=True, int8=True), "compile=True does not take int8 weights", "--compile does not take --int8"),
    (dict(compile=True, autocast=True, dtype=torch.bfloat16), "not autocast", "not autocast"),
    (dict(pack_weights=True, autocast=True), "pack_weights runs the weights' own dtype", "not autocast"),
    (dict(pack_weights=True, compile="frozen"), 'pack_weights does not take compile="frozen"',
     "--pack-weights does not take --compile frozen"),
    (dict(pack_weights=True, int8=True), "pack_weights does not take int8 weights", "--pack-weights does not take --int8"),
    (dict(pack_weights=True, dtype=torch.float16), "float32 or bfloat16, not float16", "float32 or bfloat16, not float16"),
])
def test_every_combination_rule_in_one_validate(kw, api, cli):
    with pytest.raises(ARPGError, match=api.replace("(", r"\(")):
        Runtime(**kw).validate()
    with pytest.raises(ARPGError, match=cli):
        Runtime(**kw).validate(flags=True)


def test_good_combinations_pass():
    for kw in (dict(), dict(compile=True, pack_weights=True), dict(compile="frozen"), dict(int8=True),
               dict(dtype=torch.bfloat16, autocast=True), dict(pack_weights=True, dtype=torch.bfloat16)):
        assert Runtime(**kw).validate() == Runtime(**kw)


@pytest.fixture(autouse=True)
def _pack_tiny_models(monkeypatch):
    """The default packs models of a useful width; these tests exercise it on tiny ones."""
    monkeypatch.setattr(runtime, "PACK_MIN_DIM", 0)


@needs_onednn
def test_narrow_models_are_not_packed_by_default(tiny_model, monkeypatch):
    monkeypatch.setattr(runtime, "PACK_MIN_DIM", tiny_model.config.dim + 1)
    assert not resolve_runtime(tiny_model).pack_weights
    assert resolve_runtime(tiny_model, pack_weights=True).pack_weights  # asked for: still packed


@needs_onednn
@pytest.mark.parametrize("native", [False, True])
def test_default_rule(tiny_model, monkeypatch, native):
    monkeypatch.setattr(devices, "cpu_has_native", (lambda d: True) if native else (lambda d: d == torch.float32))
    rt = resolve_runtime(tiny_model)
    assert rt.pack_weights and rt.packed_for_call and not rt.compile  # fp32 on a CPU: packed for the call
    assert not resolve_runtime(tiny_model, pack_weights=False).pack_weights  # explicit wins
    assert not resolve_runtime(tiny_model, dtype=torch.bfloat16, autocast=True).pack_weights
    assert not resolve_runtime(tiny_model, compile="frozen").pack_weights
    bf16 = resolve_runtime(tiny_model, dtype=torch.bfloat16)  # a bf16 copy: packed in place, only where native
    assert bf16.pack_weights == native and not bf16.packed_for_call
    speedups.pack_weights(tiny_model)  # packed by the user: used as it is, and left packed
    rt = resolve_runtime(tiny_model)
    assert rt.pack_weights and not rt.packed_for_call
    with pytest.raises(ARPGError, match="packed for CPU sampling.*unpack_weights"):
        resolve_runtime(tiny_model, pack_weights=False)
    speedups.unpack_weights(tiny_model)


@needs_onednn
def test_fused_models_are_not_packed(tiny_model):
    speedups.fuse_projections(tiny_model)
    assert not resolve_runtime(tiny_model).pack_weights  # the user fused it (for a GPU): left as it is
    with pytest.raises(ARPGError, match="unfused models: call arpg.speedups.unfuse_projections"):
        resolve_runtime(tiny_model, pack_weights=True)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@needs_onednn
def test_default_call_leaves_the_model_as_it_was_and_equals_the_options_it_chose(tiny_model):
    before = _state(tiny_model)
    modules, params = list(tiny_model.modules()), list(tiny_model.parameters())
    labels = torch.randint(0, tiny_model.config.num_classes, (3,))
    seed = random.randrange(10**6)
    got = arpg.generate(tiny_model, labels, steps=4, cfg_scale=2.0, generator=torch.Generator().manual_seed(seed))
    after = tiny_model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not speedups.is_packed(tiny_model)
    # the very same modules and parameter objects are back (an optimizer holding them stays valid)
    assert all(a is b for a, b in zip(modules, tiny_model.modules())) and len(modules) == len(list(tiny_model.modules()))
    assert all(a is b for a, b in zip(params, tiny_model.parameters()))
    assert not any(p.is_inference() for p in tiny_model.parameters())
    chosen = arpg.generate(tiny_model, labels, steps=4, cfg_scale=2.0, pack_weights=True, token_draw="inverse-cdf",
                           generator=torch.Generator().manual_seed(seed))
    assert torch.equal(got, chosen)
    # ... and it trains and moves as before
    tiny_model.train()
    tokens = torch.randint(0, tiny_model.config.vocab_size, (2, tiny_model.config.n_cells))
    tiny_model(tokens, labels[:2], return_loss=True).backward()
    assert all(p.grad is not None for p in tiny_model.layers.parameters())
    assert torch.equal(tiny_model.to(torch.float64).head.weight.float(), before["head.weight"])


@needs_onednn
def test_nested_calls_share_one_packing(tiny_model):
    with packed_for_call(tiny_model):
        assert speedups.is_packed(tiny_model)
        with packed_for_call(tiny_model):
            assert speedups.is_packed(tiny_model)
        assert speedups.is_packed(tiny_model)  # the outer call still holds it
    assert not speedups.is_packed(tiny_model)


def test_trainer_preview_sampling_changes_nothing_in_the_run(tmp_path):
    """The trainer samples preview grids from the model it trains (the default runtime packs it for the call):
    the losses are those of a run without previews."""
    from arpg.data.codes import write_code_set
    from arpg.train.config import TrainConfig
    from arpg.train.trainer import train

    rng = np.random.default_rng(random.randrange(10**6))
    write_code_set(tmp_path / "codes", rng.integers(0, 16, (16, 1, 16)), rng.integers(0, 4, 16), vocab_size=16,
                   class_names=list("abcd"), shard_size=16)
    losses = {}
    for every in (0, 2):
        cfg = TrainConfig(codes=str(tmp_path / "codes"), out=str(tmp_path / f"run{every}"), preset="ARPG-nano",
                          batch_size=4, steps=4, lr=0.05, progress=False, seed=1, sample_every=every, sample_count=4,
                          sample_steps=4, save_every=100)
        losses[every] = train(cfg).losses
    assert losses[0] == losses[2]


@needs_onednn
def test_pack_once_packs_where_each_call_would(tiny_model):
    """A process that samples one model many times packs it once; later calls find it packed and leave it so."""
    assert not runtime.pack_once(tiny_model, dtype=torch.float16)  # a call with a copy would not pack the model
    assert not runtime.pack_once(tiny_model, pack_weights=False)
    assert runtime.pack_once(tiny_model) and speedups.is_packed(tiny_model)
    assert not resolve_runtime(tiny_model).packed_for_call
    arpg.generate(tiny_model, [1, 2], steps=2)
    assert speedups.is_packed(tiny_model)
