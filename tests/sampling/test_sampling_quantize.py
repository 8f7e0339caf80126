"""int8 weight-only sampling: close to fp32, the original model untouched, clear refusals."""

import pytest
import torch

from arpg import ARPG, ARPGError, generate
from arpg.sampling import quantize_int8


def _model():
    torch.manual_seed(int(torch.randint(0, 10_000, ())))
    m = ARPG.from_preset("ARPG-tiny").eval()
    torch.nn.init.normal_(m.head.weight, std=0.05)
    return m


def test_int8_logits_are_close_and_the_original_is_untouched():
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    q = quantize_int8(m)
    n = m.config.n_cells
    tokens = torch.randint(0, m.config.vocab_size, (3, n))
    labels = torch.randint(0, m.config.num_classes, (3,))
    orders = torch.stack([torch.randperm(n) for _ in range(3)])
    with torch.no_grad():
        ref, got = m(tokens, labels, orders), q(tokens, labels, orders)
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.05, float(rel)  # int8 weights: a few percent, not a different model
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert any(type(mod).__module__.startswith("torch.ao.nn.quantized") for mod in q.modules())
    out = generate(q, labels, steps=4)
    assert out.shape == (3, n) and int(out.min()) >= 0 and int(out.max()) < m.config.vocab_size


def test_int8_refusals():
    q = quantize_int8(_model())
    with pytest.raises(ARPGError, match="float32"):
        generate(q, [0], steps=2, dtype=torch.bfloat16)
    with pytest.raises(ARPGError, match="starts from float32"):
        quantize_int8(_model().to(torch.bfloat16))
