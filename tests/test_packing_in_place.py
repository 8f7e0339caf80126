"""Weights packed in place (arpg.packing.pack_weights(..., in_place=True)): one copy of the weights, the same
logits and tokens, real values in state_dict, exact restoration, and a one-line error wherever the stand-ins
would otherwise be computed with."""

import copy
import random

import pytest
import torch

import arpg
import arpg.packing as packing
import arpg.sampling.resources as resources
from arpg.errors import ARPGError
from arpg.fusion import check_fusions, fuse_projections, is_stand_in
from arpg.model import random_orders

pytestmark = pytest.mark.skipif(packing.packing_available(torch.float32) is not None,
                                reason="this PyTorch build has no oneDNN")


def _model(fused: bool = True) -> arpg.ARPG:
    m = arpg.ARPG.from_preset("ARPG-tiny")
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    return (fuse_projections(m) if fused else m).eval()


def _inputs(m, rows=3):
    n = m.config.n_cells
    return (torch.randint(0, m.config.vocab_size, (rows, n)), torch.randint(0, m.config.num_classes, (rows,)),
            random_orders(rows, n))


def _forward(m, inputs):
    with torch.no_grad():
        return m(*inputs)


def _decoding_bytes(m) -> int:
    return sum(w.untyped_storage().nbytes() for _, _, w in packing._decoding_linears(m))


@pytest.mark.parametrize("fused", [False, True])
def test_in_place_holds_one_copy_computes_the_same_and_restores_exactly(fused):
    m = _model(fused)
    inputs = _inputs(m)
    published = {k: v.clone() for k, v in m.state_dict().items()}
    fusions = check_fusions(m)
    copy_packed = _forward(packing.pack_weights(m), inputs)  # packed as a copy first: moving keeps those packs
    handles = packing.pack_state(m)
    plain_bytes = _decoding_bytes(m)
    packing.pack_weights(m, in_place=True)
    assert packing.is_packed_in_place(m) and packing.pack_state(m) == handles
    assert _decoding_bytes(m) < plain_bytes / 1000  # only one element per stand-in is left
    assert all(is_stand_in(w) for _, _, w in packing._decoding_linears(m))
    assert torch.equal(_forward(m, inputs), copy_packed)
    state = m.state_dict()  # the real values, unpacked on the fly, under the published names
    assert state.keys() == published.keys() and all(torch.equal(state[k], published[k]) for k in published)
    packing.unpack_weights(m)
    assert not packing.is_packed_in_place(m) and packing.packed_count(m) == 0
    assert all(torch.equal(v, published[k]) for k, v in m.state_dict().items())
    assert check_fusions(m) == fusions  # q|k|v and w1|w3 are still one tensor each
    torch.testing.assert_close(_forward(m, inputs), copy_packed, atol=1e-5, rtol=1e-5)


def test_what_cannot_run_from_packed_copies_fails_in_one_line():
    m = packing.pack_weights(_model(), in_place=True)
    tokens, labels, orders = _inputs(m, rows=2)
    with pytest.raises(ARPGError, match="packed in place .* a gradient cannot flow through them: call "
                                        r"arpg.packing.unpack_weights\(model\) first"):
        m(tokens, labels, orders)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), \
            pytest.raises(ARPGError, match="autocast cannot use them"):
        m(tokens, labels, orders)
    with pytest.raises(ARPGError, match=r"runs without them \(pack_weights=False\)"):
        arpg.generate(m, [0], steps=2, pack_weights=False)
    for dtype in (torch.bfloat16, torch.float16):  # a cast copy would be cast from the stand-ins
        with pytest.raises(ARPGError, match="a copy of the model .* cannot be made from them"):
            arpg.generate(m, [0], steps=2, dtype=dtype)
    with pytest.raises(ARPGError, match="cannot be made from them"):
        arpg.sampling.quantize.quantize_int8(m)
    twin = copy.deepcopy(m)  # its stand-ins are not the ones the packed copies were made for
    with pytest.raises(ARPGError, match="no longer matches its parameter: its values are lost"):
        twin.state_dict()
    m.head.weight.data = torch.zeros(1, dtype=torch.bfloat16).expand(m.head.weight.shape)  # changed behind its back
    with torch.no_grad(), pytest.raises(ARPGError, match="another dtype or on another device"):
        m(tokens, labels, orders)


def test_moving_or_casting_the_model_unpacks_first():
    m = _model()
    inputs = _inputs(m)
    want = _forward(m, inputs)
    packing.pack_weights(m, in_place=True)
    m.double()
    assert not packing.is_packed_in_place(m) and m.head.weight.dtype == torch.float64
    torch.testing.assert_close(_forward(m, inputs).float(), want, atol=1e-5, rtol=1e-5)


