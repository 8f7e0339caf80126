import math

import pytest

from arpg import ARPGError
from arpg.sampling import step_counts
from arpg.sampling.guidance import apply_guidance, guidance_weight


def test_arccos_64_steps_hand_computed():
    c = step_counts(256, 64, "arccos")
    assert c[:4] == [3, 3, 2, 3]
    assert c[-3:] == [10, 12, 28]
    assert len(c) == 64 and sum(c) == 256


def test_first_step_follows_formula():
    for steps in (8, 16, 32, 64):
        for name, r in (("arccos", math.acos(1 / steps) / (math.pi / 2)), ("cosine", math.cos(math.pi / 2 / steps))):
            assert step_counts(256, steps, name)[0] == 256 - max(1, int(256 * r))


@pytest.mark.parametrize("schedule", ["arccos", "cosine", "linear"])
def test_every_schedule_sums_with_at_least_one_per_step(schedule):
    for unknown in (1, 2, 7, 64, 100, 256):
        for steps in sorted({1, 2, 3, 8, 32, 64, unknown}):
            if steps > unknown:
                continue
            c = step_counts(unknown, steps, schedule)
            assert len(c) == steps and sum(c) == unknown and min(c) >= 1, (unknown, steps, c)


def test_explicit_schedule_and_errors():
    assert step_counts(10, 99, [4, 3, 3]) == [4, 3, 3]
    with pytest.raises(ARPGError, match="summing to 10"):
        step_counts(10, 3, [4, 3, 2])
    with pytest.raises(ARPGError, match="steps must be an integer in 1..10"):
        step_counts(10, 11)
    with pytest.raises(ARPGError, match="steps must be"):
        step_counts(10, 0)
    with pytest.raises(ARPGError, match="unknown step_schedule"):
        step_counts(10, 3, "square")


def test_guidance_formulas():
    assert guidance_weight(5.0, "linear", 0, 256) == 1.0
    assert guidance_weight(5.0, "linear", 256, 256) == 5.0
    assert guidance_weight(5.0, "linear", 64, 256) == pytest.approx(1 + 4 * 0.25)
    assert guidance_weight(5.0, "constant", 3, 256) == 5.0
    with pytest.raises(ARPGError, match="cfg_schedule"):
        guidance_weight(5.0, "cubic", 3, 256)
    import torch

    # float64: in float32, uncond + 1 * (cond - uncond) rounds to ~1e-7 of |uncond|, which exceeded
    # allclose's tolerance whenever some cond entry was near 0 (about 1 run in 40).
    cond, uncond = torch.randn(4, 9, dtype=torch.float64), torch.randn(4, 9, dtype=torch.float64)
    assert torch.allclose(apply_guidance(cond, uncond, 1.0), cond)
    assert torch.allclose(apply_guidance(cond, uncond, 3.0), uncond + 3 * (cond - uncond))


def test_token_probs_at_temperature_one_skips_nothing_it_should_not():
    import torch

    from arpg.sampling.guidance import token_probs

    logits = torch.randn(4, 3, 50) * 4
    assert torch.equal(token_probs(logits, 1.0), (logits / torch.tensor(1.0)).softmax(-1))
    assert torch.equal(token_probs(logits, 1.0), token_probs(logits, torch.tensor(1.0)))
    assert torch.allclose(token_probs(logits, 0.5), (2 * logits).softmax(-1))
