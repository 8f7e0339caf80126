import pytest
import torch

from arpg import ARPG, ARPGError, random_orders


def _batch(model, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (B, cfg.n_cells), generator=g)
    labels = torch.randint(0, cfg.num_classes, (B,), generator=g)
    orders = random_orders(B, cfg.n_cells, generator=g)
    return tokens, labels, orders


def test_forward_shape_and_dtype(tiny_model):
    tokens, labels, orders = _batch(tiny_model)
    logits = tiny_model(tokens, labels, orders)
    assert logits.shape == (3, 64, 64) and logits.dtype == torch.float32


def test_causality_in_both_passes(any_tiny_model):
    tiny_model = any_tiny_model
    tokens, labels, orders = _batch(tiny_model, B=2)
    ref = tiny_model(tokens, labels, orders)
    for i in (0, 7, 40, 63):
        changed = tokens.clone()
        cells = orders[:, i:]
        changed.scatter_(1, cells, torch.randint(0, 64, cells.shape))
        out = tiny_model(changed, labels, orders)
        assert torch.allclose(out[:, : i + 1], ref[:, : i + 1], atol=1e-5), i
        if i < 63:  # later positions must actually see the change
            assert not torch.allclose(out[:, i + 1:], ref[:, i + 1:], atol=1e-5)


def test_causal_in_train_mode_too(tiny_model):
    tiny_model.train()
    tokens, labels, orders = _batch(tiny_model, B=2)
    torch.manual_seed(5)
    ref = tiny_model(tokens, labels, orders)
    changed = tokens.clone()
    changed.scatter_(1, orders[:, 10:], torch.randint(0, 64, (2, 54)))
    torch.manual_seed(5)  # same class-dropout draw
    out = tiny_model(changed, labels, orders)
    assert torch.allclose(out[:, :11], ref[:, :11], atol=1e-5)


@pytest.mark.parametrize("attention", ["causal", "block"])
def test_decode_pieces_one_token_per_step_match_teacher_forcing(any_tiny_model, attention):
    tiny_model = any_tiny_model
    tokens, labels, orders = _batch(tiny_model, B=2, seed=3)
    ref = tiny_model(tokens, labels, orders)
    cache = tiny_model.new_cache(2)
    tiny_model.extend(tiny_model.class_ids(labels)[:, None], torch.full((2, 1), -1), cache, attention)
    outs = []
    for i in range(64):
        outs.append(tiny_model.query(orders[:, i:i + 1], cache))
        if i < 63:
            cell = orders[:, i:i + 1]
            tiny_model.extend(tokens.gather(1, cell), cell, cache, attention)
    got = torch.cat(outs, dim=1)
    assert (got - ref).abs().max().item() < 1e-4


def test_causal_multi_token_extend_equals_one_by_one(tiny_model):
    tokens, labels, orders = _batch(tiny_model, B=2, seed=4)
    caches = [tiny_model.new_cache(2), tiny_model.new_cache(2)]
    for c in caches:
        tiny_model.extend(tiny_model.class_ids(labels)[:, None], torch.full((2, 1), -1), c)
    cells = orders[:, :10]
    tiny_model.extend(tokens.gather(1, cells), cells, caches[0], "causal")
    for j in range(10):
        tiny_model.extend(tokens.gather(1, cells[:, j:j + 1]), cells[:, j:j + 1], caches[1], "causal")
    q = orders[:, 10:20]
    assert torch.allclose(tiny_model.query(q, caches[0]), tiny_model.query(q, caches[1]), atol=1e-5)
    # Block mode lets the 10 tokens see each other: a different (published) computation.
    block = tiny_model.new_cache(2)
    tiny_model.extend(tiny_model.class_ids(labels)[:, None], torch.full((2, 1), -1), block)
    tiny_model.extend(tokens.gather(1, cells), cells, block, "block")
    assert not torch.allclose(tiny_model.query(q, block), tiny_model.query(q, caches[0]), atol=1e-5)


def test_class_token_carries_the_label(tiny_model):
    tokens, labels, orders = _batch(tiny_model, B=2)
    a = tiny_model(tokens, labels, orders)
    b = tiny_model(tokens, (labels + 1) % 10, orders)
    assert not torch.allclose(a, b)


def test_class_conditioning_options_reach_every_query():
    """The from-scratch options: the class token's RoPE slot is the identity (so its key is not zeroed) and
    every Pass-2 query adds its row's class embedding; the published config does neither."""
    torch.manual_seed(0)
    published = ARPG.from_preset("ARPG-nano").eval()
    assert torch.equal(published.rope[0], torch.zeros_like(published.rope[0]))
    model = ARPG.from_preset("ARPG-nano", class_rope="identity", class_queries=True).eval()
    assert torch.equal(model.rope[0, :, 0], torch.ones_like(model.rope[0, :, 0]))
    assert torch.equal(model.rope[1:], published.rope[1:])
    ids = model.class_ids(torch.tensor([0, 1, -1]))
    q = model.query_inputs(ids, 5)
    mask = model.embeddings.weight[model.config.mask_id]
    assert torch.allclose(q - mask, model.embeddings.weight[ids][:, None].expand(3, 5, -1))
    published_mask = published.embeddings.weight[published.config.mask_id]
    assert torch.equal(published.query_inputs(ids, 5), published_mask.expand(3, 5, -1))


