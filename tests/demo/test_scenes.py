"""The demo's caption grammar and scene renderer: caption <-> prompt round trips, scenes that say what their
captions say, held-out pairs kept out of training, determinism."""

import json

import numpy as np
import pytest

from arpg.data.animal_mnist import CLASS_NAMES
from arpg.demo.scenes import (CANVAS, COLOURS, HELDOUT_PAIRS, RELATIONS, Prompt, Silhouettes, Thing, caption, parse,
                              prompt_facts, random_prompt, render, t2i_examples, write_scene_set)
from arpg.errors import ARPGError


@pytest.fixture(scope="module")
def silhouettes():
    return Silhouettes("train")


def test_the_issue_examples_parse_to_what_they_say():
    assert parse("a red cat") == Prompt("one", Thing("cat", "red"))
    assert parse("two zebras") == Prompt("two", Thing("zebra"))
    assert parse("two sheep") == Prompt("two", Thing("sheep"))
    assert parse("a blue dog to the left of a yellow horse") == \
        Prompt("pair", Thing("dog", "blue"), Thing("horse", "yellow"), "left")
    assert parse("a white cow above a green sheep") == Prompt("pair", Thing("cow", "white"), Thing("sheep", "green"),
                                                              "above")
    assert parse("an elephant to the right of a bird").relation == "right"
    assert parse("A Cat  below a DOG").relation == "below"  # case and spacing do not matter


def test_caption_and_parse_are_inverse_on_random_and_on_every_single_prompt():
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    prompts = [random_prompt(rng, heldout=True) for _ in range(500)]
    prompts += [Prompt("one", Thing(a, c)) for a in CLASS_NAMES for c in (None, *COLOURS)]
    prompts += [Prompt("two", Thing(a, c)) for a in CLASS_NAMES for c in (None, *COLOURS)]
    for p in prompts:
        assert parse(caption(p)) == p, caption(p)
    texts = [caption(p) for p in prompts]
    for t in texts:
        assert caption(parse(t)) == t
    assert {p.relation for p in prompts if p.form == "pair"} == set(RELATIONS)


def test_articles_and_plurals():
    assert caption(Prompt("one", Thing("elephant"))) == "an elephant"
    assert caption(Prompt("one", Thing("elephant", "red"))) == "a red elephant"
    assert caption(Prompt("two", Thing("sheep", "blue"))) == "two blue sheep"


@pytest.mark.parametrize("text", ["a purple cat", "three cats", "a cat next to a dog", "cat", "a red"])
def test_text_outside_the_grammar_is_refused_in_one_line(text):
    with pytest.raises(ARPGError, match="not a caption of the demo grammar") as e:
        parse(text)
    assert "\n" not in str(e.value)


def test_facts_tell_different_prompts_apart():
    rng = np.random.default_rng(3)
    seen = {}
    for _ in range(400):
        p = random_prompt(rng, heldout=True)
        key = tuple(prompt_facts(p).values())
        assert seen.setdefault(key, p) == p


def test_renders_place_colour_and_arrange_as_the_prompt_says(silhouettes):
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    for relation in ("left", "right", "above", "below"):
        p = Prompt("pair", Thing("cat", "red"), Thing("dog", "blue"), relation)
        img, objs = render(p, rng, silhouettes)
        assert img.shape == (CANVAS, CANVAS, 3) and img.dtype == np.uint8
        first, second = objs if objs[0]["animal"] == "cat" else objs[::-1]
        dx, dy = second["x"] - first["x"], second["y"] - first["y"]
        assert {"left": dx > 0, "right": dx < 0, "above": dy > 0, "below": dy < 0}[relation]
        # red pixels only in the red channel, blue only in the blue one
        assert img[..., 1].max() == 0 and img[..., 0].max() > 0 and img[..., 2].max() > 0
    img, objs = render(Prompt("two", Thing("zebra", "yellow")), rng, silhouettes)
    assert [o["colour"] for o in objs] == ["yellow", "yellow"] and img[..., 2].max() == 0


def test_training_scenes_never_show_a_heldout_pair_and_rebuild_identically(tmp_path):
    a = write_scene_set(tmp_path / "a", 300, progress=False)
    b = write_scene_set(tmp_path / "b", 300, progress=False)
    rows = [json.loads(l) for l in (a / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 300
    shown = {(o["colour"], o["animal"]) for r in rows for o in r["objects"]}
    assert not shown & set(HELDOUT_PAIRS)
    assert len(shown) > 40  # nearly every other pair appears
    for r in rows:
        parse(r["text"])
        assert len(r["objects"]) == parse(r["text"]).things().__len__()
    assert (a / "metadata.jsonl").read_bytes() == (b / "metadata.jsonl").read_bytes()
    for name in ("images/000000.png", "images/000299.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_the_app_examples_are_captions_of_the_grammar():
    for text in t2i_examples():
        assert caption(parse(text)) == text
