"""Few-step sampling options: spread orders, guidance intervals, temperature annealing, refinement."""

from __future__ import annotations

import pytest
import torch

import arpg.sampling.steps as steps_mod
from arpg import ARPGError, generate
from arpg.sampling import SamplingConfig
from arpg.sampling.orders import make_orders
from arpg.sampling.schedules import step_counts
from arpg.sampling.spread_orders import SPREAD_ORDERS


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _group_min_distance(orders: torch.Tensor, counts: list[int], grid: int) -> float:
    """Mean over rows and steps (of >1 cell) of the smallest distance between two cells decoded together."""
    xy = torch.stack([orders // grid, orders % grid], dim=-1).float()
    vals, pos = [], 0
    for c in counts:
        if c > 1:
            d = torch.cdist(xy[:, pos:pos + c], xy[:, pos:pos + c]) + torch.eye(c) * 1e9
            vals.append(d.amin(dim=(1, 2)).mean())
        pos += c
    return float(torch.stack(vals).mean())


@pytest.mark.parametrize("name", SPREAD_ORDERS)
def test_spread_orders_are_permutations_reproducible_and_per_sample(name):
    counts = step_counts(64, 8, "arccos")
    a = make_orders(name, 50, 8, generator=_gen(3), counts=counts)
    b = make_orders(name, 50, 8, generator=_gen(3), counts=counts)
    assert torch.equal(a, b)
    assert torch.equal(a.sort(dim=1).values, torch.arange(64).expand(50, -1))
    assert len({tuple(r.tolist()) for r in a}) == 50  # one order per sample
    assert not torch.equal(a, make_orders(name, 50, 8, generator=_gen(4), counts=counts))


@pytest.mark.parametrize("name", SPREAD_ORDERS)
def test_spread_orders_spread_the_cells_of_a_step(name):
    """Measured: cells decoded in one step are farther apart than under a uniform random order."""
    counts = step_counts(64, 8, "arccos")
    spread = _group_min_distance(make_orders(name, 400, 8, generator=_gen(1), counts=counts), counts, 8)
    rand = _group_min_distance(make_orders("random", 400, 8, generator=_gen(1)), counts, 8)
    assert spread > rand + 0.1, (spread, rand)


def test_locality_puts_new_cells_near_decoded_ones():
    """After the first step, a locality step's cells are closer to the decoded cells than random ones."""
    counts = step_counts(64, 8, "arccos")

    def mean_gap(orders):
        xy = torch.stack([orders // 8, orders % 8], dim=-1).float()
        gaps, pos = [], counts[0]
        for c in counts[1:-1]:
            d = torch.cdist(xy[:, pos:pos + c], xy[:, :pos]).amin(dim=2)
            gaps.append(d.mean())
            pos += c
        return float(torch.stack(gaps).mean())

    loc = make_orders("locality", 400, 8, generator=_gen(2), counts=counts)
    assert mean_gap(loc) < mean_gap(make_orders("random", 400, 8, generator=_gen(2)))


def test_halton_prefixes_cover_the_grid_evenly():
    """Any 16 first cells of an 8x8 grid fall about evenly in the four 4x4 quadrants."""
    o = make_orders("halton", 200, 8, generator=_gen(5))[:, :16]
    quadrant = (o // 8 >= 4).long() * 2 + (o % 8 >= 4).long()
    counts = torch.stack([(quadrant == q).sum(dim=1) for q in range(4)], dim=1)
    rand = make_orders("random", 200, 8, generator=_gen(5))[:, :16]
    rq = (rand // 8 >= 4).long() * 2 + (rand % 8 >= 4).long()
    rcounts = torch.stack([(rq == q).sum(dim=1) for q in range(4)], dim=1)
    assert counts.float().std(dim=1).mean() < 0.75 * rcounts.float().std(dim=1).mean()


def _count_query_rows(monkeypatch, model):
    rows = []
    original = model.pass2

    def counting(cells, *a, **k):
        rows.append(cells.shape[0])
        return original(cells, *a, **k)

    monkeypatch.setattr(model, "pass2", counting)
    return rows


def test_guidance_interval_skips_the_unconditional_half_outside_it(tiny_model, monkeypatch):
    rows = _count_query_rows(monkeypatch, tiny_model)
    generate(tiny_model, [1, 2, 3], steps=8, cfg_scale=3.0, guidance_interval=(0.25, 0.75), generator=_gen(0))
    counts = step_counts(64, 8, "arccos")
    done, want = 0, []
    for c in counts:
        done += c
        want.append(6 if 0.25 < done / 64 <= 0.75 else 3)
    assert rows == want and 3 in rows and 6 in rows
    rows.clear()
    generate(tiny_model, [1, 2, 3], steps=8, cfg_scale=3.0, generator=_gen(0))
    assert rows == [6] * 8  # the default interval guides every step


def test_guidance_interval_ending_early_matches_full_guidance_up_to_it(tiny_model):
    """Dropping the unconditional rows after the last guided step changes nothing before it: with the
    interval ending at the last step, the codes equal full guidance exactly."""
    a = generate(tiny_model, [4, 5], steps=8, cfg_scale=3.0, generator=_gen(9))
    b = generate(tiny_model, [4, 5], steps=8, cfg_scale=3.0, guidance_interval=(0.0, 1.0), generator=_gen(9))
    assert torch.equal(a, b)


def test_temperature_anneal_rule():
    sc = SamplingConfig(temperature=1.0, temperature_schedule="anneal", temperature_end=0.5)
    assert sc.temperature_at(0, 64) == 1.0 and sc.temperature_at(32, 64) == 0.75
    assert SamplingConfig(temperature=0.7).temperature_at(40, 64) == 0.7
    with pytest.raises(ARPGError, match="temperature_end"):
        SamplingConfig(temperature_schedule="anneal").validate()


def test_annealed_temperatures_reach_the_sampler(tiny_model, monkeypatch):
    seen = []
    original = steps_mod.draw_from_logits

    def recording(logits, u, temperature, *a, **k):
        seen.append(temperature)
        return original(logits, u, temperature, *a, **k)

    monkeypatch.setattr(steps_mod, "draw_from_logits", recording)
    generate(tiny_model, [1], steps=4, temperature=1.0, temperature_schedule="anneal", temperature_end=0.5,
             generator=_gen(0))
    counts = step_counts(64, 4, "arccos")
    before = [sum(counts[:i]) for i in range(4)]
    assert seen == pytest.approx([1.0 - 0.5 * b / 64 for b in before])


def test_refinement_repredicts_exactly_the_least_confident_cells(tiny_model, monkeypatch):
    queried = []
    original = tiny_model.pass2

    def recording(cells, *a, **k):
        queried.append(cells.clone())
        return original(cells, *a, **k)

    monkeypatch.setattr(tiny_model, "pass2", recording)
    base = generate(tiny_model, [1, 2], steps=4, generator=_gen(7))
    n_base = len(queried)
    refined = generate(tiny_model, [1, 2], steps=4, refine_rounds=2, refine_fraction=0.25, generator=_gen(7))
    rounds = queried[2 * n_base:]  # the refined call repeats the base steps first, then one query per round
    assert len(rounds) == 2 and all(q.shape == (2, 16) for q in rounds)
    changed = refined != base
    chosen = torch.zeros_like(changed)
    for q in rounds:
        chosen.scatter_(1, q, True)
    assert not (changed & ~chosen).any()  # only re-predicted cells can differ


def test_refinement_never_changes_known_cells(tiny_model):
    known = torch.zeros(2, 64, dtype=torch.bool)
    known[:, :20] = True
    codes = torch.randint(0, 64, (2, 64), generator=_gen(1))
    out = generate(tiny_model, [3, 4], steps=6, known_codes=codes, known_mask=known, refine_rounds=3,
                   refine_fraction=0.3, generator=_gen(2))
    assert torch.equal(out[known], codes[known])


def test_same_generator_same_output_with_every_option(tiny_model):
    kw = dict(steps=6, cfg_scale=2.5, order="locality", guidance_interval=(0.1, 0.9), temperature_schedule="anneal",
              temperature_end=0.6, refine_rounds=1)
    assert torch.equal(generate(tiny_model, [1, 2, 3], generator=_gen(11), **kw),
                       generate(tiny_model, [1, 2, 3], generator=_gen(11), **kw))


@pytest.mark.parametrize("kwargs,words", [
    (dict(guidance_interval=(0.8, 0.2)), "guidance_interval must be two numbers"),
    (dict(refine_rounds=-1), "refine_rounds must be an integer >= 0"),
    (dict(refine_fraction=1.5), "refine_fraction must be in (0, 1)"),
    (dict(temperature_schedule="bogus"), "temperature_schedule must be one of"),
])
def test_bad_few_step_settings_are_refused(tiny_model, kwargs, words):
    with pytest.raises(ARPGError) as e:
        generate(tiny_model, [1], generator=_gen(0), **kwargs)
    assert words in str(e.value)
