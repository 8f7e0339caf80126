"""The shipped text-to-image demo: it loads by default, follows its prompts far better than chance (the
GenEval-style judge against the shuffled-prompt floor), and its card matches the code that made it."""

import json

import pytest

from arpg.cli import main
from arpg.demo.assets import T2I_PATHS, WEIGHTS_DIR, load_t2i, t2i_card
from arpg.demo.classifier import load_classifier
from arpg.demo.scenes import HELDOUT_PAIRS
from arpg.demo.t2i_quality import JUDGE_CLASSIFIER, find_objects, generate_images, judge_prompts, score
from arpg.sampling.recipes import get_recipe, recommended_sampling
from arpg.sampling.text_folder import text_encoder_for


@pytest.fixture(scope="module")
def shipped():
    model, tok = load_t2i()
    return model, tok, text_encoder_for(model, None, "cpu")


def test_the_shipped_model_beats_the_shuffled_prompt_floor_by_a_clear_margin(shipped):
    model, tok, encoder = shipped
    prompts = judge_prompts(16, seed=5)  # a small fixed set, not the card's (seed 0)
    images = generate_images(model, tok, encoder, prompts, recommended_sampling(model), seed=3)
    found = {t: find_objects(im, load_classifier(WEIGHTS_DIR / JUDGE_CLASSIFIER)) for t, im in images.items()}
    got, floor = score(prompts, found), score(prompts, found, shuffle_seed=1)
    print(f"\n[t2i] overall {got['overall']:.3f} vs floor {floor['overall']:.3f}: {got}")
    # The shipped model is weak in absolute terms (the card's table: 0.12 overall against a 0.91 ceiling) but
    # follows its prompts: colour and the named animal far above what the same images score for other prompts.
    assert got["overall"] >= 2 * floor["overall"] + 0.04, (got, floor)
    assert got["colors"] >= floor["colors"] + 0.1 and got["single_object"] >= floor["single_object"] + 0.1, (got, floor)


def test_the_card_records_what_the_code_holds_out_and_the_recipe_it_ships_with(shipped):
    model, _, encoder = shipped
    card = t2i_card()
    assert [tuple(p) for p in card["heldout_pairs"]] == list(HELDOUT_PAIRS)
    assert recommended_sampling(model) == get_recipe("demo-t2i").sampling
    assert encoder.length == model.config.text_len and encoder.dim == model.config.text_dim
    assert {"scenes", "text-encoder", "train-vq", "extract-codes", "train"} <= set(card["wall_time_s"])
    assert sum(p.stat().st_size for d in (T2I_PATHS.model, T2I_PATHS.tokenizer, T2I_PATHS.text)
               for p in d.iterdir()) < 15e6


def test_arpg_t2i_uses_the_shipped_model_by_default(tmp_path, capsys):
    out = tmp_path / "t2i"
    assert main(["t2i", "two zebras", "--num", "2", "--steps", "8", "--out", str(out), "--device", "cpu"]) == 0
    record = json.loads((out / "t2i.json").read_text())
    assert record["prompt"] == "two zebras" and record["model"] == "shipped demo-t2i"
    assert sorted(p.name for p in out.glob("*.png")) == ["0000.png", "0001.png", "grid.png"]
    assert "2 images of 'two zebras'" in capsys.readouterr().out