def test_query_needs_a_cache_started_with_the_class_token(tiny_model):
    cache = tiny_model.new_cache(2)
    with pytest.raises(ARPGError, match="class token"):
        tiny_model.extend(torch.randint(0, 64, (2, 3)), torch.tensor([[0, 1, 2], [3, 4, 5]]), cache)
    with pytest.raises(ARPGError, match="class token"):
        tiny_model.query(torch.tensor([[0], [1]]), cache)


def test_unknown_class_rope_is_a_config_error():
    with pytest.raises(ARPGError, match="class_rope must be one of"):
        ARPG.from_preset("ARPG-nano", class_rope="learned")


@pytest.mark.parametrize("overrides", [{}, dict(class_rope="identity", class_queries=True)])
def test_class_dropout_only_in_training(overrides):
    model = ARPG.from_preset("ARPG-nano", class_dropout=1.0, **overrides)
    torch.nn.init.normal_(model.head.weight)
    tokens, labels, orders = _batch(model, B=2)
    null = torch.full_like(labels, -1)
    model.train()
    dropped = model(tokens, labels, orders)
    model.eval()
    assert torch.allclose(dropped, model(tokens, null, orders), atol=1e-6)
    assert not torch.allclose(model(tokens, labels, orders), dropped, atol=1e-6)


def test_bf16_autocast_forward_close_to_fp32(tiny_model):
    tokens, labels, orders = _batch(tiny_model, B=2)
    ref = tiny_model(tokens, labels, orders)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_model(tokens, labels, orders)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


def test_bad_token_count_is_one_line_error(tiny_model):
    with pytest.raises(ARPGError, match="64 cells"):
        tiny_model(torch.randint(0, 64, (1, 10)), torch.tensor([0]))


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = ARPG.from_preset("ARPG-nano", class_dropout=0.0)
    tokens, labels, orders = _batch(model, B=4, seed=9)  # one fixed batch, orders included
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for step in range(200):
        loss = model.loss(tokens, labels, orders)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


def test_guided_query_equals_guiding_the_logits(any_tiny_model):
    """The head is linear without a bias: query(guidance=(B, w)) mixes its inputs, one head matmul for a
    pair of rows, and must give uncond + w * (cond - uncond) of the plain logits."""
    from arpg.sampling.guidance import apply_guidance

    model = any_tiny_model.eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    tokens, labels, orders = _batch(model, B=3, seed=int(torch.randint(0, 1000, (), generator=gen)))
    cls = model.class_ids(labels)
    cls = torch.cat([cls, torch.full_like(cls, model.config.null_class_id)])
    with torch.no_grad():
        cache = model.new_cache(6)
        model.extend(cls[:, None], torch.full((6, 1), -1), cache)
        seen = orders[:, :5]
        model.extend(tokens.gather(1, seen).repeat(2, 1), seen.repeat(2, 1), cache)
        cells = orders[:, 5:9].repeat(2, 1)
        w = 1 + 4 * torch.rand((), generator=gen).item()
        plain = model.query(cells, cache)
        guided = model.query(cells, cache, guidance=(3, w))
    assert guided.shape == (3, 4, model.config.vocab_size) and guided.dtype == torch.float32
    expect = apply_guidance(plain[:3], plain[3:], w)
    assert (guided - expect).abs().max().item() < 1e-4 * expect.abs().max().item()
    assert not torch.allclose(guided, plain[:3], atol=1e-3)  # guidance did something


def test_norm_and_feedforward_fast_paths_equal_the_formulas():
    from arpg.model.blocks import FeedForward, RMSNorm

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    x = torch.randn(2, 7, 48, generator=gen) * 3
    norm = RMSNorm(48)
    norm.weight.data = torch.randn(48, generator=gen)
    xf = x.double()
    expect = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.eps)).float() * norm.weight
    assert torch.allclose(norm(x), expect, atol=1e-5)
    formula = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight  # the float32 steps
    assert torch.equal(norm(x), formula)  # torch's fused kernel takes the very same steps
    with torch.no_grad():
        assert torch.equal(norm(x), formula)  # and so does the decoding path (one buffer)
    assert torch.allclose(norm(x.bfloat16()).float(), expect, atol=0.1, rtol=0.02)  # the bf16 path
    ffn = FeedForward(48, 64, 0.0)
    with torch.no_grad():  # the in-place (decoding) path
        fast = ffn(x)
    slow = ffn(x)  # grad enabled: out-of-place
    assert slow.requires_grad and torch.equal(fast, slow.detach())
