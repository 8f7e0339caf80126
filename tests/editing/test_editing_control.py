"""arpg.editing.control and the ``arpg control`` command, on the tiny ControlARPG (Canny) weights."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from arpg.cli import main
from arpg.data.conditions import canny_map
from arpg.editing.control import condition_from_file, condition_from_image, control_image
from arpg.errors import ARPGError
from arpg.vq import load_tokenizer
from arpg.model.weights import load_model


@pytest.fixture
def pair(tiny_weights):
    return load_model(tiny_weights / "arpg_control.safetensors"), load_tokenizer(tiny_weights / "vq.safetensors")


def test_condition_from_an_image_is_its_canny_map(pair, tiny_weights):
    model, tok = pair
    cond = condition_from_image(model, tok, tiny_weights / "img.png")
    want = canny_map(Image.open(tiny_weights / "img.png").convert("L"))
    assert torch.equal(cond, torch.from_numpy(want).float() / 255)
    with pytest.raises(ARPGError, match="trained on 'canny' maps, not 'layout'"):
        condition_from_image(model, tok, tiny_weights / "img.png", kind="layout")
    m = condition_from_file(model, tiny_weights / "cmap.png")
    assert m.shape == (1, 16, 16) and set(m.unique().tolist()) == {0.0, 1.0}


def test_control_alone_and_with_a_kept_region(pair, tiny_weights):
    model, tok = pair
    g = torch.Generator().manual_seed(0)
    res = control_image(model, tok, 2, image=tiny_weights / "img.png", num=3, steps=4, generator=g)
    assert res["images"].shape == (3, 16, 16, 1) and res["condition_view"].shape == (16, 16, 1)
    assert not res["known"].any()
    src = np.asarray(Image.open(tiny_weights / "img.png"))
    kept = control_image(model, tok, 2, image=tiny_weights / "img.png", box=(0, 0, 8, 16), num=2, steps=4,
                         generator=torch.Generator().manual_seed(1))
    assert kept["known"].sum() == 8 and kept["known"][:, 2:].all() and not kept["known"][:, :2].any()
    assert np.array_equal(kept["images"][:, :, 8:, 0], np.broadcast_to(src[:, 8:], (2, 16, 8)))
    a = control_image(model, tok, 2, condition=tiny_weights / "cmap.png", steps=4,
                      generator=torch.Generator().manual_seed(5))
    b = control_image(model, tok, 2, condition=torch.zeros(1, 16, 16), steps=4,
                      generator=torch.Generator().manual_seed(5))
    assert not torch.equal(a["codes"], b["codes"])  # the map changes what is drawn


def test_cli_control_writes_the_image_the_condition_and_a_record(tiny_weights, tmp_path, capsys):
    out = tmp_path / "c.png"
    rc = main(["control", str(tiny_weights / "img.png"), "--label", "3", "--model",
               str(tiny_weights / "arpg_control.safetensors"), "--tokenizer", str(tiny_weights / "vq.safetensors"),
               "--out", str(out), "--steps", "4", "--num", "2", "--device", "cpu", "--condition-guidance", "drop",
               "--cfg-scale", "2"])
    assert rc == 0
    assert out.exists() and (tmp_path / "c_1.png").exists() and (tmp_path / "c_condition.png").exists()
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["task"] == "control" and rec["condition_guidance"] == "drop" and rec["label"] == 3
    assert rec["sampling"]["steps"] == 4 and rec["sampling"]["cfg_scale"] == 2.0 and rec["inpaint"] is False
    assert rec["condition"] == "canny map of the image"
    assert "c_condition.png" in capsys.readouterr().out
