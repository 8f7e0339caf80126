"""The chunked head + cross-entropy: the same loss and gradients as the plain formula, in training too."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arpg import ARPG
from arpg.errors import ARPGError
from arpg.model.loss import head_cross_entropy


def _inputs(N: int, d: int = 32, V: int = 300):
    g = torch.Generator().manual_seed(random.randrange(10**6))
    h = torch.randn(N, d, generator=g).requires_grad_()
    w = (torch.randn(V, d, generator=g) * 0.2).requires_grad_()
    return h, w, torch.randint(0, V, (N,), generator=g)


def _grads(loss_fn, h, w):
    h.grad = w.grad = None
    loss = loss_fn()
    (loss * 2.5).backward()  # an outer factor, as gradient accumulation gives
    return loss.detach(), h.grad.clone(), w.grad.clone()


@pytest.mark.parametrize("chunk", [1, 7, 64, 257, 1000])
def test_chunked_equals_plain_in_fp32(chunk):
    h, w, t = _inputs(257)
    plain = _grads(lambda: F.cross_entropy(F.linear(h, w).float(), t), h, w)
    chunked = _grads(lambda: head_cross_entropy(h, w, t, chunk), h, w)
    for a, b in zip(plain, chunked):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_zero_chunk_is_the_plain_formula_and_no_grad_skips_gradients():
    h, w, t = _inputs(40)
    assert torch.equal(head_cross_entropy(h, w, t, 0), F.cross_entropy(F.linear(h, w).float(), t))
    with torch.no_grad():
        torch.testing.assert_close(head_cross_entropy(h, w, t, 8), F.cross_entropy(F.linear(h, w), t))


def test_bf16_autocast_matches_the_plain_formula_under_autocast():
    h, w, t = _inputs(96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = _grads(lambda: F.cross_entropy(F.linear(h, w).float(), t), h, w)
        chunked = _grads(lambda: head_cross_entropy(h, w, t, 32), h, w)
    torch.testing.assert_close(plain[0], chunked[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(plain[1:], chunked[1:]):  # bf16 matmuls: the head's gradient is summed in fp32 here
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("chunk", [-1, 1.5, True])
def test_bad_chunk_is_one_line(chunk):
    h, w, t = _inputs(4)
    with pytest.raises(ARPGError, match="loss chunk must be a non-negative number of rows"):
        head_cross_entropy(h, w, t, chunk)


def _model_loss_and_grads(model, batch, **kw):
    model.zero_grad()
    torch.manual_seed(5)  # the same dropout masks in every variant
    loss = model(*batch, return_loss=True, **kw)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.fixture
def training_model_and_batch():
    torch.manual_seed(random.randrange(10**6))
    model = ARPG.from_preset("ARPG-tiny", resid_dropout=0.1, ffn_dropout=0.1, class_dropout=0.3).train()
    torch.nn.init.normal_(model.head.weight, std=0.2)
    B, n = 6, model.config.n_cells
    tokens = torch.randint(0, model.config.vocab_size, (B, n))
    labels = torch.randint(0, model.config.num_classes, (B,))
    orders = torch.stack([torch.randperm(n) for _ in range(B)])
    drop = torch.rand(B) < 0.5  # class dropout: some rows take the null class
    return model, (tokens, labels, orders), dict(drop_labels=drop)


@pytest.mark.parametrize("chunk", [5, 64, 10_000])
def test_model_loss_and_gradients_equal_with_and_without_chunks(training_model_and_batch, chunk):
    model, batch, kw = training_model_and_batch
    plain = _model_loss_and_grads(model, batch, loss_chunk=0, **kw)
    chunked = _model_loss_and_grads(model, batch, loss_chunk=chunk, **kw)
    torch.testing.assert_close(plain[0], chunked[0], rtol=1e-6, atol=1e-6)
    assert plain[1].keys() == chunked[1].keys()
    for k in plain[1]:
        torch.testing.assert_close(plain[1][k], chunked[1][k], rtol=1e-4, atol=1e-6, msg=k)


def test_grad_checkpoint_gives_the_same_gradients(training_model_and_batch):
    model, batch, kw = training_model_and_batch
    plain = _model_loss_and_grads(model, batch, **kw)
    ckpt = _model_loss_and_grads(model, batch, grad_checkpoint=True, **kw)
    assert torch.equal(plain[0], ckpt[0])  # the same dropout masks replayed in the recomputation
    for k in plain[1]:
        torch.testing.assert_close(plain[1][k], ckpt[1][k], rtol=1e-5, atol=1e-7, msg=k)


def test_training_runs_are_identical_with_and_without_chunks(tmp_path):
    from arpg.data.codes import write_code_set
    from arpg.train.config import TrainConfig
    from arpg.train.trainer import train

    rng = np.random.default_rng(random.randrange(10**6))
    write_code_set(tmp_path / "codes", rng.integers(0, 16, (24, 2, 16)), rng.integers(0, 4, 24), vocab_size=16,
                   class_names=list("abcd"), shard_size=12)
    runs = {}
    for name, kw in (("plain", dict(loss_chunk=0)), ("chunked", dict(loss_chunk=7)),
                     ("checkpointed", dict(loss_chunk=7, grad_checkpoint=True))):
        cfg = TrainConfig(codes=str(tmp_path / "codes"), out=str(tmp_path / name), preset="ARPG-nano", batch_size=8,
                          steps=4, lr=0.05, warmup=0.25, progress=False, seed=2, save_every=100,
                          overrides={"resid_dropout": 0.1, "class_dropout": 0.2}, **kw)
        runs[name] = train(cfg).losses
    assert runs["plain"].keys() == runs["chunked"].keys() == set(range(1, 5))
    for step, loss in runs["plain"].items():
        assert runs["chunked"][step] == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert runs["checkpointed"][step] == pytest.approx(loss, rel=1e-5, abs=1e-6)


def test_published_formula_gives_the_model_loss_and_gradients(training_model_and_batch):
    """The yardstick of benchmarks/train_step.py computes what the model computes (eval mode: no dropout)."""
    from arpg.train.reference import reference_loss

    model, batch, kw = training_model_and_batch
    model.eval()
    ours = _model_loss_and_grads(model, batch, **kw)
    model.zero_grad()
    ref = reference_loss(model, *batch, **kw)
    ref.backward()
    torch.testing.assert_close(ours[0], ref.detach(), rtol=1e-5, atol=1e-6)
    for k, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(ours[1][k], p.grad, rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("autocast", [False, True])
def test_lean_training_functions_give_the_formula(autocast):
    """norm_linears, norm_swiglu and heads_linear: the values and gradients of the plain modules."""
    from arpg.model.blocks import FeedForward, RMSNorm
    from arpg.model.lean_training import heads_linear, norm_linears, norm_swiglu

    torch.manual_seed(random.randrange(10**6))
    norm, ffn = RMSNorm(16), FeedForward(16, 40, 0.0)
    lins = [torch.nn.Linear(16, 16, bias=False) for _ in range(3)]
    torch.nn.init.normal_(norm.weight, 1.0, 0.2)
    x = torch.randn(3, 10, 16).requires_grad_()
    y = torch.randn(3, 4, 10, 4).requires_grad_()  # heads [B, H, T, D]
    params = [x, y, norm.weight, *ffn.parameters(), *(m.weight for m in lins)]
    ups = [torch.randn(3, 10, 16) for _ in range(5)]

    def plain():
        xn = norm(x)
        return [*(m(xn) for m in lins), ffn(norm(x)), lins[0](y.transpose(1, 2).reshape(3, 10, 16))]

    def lean():
        return [*norm_linears(x, norm, lins), norm_swiglu(x, norm, ffn), heads_linear(y, lins[0])]

    results = []
    for fn in (plain, lean):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outs = fn()
        results.append((outs, torch.autograd.grad(outs, params, ups)))
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][0] + list(results[0][1]), results[1][0] + list(results[1][1])):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


def _nano_batch():
    torch.manual_seed(random.randrange(10**6))
    m = ARPG.from_preset("ARPG-nano").train()
    B, n = 4, m.config.n_cells
    batch = (torch.randint(0, 16, (B, n)), torch.randint(0, 4, (B,)), torch.stack([torch.randperm(n) for _ in range(B)]))
    return m, batch, torch.rand(B) < 0.3


def test_the_training_forward_traces_as_one_graph():
    """The chunked loss and the lean autograd functions give torch.compile no graph break."""
    m, batch, drop = _nano_batch()
    found = torch._dynamo.explain(lambda *b: m(*b, drop_labels=drop, return_loss=True, loss_chunk=8))(*batch)
    assert found.graph_count == 1 and found.graph_break_count == 0, [b.reason for b in found.break_reasons]


@pytest.mark.slow
def test_compiled_training_step_equals_eager():
    m, batch, drop = _nano_batch()
    step = lambda: m(*batch, drop_labels=drop, return_loss=True, loss_chunk=8)  # noqa: E731
    torch.manual_seed(1)
    compiled = torch.compile(step, fullgraph=True)()
    compiled.backward()
    grads = {k: p.grad.clone() for k, p in m.named_parameters()}
    m.zero_grad()
    torch.manual_seed(1)
    eager = step()
    eager.backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for k, p in m.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)