def test_loading_a_state_dict_unpacks_first_and_takes_the_new_values():
    m = packing.pack_weights(_model(), in_place=True)
    other = _model()
    inputs = _inputs(m)
    m.load_state_dict(other.state_dict())
    assert not packing.is_packed_in_place(m) and packing.packed_count(m) == 0
    torch.testing.assert_close(_forward(m, inputs), _forward(other, inputs))


def test_generate_from_weights_packed_in_place_gives_the_same_tokens_without_repacking():
    m = _model()
    labels = torch.randint(0, m.config.num_classes, (3,))
    seed = random.randrange(10**6)
    kw = dict(steps=5, cfg_scale=3.0, token_draw="inverse-cdf")
    want = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), **kw)
    packing.pack_weights(m, in_place=True)
    handles = packing.pack_state(m)
    got = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), pack_weights=True, **kw)
    assert torch.equal(got, want) and packing.pack_state(m) == handles and packing.is_packed_in_place(m)


def test_a_call_without_pack_weights_sets_an_earlier_calls_copies_aside(monkeypatch):
    m = _model()
    kw = dict(steps=3, cfg_scale=2.0)
    arpg.generate(m, [0, 1], pack_weights=True, **kw)
    packed = packing.pack_state(m)
    seen = []
    real = packing._packed_or_plain
    monkeypatch.setattr(packing, "_packed_or_plain", lambda *a: seen.append(1) or real(*a))
    arpg.generate(m, [0, 1], pack_weights=False, **kw)
    assert seen == [] and packing.pack_state(m) == packed  # F.linear ran; the copies are back afterwards
    arpg.generate(m, [0, 1], pack_weights=True, **kw)
    assert len(seen) > 0


def test_a_weight_copy_sampling_made_itself_is_packed_in_place_and_unpacked_when_plain():
    m = _model()
    own = resources.plain_copy(m)  # stands for the bf16 copy generate casts (bf16 packing needs native bf16)
    with resources.weights_for_call(own, True, own_copy=True):
        assert packing.is_packed_in_place(own)
    with resources.weights_for_call(own, False, own_copy=True):
        assert not packing.is_packed_in_place(own) and packing.packed_count(own) == 0
    with resources.weights_for_call(m, True, own_copy=False):
        assert not packing.is_packed_in_place(m) and packing.packed_count(m) > 0  # the user's: a copy


@pytest.mark.skipif(packing.packing_available(torch.bfloat16) is not None, reason="no native bf16 on this CPU")
def test_the_bf16_copy_is_packed_in_place_and_gives_the_same_tokens():
    m = _model()
    labels = torch.randint(0, m.config.num_classes, (2,))
    seed = random.randrange(10**6)
    kw = dict(steps=4, cfg_scale=2.0, dtype=torch.bfloat16, token_draw="inverse-cdf")
    plain = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), **kw)
    packed = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), pack_weights=True, **kw)
    twin = m.__dict__["_cast_weights"][1]
    assert packing.is_packed_in_place(twin) and not packing.is_packed_in_place(m)
    assert (plain != packed).float().mean() < 0.05  # bf16 rounding of the packed matmuls may flip a rare token
    again = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(again, plain) and not packing.is_packed_in_place(twin)


@pytest.mark.slow
def test_compiled_steps_from_weights_packed_in_place_equal_eager():
    m = packing.pack_weights(_model(), in_place=True)
    labels = torch.randint(0, m.config.num_classes, (2,))
    seed = random.randrange(10**6)
    kw = dict(steps=4, cfg_scale=2.0, step_schedule="linear", token_draw="inverse-cdf", pack_weights=True)
    a = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), **kw)
    b = arpg.generate(m, labels, generator=torch.Generator().manual_seed(seed), compile=True, **kw)
    assert torch.equal(a, b) and packing.is_packed_in_place(m)


def test_repacking_keeps_the_handles_so_compiled_steps_survive_it():
    from arpg.sampling.compiled import static_steps

    m = packing.pack_weights(_model())
    handles = packing.pack_state(m)
    steps = static_steps(m, True)
    packing.unpack_weights(m)
    packing.pack_weights(m, in_place=True)
    assert packing.pack_state(m) == handles and static_steps(m, True) is steps
    twin = copy.deepcopy(packing.unpack_weights(m))
    packing.pack_weights(twin)  # a copy gets handles of its own, and m's packs are untouched by them
    assert set(packing.pack_state(twin)).isdisjoint(handles)
