"""Packed Linear weights (arpg.packing): same values as F.linear, never stale, freed with their model, and
``generate(..., pack_weights=True)`` gives the tokens unpacked decoding gives."""

import copy
import gc
import random

import pytest
import torch

import arpg
import arpg.packing as packing
import arpg.sampling.resources as resources
from arpg.errors import ARPGError
from arpg.fusion import fuse_projections
from arpg.model import random_orders
from arpg.sampling.compiled import StaticSteps, static_steps

pytestmark = pytest.mark.skipif(packing.packing_available(torch.float32) is not None,
                                reason="this PyTorch build has no oneDNN")


def _model(fused: bool) -> arpg.ARPG:
    m = arpg.ARPG.from_preset("ARPG-tiny")
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    return (fuse_projections(m) if fused else m).eval()


def _forward(m, tokens, labels, orders):
    with torch.no_grad():
        return m(tokens, labels, orders)


@pytest.mark.parametrize("fused", [False, True])
def test_packed_logits_equal_unpacked(fused):
    m = _model(fused)
    n = m.config.n_cells
    tokens = torch.randint(0, m.config.vocab_size, (3, n))
    labels = torch.randint(0, m.config.num_classes, (3,))
    orders = random_orders(3, n)
    want = _forward(m, tokens, labels, orders)
    packing.pack_weights(m)
    assert packing.packed_count(m) == len(packing._decoding_linears(m)) > 0
    got = _forward(m, tokens, labels, orders)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    packing.unpack_weights(m)
    assert packing.packed_count(m) == 0 and torch.equal(_forward(m, tokens, labels, orders), want)


def test_a_changed_weight_is_never_read_from_its_old_packed_copy():
    m = _model(fused=True)
    packing.pack_weights(m)
    x = torch.randn(5, m.config.dim)
    with torch.no_grad():
        m.head.weight.mul_(-2.0)  # in place: same storage, new version
        got = packing.project(m.head, x)
    torch.testing.assert_close(got, x @ m.head.weight.T)
    assert packing.packed_count(m) == len(packing._decoding_linears(m)) - 1
    packing.pack_weights(m)  # repacks only what changed
    assert packing.packed_count(m) == len(packing._decoding_linears(m))
    with torch.no_grad():
        torch.testing.assert_close(packing.project(m.head, x), x @ m.head.weight.T, atol=1e-5, rtol=1e-5)


def test_gradients_flow_through_a_packed_model():
    m = _model(fused=False)
    packing.pack_weights(m)
    n = m.config.n_cells
    tokens = torch.randint(0, m.config.vocab_size, (2, n))
    orders = random_orders(2, n)
    loss = m(tokens, torch.tensor([0, 1]), orders).logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and m.head.weight.grad.abs().sum() > 0


def test_packed_copies_are_freed_with_their_model_and_a_deep_copy_keeps_none():
    gc.collect()  # models of earlier tests still waiting for the collector must not drop entries below
    before = len(packing._REGISTRY)
    m = packing.pack_weights(_model(fused=True))
    n_packed = packing.packed_count(m)
    assert len(packing._REGISTRY) == before + n_packed
    twin = copy.deepcopy(m)
    assert packing.packed_count(twin) == 0  # its handles were copied, but they name the original's weights
    packing.pack_weights(twin)
    assert packing.packed_count(twin) == packing.packed_count(m) == n_packed  # packing the copy keeps m's
    del m, twin
    gc.collect()
    assert len(packing._REGISTRY) == before


def test_generate_with_packed_weights_gives_the_same_tokens():
    m = _model(fused=True)
    labels = torch.randint(0, m.config.num_classes, (3,))
    seed = random.randrange(10**6)
    kw = dict(steps=5, cfg_scale=3.0, token_draw="inverse-cdf")
    a = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), **kw)
    b = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), pack_weights=True, **kw)
    assert torch.equal(a, b) and packing.packed_count(m) > 0


def test_static_steps_are_rebuilt_when_the_packing_changes():
    m = _model(fused=True)
    a = static_steps(m, True)
    assert static_steps(m, True) is a
    packing.pack_weights(m)
    b = static_steps(m, True)
    assert b is not a and static_steps(m, True) is b
    packing.unpack_weights(m)
    assert static_steps(m, True) is not b


def test_the_custom_op_traces_without_graph_breaks():
    m = _model(fused=False)
    packing.pack_weights(m)
    x = torch.randn(4, m.config.dim)
    fn = torch.compile(lambda t: packing.project(m.head, t) * 2.0, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(fn(x), 2.0 * x @ m.head.weight.T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(autocast=True, dtype=torch.bfloat16), "not autocast"),
    (dict(compile="frozen"), 'pack_weights does not take compile="frozen"'),
])
def test_pack_weights_refusals(kwargs, match):
    with pytest.raises(ARPGError, match=match):
        arpg.generate(_model(fused=False), [0], steps=2, pack_weights=True, **kwargs)


def test_pack_weights_refuses_what_it_cannot_pack(monkeypatch):
    m = _model(fused=False)
    with pytest.raises(ARPGError, match="float32 or bfloat16, not float16"):
        packing.pack_weights(m.half())
    m = _model(fused=False)
    monkeypatch.setattr(resources, "available_memory", lambda device: packing.packed_bytes(m) - 1)
    with pytest.raises(ARPGError, match=r"pack_weights needs about .* MB .* free: leave it off"):
        arpg.generate(m, [0], steps=2, pack_weights=True)
    assert packing.packed_count(m) == 0


@pytest.mark.slow
def test_compiled_packed_equals_eager_packed_without_recompiles():
    import torch._dynamo.utils as dyn_utils

    m = _model(fused=True)
    labels = torch.randint(0, m.config.num_classes, (2,))
    seed = random.randrange(10**6)
    kw = dict(steps=4, cfg_scale=2.0, step_schedule="linear", token_draw="inverse-cdf", pack_weights=True)
    a = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), **kw)
    b = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), compile=True, **kw)
    assert torch.equal(a, b)
    steps = m.__dict__["_static_steps"]
    assert isinstance(steps, StaticSteps) and steps.pack_state == packing.pack_state(m)
    before = dyn_utils.counters["stats"]["unique_graphs"]
    c = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), compile=True, **kw)
    assert torch.equal(a, c) and dyn_utils.counters["stats"]["unique_graphs"] == before
