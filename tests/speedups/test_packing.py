"""oneDNN-packed Linears as module swaps: same values, one copy of the weights, published state_dict, undone exactly,
one-line refusals, and generate(pack_weights=...) gives the tokens unpacked decoding gives."""

import random

import pytest
import torch
import torch.nn as nn

import arpg
from arpg.errors import ARPGError
from arpg.model import random_orders
from arpg.speedups import PackedLinear, is_packed, pack_weights, packing_available, unpack_weights
from arpg.speedups.packing import decoding_linears

pytestmark = pytest.mark.skipif(packing_available(torch.float32) is not None, reason="this PyTorch build has no oneDNN")


def _model() -> arpg.ARPG:
    m = arpg.ARPG.from_preset("ARPG-tiny")
    torch.manual_seed(random.randrange(10**6))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    return m.eval()


def _inputs(m, rows=3):
    n = m.config.n_cells
    return (torch.randint(0, m.config.vocab_size, (rows, n)), torch.randint(0, m.config.num_classes, (rows,)),
            random_orders(rows, n))


def _forward(m, x):
    with torch.no_grad():
        return m(*x)


def _plain_bytes(m) -> int:
    """Bytes held by the decoding Linears' own weights (a moved weight is a one-element stand-in)."""
    return sum(getattr(p, n).original.weight.untyped_storage().nbytes() if isinstance(getattr(p, n), PackedLinear)
               else getattr(p, n).weight.untyped_storage().nbytes() for p, n in decoding_linears(m))


def test_packed_holds_one_copy_computes_the_same_and_restores_exactly():
    m = _model()
    x = _inputs(m)
    want = _forward(m, x)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    linears = [getattr(p, n) for p, n in decoding_linears(m)]
    plain = _plain_bytes(m)
    pack_weights(m)
    assert is_packed(m) and all(isinstance(getattr(p, n), PackedLinear) for p, n in decoding_linears(m))
    assert _plain_bytes(m) < plain / 100  # the plain weights were moved, not copied
    torch.testing.assert_close(_forward(m, x), want, atol=1e-5, rtol=1e-5)
    sd = m.state_dict()  # published keys and exact values while packed
    assert sd.keys() == before.keys() and all(torch.equal(sd[k], before[k]) for k in sd)
    unpack_weights(m)
    assert not is_packed(m) and [getattr(p, n) for p, n in decoding_linears(m)] == linears  # same objects
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert torch.equal(_forward(m, x), want)


def test_what_cannot_run_from_packed_weights_fails_in_one_line():
    m = pack_weights(_model())
    x = _inputs(m)
    m.train()
    with pytest.raises(ARPGError, match="packed for CPU sampling.*gradient.*unpack_weights"):
        m(*x, return_loss=True)
    with pytest.raises(ARPGError, match="autocast cannot use them"), torch.autocast("cpu", dtype=torch.bfloat16):
        _forward(m.eval(), x)
    with pytest.raises(ARPGError, match="copy of the model .* cannot be made"):
        arpg.generate(m, [0], steps=2, dtype=torch.float16)
    with pytest.raises(ARPGError, match="unpack_weights"):
        arpg.fuse_projections(m)
    unpack_weights(m)
    m.train()
    m(*x, return_loss=True).backward()  # unpacked: trains again
    assert all(p.grad is not None for p in m.layers.parameters())


def test_moving_or_casting_a_packed_model_gives_the_weights_back_first():
    m = _model()
    x = _inputs(m)
    want = _forward(m.double(), x)
    m.float()
    pack_weights(m)
    assert torch.equal(_forward(m.double(), x), want)  # every weight came back out of its packed copy
    assert not is_packed(m) and m.head.weight.dtype == torch.float64
    m.float()
    pack_weights(m)  # packs again
    assert is_packed(m)
    unpack_weights(m)
    assert all(type(getattr(p, n)) is nn.Linear for p, n in decoding_linears(m))


def test_loading_a_state_dict_into_a_packed_model_repacks_the_new_values():
    m, other = pack_weights(_model()), _model()
    x = _inputs(m)
    m.load_state_dict(other.state_dict())
    torch.testing.assert_close(_forward(m, x), _forward(other, x), atol=1e-5, rtol=1e-5)
    unpack_weights(m)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), other.state_dict().values()))
    with pytest.raises(RuntimeError, match="size mismatch for head.weight"):
        pack_weights(m).load_state_dict({**other.state_dict(), "head.weight": torch.zeros(3, 3)})


def test_refusals_of_pack_weights():
    with pytest.raises(ARPGError, match="float32 or bfloat16, not float16"):
        pack_weights(_model().half())
    with pytest.raises(ARPGError, match=r"fused \(.*unfuse_projections"):
        pack_weights(arpg.fuse_projections(_model()))
    lin = nn.Linear(4, 4)
    with pytest.raises(ARPGError, match="bias-free"):
        PackedLinear(lin)


def test_generate_with_packed_weights_gives_the_same_tokens_and_a_hand_packed_model_stays_packed():
    m = _model()
    labels = torch.randint(0, m.config.num_classes, (3,))
    seed = random.randrange(10**6)
    kw = dict(steps=5, cfg_scale=3.0, token_draw="inverse-cdf")
    a = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), pack_weights=False, **kw)
    b = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), pack_weights=True, **kw)
    assert not is_packed(m)  # packed for the call only
    pack_weights(m)
    c = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), **kw)
    assert is_packed(m)  # packed by hand: left so
    assert torch.equal(a, b) and torch.equal(b, c)


@pytest.mark.skipif(packing_available(torch.bfloat16) is not None, reason="no native bf16 on this CPU")
def test_the_bf16_copy_is_packed_and_gives_the_same_tokens():
    from arpg.sampling.resources import cast_copy_of

    m = _model()
    labels = torch.randint(0, m.config.num_classes, (2,))
    seed = random.randrange(10**6)
    kw = dict(steps=4, cfg_scale=2.0, token_draw="inverse-cdf", dtype=torch.bfloat16)
    a = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), pack_weights=False, **kw)
    b = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), pack_weights=True, **kw)
    assert is_packed(cast_copy_of(m)) and not is_packed(m)
    assert (a == b).float().mean() > 0.9  # bf16 matmuls: rounding may move a draw


def test_the_packed_matmul_traces_without_graph_breaks():
    m = pack_weights(_model())
    x = torch.randn(4, m.config.dim)
    fn = torch.compile(lambda t: m.head(t) * 2.0, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        want = 2.0 * x @ m.state_dict()["head.weight"].T
        torch.testing.assert_close(fn(x), want, atol=1e-5, rtol=1e-5)


def test_repacking_reuses_the_same_modules():
    """generate packs and unpacks the caller's model on every call: the same PackedLinear objects come back, so
    compiled graphs keep matching the model."""
    m = _model()
    first = [getattr(p, n) for p, n in decoding_linears(pack_weights(m))]
    unpack_weights(m)
    with torch.no_grad():
        m.head.weight.mul_(2.0)  # a changed weight is repacked into the same module
    second = [getattr(p, n) for p, n in decoding_linears(pack_weights(m))]
    assert all(a is b for a, b in zip(first, second))
    x = torch.randn(3, m.config.dim)
    with torch.no_grad():
        torch.testing.assert_close(m.head(x), x @ m.state_dict()["head.weight"].T, atol=1e-5, rtol=1e-5)
