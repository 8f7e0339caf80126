"""The GenEval-style judge of the text-to-image demo: real renders pass, empty and random canvases do not,
the pass rules of each task, and the object finder's grouping."""

import numpy as np
import pytest

from arpg.demo.assets import WEIGHTS_DIR
from arpg.demo.classifier import load_classifier
from arpg.demo.scenes import HELDOUT_PAIRS, Prompt, Thing, caption
from arpg.demo.t2i_quality import (JUDGE_CLASSIFIER, HELDOUT_TASKS, MARGIN, TASKS, Found, _groups, find_objects, judge_prompts, passes,
                                   real_renders, score)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(WEIGHTS_DIR / JUDGE_CLASSIFIER)


@pytest.fixture(scope="module")
def prompts():
    return judge_prompts(40, seed=0)


def test_the_prompt_set_covers_every_task_and_keeps_heldout_pairs_apart(prompts):
    assert set(prompts) == set(TASKS + HELDOUT_TASKS) and all(len(v) == 40 for v in prompts.values())
    held = set(HELDOUT_PAIRS)

    def pairs(p):
        return {(t.colour, t.animal) for t in p.things() if t.colour}
    for task in TASKS:
        assert not any(pairs(p) & held for p in prompts[task]), task
    for task in HELDOUT_TASKS:
        assert all(pairs(p) & held for p in prompts[task]), task
    assert judge_prompts(40, seed=0) == prompts and judge_prompts(40, seed=1) != prompts


def test_real_renders_pass_and_empty_or_random_canvases_do_not(prompts, classifier):
    renders = real_renders(prompts, seed=0)
    found = {t: find_objects(im, classifier) for t, im in renders.items()}
    real = score(prompts, found)
    assert real["overall"] >= 0.95, real
    assert min(real[t] for t in TASKS + HELDOUT_TASKS) >= 0.85, real
    # the floor: the same real renders judged against shuffled prompts
    assert score(prompts, found, shuffle_seed=1)["overall"] <= 0.25
    few = {t: ps[:8] for t, ps in prompts.items()}
    empty = score(few, {t: find_objects(np.zeros_like(renders[t][:8]), classifier) for t in few})
    assert empty["overall"] == 0.0
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    noise = {t: rng.integers(0, 256, size=(8, 64, 64, 3), dtype=np.uint8) for t in few}
    assert score(few, {t: find_objects(im, classifier) for t, im in noise.items()})["overall"] <= 0.1


def _obj(animal, colour, x, y):
    return Found(animal, colour, x, y, 100)


def test_pass_rules():
    cat, dog = _obj("cat", "red", 16, 32), _obj("dog", "blue", 48, 32)
    assert passes(Prompt("one", Thing("cat")), [cat, dog])
    assert passes(Prompt("one", Thing("cat", "red")), [cat]) and not passes(Prompt("one", Thing("cat", "blue")), [cat])
    assert passes(Prompt("pair", Thing("cat"), Thing("dog"), "left"), [cat, dog])
    assert not passes(Prompt("pair", Thing("cat"), Thing("dog"), "right"), [cat, dog])
    assert passes(Prompt("pair", Thing("dog"), Thing("cat"), "right"), [cat, dog])
    near = _obj("dog", "blue", 16 + MARGIN - 1, 32)  # not far enough to be "to the left of"
    assert not passes(Prompt("pair", Thing("cat"), Thing("dog"), "left"), [cat, near])
    assert passes(Prompt("pair", Thing("cat", "red"), Thing("dog", "blue"), "and"), [dog, cat])
    assert not passes(Prompt("pair", Thing("cat", "blue"), Thing("dog", "red"), "and"), [dog, cat])
    assert not passes(Prompt("pair", Thing("cat"), Thing("cat"), "and"), [cat])  # one object cannot be both
    two = Prompt("two", Thing("cat"))
    assert passes(two, [cat, _obj("cat", "green", 40, 40)])
    assert not passes(two, [cat]) and not passes(two, [cat, cat, cat])
    assert not passes(Prompt("two", Thing("cat", "red")), [cat, _obj("cat", "green", 40, 40)])
    above = _obj("cat", "red", 32, 10)
    assert passes(Prompt("pair", Thing("cat"), Thing("dog"), "above"), [above, _obj("dog", None, 30, 50)])


def test_grouping_joins_pixels_two_apart_and_separates_a_gap_of_three():
    lit = np.zeros((16, 16), dtype=bool)
    lit[2:6, 2:4] = True
    lit[2:6, 6:8] = True  # 2 px gap (columns 4, 5): one object
    lit[10:14, 2:4] = True
    lit[10:14, 7:9] = True  # 3 px gap: two objects
    labels = _groups(lit)
    assert len(np.unique(labels[2:6][lit[2:6]])) == 1
    assert len(np.unique(labels[10:14][lit[10:14]])) == 2
    assert (labels[lit] > 0).all()


def test_captions_of_the_prompt_set_read_as_the_task_says(prompts):
    assert all(caption(p).startswith("two ") for p in prompts["counting"])
    assert all(" and " in caption(p) for p in prompts["two_object"] + prompts["color_attr"])
