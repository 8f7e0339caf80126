"""Pinned sampling recipes."""

import dataclasses
import json

import numpy as np
import pytest

from arpg.errors import ARPGError
from arpg.sampling.recipes import get_recipe, recipe_names


def test_published_recipes_match_the_paper_settings():
    assert recipe_names() == ["ARPG-L", "ARPG-XL", "ARPG-XXL", "ARPG-XL-T2I", "demo", "demo-fast", "demo-t2i"]
    for name, cfg in [("ARPG-L", 5.0), ("ARPG-XL", 6.0), ("ARPG-XXL", 7.5)]:
        r = get_recipe(name)
        assert (r.steps, r.step_schedule, r.cfg_schedule, r.cfg_scale) == (64, "arccos", "linear", cfg)
        assert (r.temperature, r.top_k, r.top_p, r.order, r.attention, r.seed) == (1.0, None, None, "random",
                                                                                  "block", 0)
        assert r.num_samples == 50000 and r.preset == name and not r.provisional
    assert not get_recipe("demo").provisional and get_recipe("demo").num_samples == 1000
    t2i = get_recipe("ARPG-XL-T2I")  # the paper's text-to-image sampling (its later version)
    assert (t2i.steps, t2i.cfg_scale, t2i.top_k, t2i.temperature, t2i.image_size) == (64, 8.0, 900, 1.0, 512)


def test_a_text_model_gets_the_text_recipe_and_a_class_model_of_the_same_shape_the_class_one():
    from arpg import get_preset
    from arpg.sampling.recipes import recipe_name_for

    assert recipe_name_for(get_preset("ARPG-XL-T2I")) == "ARPG-XL-T2I"
    assert recipe_name_for(get_preset("ARPG-XL")) == "ARPG-XL"


def test_labels_are_class_major_and_dict_is_json():
    r = get_recipe("arpg-xl")  # case-insensitive
    labels = r.labels()
    assert labels.shape == (50000,) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels[:50], 0)
    np.testing.assert_array_equal(labels[-50:], 999)
    np.testing.assert_array_equal(np.bincount(labels), np.full(1000, 50))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["name"] == "ARPG-XL" and d["cfg_scale"] == 6.0 and d["num_samples"] == 50000 and d["top_k"] is None


def test_recipes_are_frozen_and_unknown_names_list_choices():
    r = get_recipe("ARPG-L")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.cfg_scale = 1.0
    custom = r.replace(cfg_scale=4.5)
    assert custom.name == "ARPG-L+custom" and custom.cfg_scale == 4.5 and get_recipe("ARPG-L").cfg_scale == 5.0
    with pytest.raises(ARPGError, match="ARPG-L, ARPG-XL, ARPG-XXL, ARPG-XL-T2I, demo"):
        get_recipe("ARPG-XXXL")
    with pytest.raises(ARPGError, match="unknown recipe field"):
        r.replace(guidance=3)
