"""The shipped ControlARPG demo weights: they load, are small, carry their record, and follow their maps."""

import numpy as np
import pytest
import torch

from arpg import generate, load_model
from arpg.data.animal_mnist import load_split, padded
from arpg.demo.assets import WEIGHTS_DIR, demo_paths
from arpg.demo.control_quality import conditions_of, fidelity
from arpg.demo.control_weights import read_control_card
from arpg.vq import load_tokenizer, to_uint8

KINDS = ("canny", "layout")


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_control_weights_load_and_carry_their_record(kind):
    folder = WEIGHTS_DIR / f"demo-control-{kind}"
    assert (folder / "model.safetensors").stat().st_size <= 10 * 2**20
    model = load_model(folder)
    assert model.config.controlled and model.config.condition_kind == kind
    assert model.embeddings.weight.dtype == torch.float32  # float16 on disk, float32 in use
    entry = read_control_card()[kind]
    assert entry["steps"] > 0 and entry["wall_time_s"]["train"] > 0 and kind in entry["commands"][1]


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_control_models_follow_held_out_maps_better_than_the_plain_model(kind):
    """20 held-out images (2 per class): the fidelity to their maps beats the unconditioned demo model's."""
    held, y = load_split("heldout")
    pick = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(10)])
    src = padded(held[pick])
    tok = load_tokenizer(demo_paths().tokenizer)
    ctl = load_model(WEIGHTS_DIR / f"demo-control-{kind}")
    plain = load_model(demo_paths().model)
    conds = conditions_of(kind, src, 8)
    labels = torch.from_numpy(y[pick])
    scores = {}
    for name, model, kw in (("control", ctl, {"condition": torch.from_numpy(conds).float() / 255}), ("plain", plain, {})):
        codes = generate(model, labels, steps=16, generator=torch.Generator().manual_seed(0), **kw)
        with torch.no_grad():
            images = to_uint8(tok.decode(codes, grid=(8, 8)))
        scores[name] = fidelity(kind, images, conds, 8)
    assert scores["control"] > scores["plain"] + 0.1, scores
