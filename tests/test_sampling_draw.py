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
