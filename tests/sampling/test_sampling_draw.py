"""Token draws: inverse-CDF sampling has exactly the distribution of softmax(logits) (chi-square against
it, fresh logits each run), never draws a masked token, and is reproducible from the generator."""

import pytest
import torch
from scipy.stats import chi2

from arpg import generate
from arpg.sampling.guidance import draw_inverse_cdf, sample_tokens


@pytest.mark.parametrize("draw", ["inverse-cdf", "multinomial"])
def test_draws_follow_the_softmax_distribution(draw):
    V, N = 40, 200_000
    logits = torch.randn(V) * 2  # fresh every run: the test holds for any distribution
    probs = logits.softmax(-1).double()
    tokens = sample_tokens(logits.expand(N, V), 1.0, draw=draw, generator=torch.Generator().manual_seed(
        int(torch.randint(0, 2**31, (1,)))))
    counts = torch.bincount(tokens, minlength=V).double()
    expected = probs * N
    keep = expected > 5  # the chi-square approximation needs enough expected counts per cell
    stat = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    bound = chi2.ppf(1 - 1e-6, int(keep.sum()) - 1)
    assert stat < bound, (stat, bound)


def test_inverse_cdf_never_draws_masked_tokens_and_is_reproducible():
    logits = torch.randn(500, 64)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = sample_tokens(logits, 0.8, top_k=5, draw="inverse-cdf", generator=g())
    b = sample_tokens(logits, 0.8, top_k=5, draw="inverse-cdf", generator=g())
    assert torch.equal(a, b)
    top5 = logits.topk(5, dim=-1).indices
    assert (top5 == a[:, None]).any(dim=1).all()
    one_hot = torch.full((3, 10), float("-inf"))
    one_hot[torch.arange(3), torch.tensor([2, 9, 0])] = 0.0
    assert draw_inverse_cdf(one_hot.softmax(-1), g()).view(-1).tolist() == [2, 9, 0]


def test_generate_with_inverse_cdf_is_reproducible(tiny_model):
    kw = dict(steps=8, cfg_scale=2.0, token_draw="inverse-cdf")
    a = generate(tiny_model, [1, 2], generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a, generate(tiny_model, [1, 2], generator=torch.Generator().manual_seed(5), **kw))
    assert a.min() >= 0 and a.max() < tiny_model.config.vocab_size


@pytest.mark.parametrize("V", [16384, 1000, 7, 1])
def test_two_level_pick_equals_the_flat_cumulative_sum(V):
    from arpg.sampling.guidance import pick_by_uniform

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    w = torch.rand(300, V, generator=gen, dtype=torch.float64) ** 4  # uneven mass, float64: no boundary ties
    u = torch.rand(300, 1, generator=gen, dtype=torch.float64)
    cdf = w.cumsum(-1)
    flat = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(V - 1)
    assert torch.equal(pick_by_uniform(w, u), flat)


def test_pick_never_lands_on_a_zero_weight_even_at_the_ends_of_u():
    from arpg.sampling.guidance import pick_by_uniform

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    V = 1000  # blocks of 32, the last one padded
    w = torch.rand(400, V, generator=gen) * (torch.rand(400, V, generator=gen) < 0.02)  # mostly zeros
    w[:, 0] = 0.0
    w[:, -1] = 0.0
    w[0] = 0.0
    w[0, 517] = 1e-30  # one tiny entry in a block of zeros
    w[w.sum(-1) == 0, 3] = 1.0
    below_one = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))
    for u in (torch.zeros(400, 1), torch.full((400, 1), float(below_one)), torch.rand(400, 1, generator=gen)):
        picked = pick_by_uniform(w, u)
        assert (w.gather(1, picked) > 0).all()
    assert pick_by_uniform(w[:1], torch.full((1, 1), 0.5)).item() == 517


def test_draw_from_logits_reports_the_softmax_probability_and_leaves_logits_alone():
    from arpg.sampling.guidance import draw_from_logits

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    logits = torch.randn(50, 300, generator=gen) * 3
    kept = logits.clone()
    u = torch.rand(50, 1, generator=gen)
    tokens, p = draw_from_logits(logits, u, 0.7, top_k=20)
    assert torch.equal(logits, kept)  # overwrite=False
    expect = (logits / 0.7).masked_fill(
        logits < logits.topk(20, -1).values[:, -1:], float("-inf")).softmax(-1)
    assert torch.allclose(p, expect.gather(1, tokens), rtol=1e-5)
    assert (expect.gather(1, tokens) > 0).all()
    scratch = logits.clone()
    again, p2 = draw_from_logits(scratch, u, 0.7, top_k=20, overwrite=True)
    assert torch.equal(again, tokens) and torch.equal(p2, p)
