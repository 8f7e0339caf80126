"""ControlARPG data and training: condition maps, their storage beside the codes (crop-aligned), extraction,
fine-tuning from class-conditional weights, and a tiny model that learns to follow a condition."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from arpg import generate
from arpg.data.codes import CodeDataset, write_code_set
from arpg.data.conditions import (canny_map, condition_stride, layout_map, make_condition, read_condition_image)
from arpg.data.crops import make_crops
from arpg.data.extract import extract_codes
from arpg.errors import ARPGError
from arpg.train.config import TrainConfig
from arpg.train.trainer import Trainer, train
from arpg.model.weights import load_model

from test_extract import PoolTokenizer, folder, _cfg as extract_cfg  # noqa: F401 (folder: a fixture)


def _square(size=32, lo=8, hi=24, value=200, rng=None):
    a = np.zeros((size, size), np.uint8) if rng is None else rng.integers(0, 20, (size, size)).astype(np.uint8)
    a[lo:hi, lo:hi] = value
    return Image.fromarray(a, "L")


def test_canny_finds_the_outline_of_a_square():
    e = canny_map(_square(rng=np.random.default_rng(0)))[0] > 0
    assert e.shape == (32, 32) and e[7:9, 8:24].any() and e[23:25, 8:24].any()
    assert not e[11:21, 11:21].any() and not e[:4].any()  # nothing inside or far outside


def test_layout_marks_the_cells_of_the_object():
    m = layout_map(_square(lo=8, hi=24, rng=np.random.default_rng(1)), 8)[0] > 0
    want = np.zeros((8, 8), bool)
    want[2:6, 2:6] = True
    assert np.array_equal(m, want)
    assert condition_stride("layout", 32, 8) == 1 and condition_stride("canny", 32, 8) == 4
    with pytest.raises(ARPGError, match="unknown condition kind 'depth'"):
        make_condition("depth", _square(), 8)


def test_user_maps_are_resized_and_bad_files_refused(tmp_path):
    big = np.zeros((64, 64), np.uint8)
    big[:, 32:] = 255
    Image.fromarray(big).save(tmp_path / "m.png")
    m = read_condition_image(tmp_path / "m.png", 1, 16)
    assert m.shape == (1, 16, 16) and m[0, :, :8].max() == 0 and m[0, :, 8:].min() == 1
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(tmp_path / "wide.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    for path, msg in ((tmp_path / "nope.png", "file not found"), (tmp_path, "is a folder"),
                      (tmp_path / "wide.png", "must be square"), (tmp_path / "junk.png", "cannot read condition map")):
        with pytest.raises(ARPGError, match=msg):
            read_condition_image(path, 1, 16)


@pytest.mark.parametrize("kind, packed", [("canny", True), ("depth", False)])
def test_code_set_keeps_each_crops_map_with_its_codes(tmp_path, kind, packed):
    """Binary kinds are stored 8 pixels per byte, others as they are; either way a crop's map comes back
    exactly, with that crop's codes."""
    rng = np.random.default_rng(2)
    N, K = 7, 3
    codes = rng.integers(0, 16, (N, K, 16))
    maps = rng.integers(0, 256, (N, K, 1, 12, 12)).astype(np.uint8)
    if packed:
        maps = np.where(maps > 127, 255, 0).astype(np.uint8)
    write_code_set(tmp_path / "c", codes, rng.integers(0, 4, N), vocab_size=16, class_names=list("abcd"),
                   shard_size=3, conditions=maps, condition_kind=kind)
    ds = CodeDataset(tmp_path / "c")
    assert ds.index.condition == {"kind": kind, "channels": 1, "side": 12, "stride": 3, "packed": packed}
    assert np.load(tmp_path / "c" / "conditions-00000.npy").shape[-1] == (2 if packed else 12)
    idx, crops = np.array([6, 0, 4, 3]), np.array([2, 1, 0, 2])
    got = ds.get_conditions(idx, crops)
    assert torch.equal(got, torch.from_numpy(maps[idx, crops]).float() / 255)
    tokens, _ = ds.get(idx, crops)
    assert torch.equal(tokens, torch.from_numpy(codes[idx, crops]))
    with pytest.raises(ARPGError, match="uint8"):
        write_code_set(tmp_path / "d", codes, np.zeros(N), vocab_size=16, class_names=list("abcd"),
                       conditions=maps.astype(np.float32), condition_kind=kind)


def test_binary_maps_must_be_binary(tmp_path):
    with pytest.raises(ARPGError, match="only 0 and 255"):
        write_code_set(tmp_path / "c", np.zeros((2, 16), int), np.zeros(2), vocab_size=16, class_names=list("ab"),
                       conditions=np.full((2, 1, 1, 4, 4), 7, np.uint8), condition_kind="layout")


def test_extraction_stores_maps_aligned_with_the_ten_crops(folder, tmp_path):
    s = extract_codes(extract_cfg(folder, tmp_path / "out", condition="canny"), tokenizer=PoolTokenizer())
    ds = CodeDataset(tmp_path / "out")
    assert s.index.condition["side"] == 16 and ds.index.num_crops == 10
    path = sorted((folder / "cat").glob("*.png"))[0]
    i = 0  # the first image of the first class folder
    crops = make_crops(Image.open(path).convert("RGB"), 16, "ten")
    for k in (0, 4, 7):
        want = torch.from_numpy(make_condition("canny", crops[k], 4)).float() / 255
        assert torch.equal(ds.get_conditions([i], [k])[0], want)
    settings = json.loads((tmp_path / "out" / "extract.json").read_text())
    assert settings["condition"] == "canny"
    with pytest.raises(ARPGError, match="other settings.*condition"):
        extract_codes(extract_cfg(folder, tmp_path / "out", condition="layout"), tokenizer=PoolTokenizer())


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def _stripes(N, rng, K=2):
    """Codes that copy a random binary 4x4 map (code 1 where the map is on, else 0) with 10% noise, so only
    the condition tells the model which cell is which; any class."""
    maps = rng.random((N, K, 1, 4, 4)) < 0.5
    codes = np.where(maps.reshape(N, K, 16), 1, 0)
    noise = rng.random(codes.shape) < 0.1
    codes = np.where(noise, rng.integers(2, 16, codes.shape), codes)
    return codes, (maps * 255).astype(np.uint8)


@pytest.fixture
def stripe_codes(tmp_path):
    rng = np.random.default_rng(5)
    codes, maps = _stripes(256, rng)
    write_code_set(tmp_path / "codes", codes, rng.integers(0, 4, 256), vocab_size=16, class_names=list("abcd"),
                   conditions=maps, condition_kind="layout")
    return tmp_path / "codes"


def _tcfg(codes, out, **kw):
    base = dict(codes=str(codes), out=str(out), preset="ARPG-nano", batch_size=32, steps=4, lr=0.3, min_lr=1e-3,
                warmup=0.05, save_every=1000, log_every=50, progress=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_condition_flags_are_checked_against_the_codes(stripe_codes, tmp_path):
    with pytest.raises(ARPGError, match="the codes hold 'layout' maps"):
        Trainer(_tcfg(stripe_codes, tmp_path / "a", condition="canny"))
    with pytest.raises(ARPGError, match="--condition is not"):
        Trainer(_tcfg(stripe_codes, tmp_path / "b", overrides={"condition_channels": 1}))
    plain = tmp_path / "plain"
    rng = np.random.default_rng(0)
    write_code_set(plain, rng.integers(0, 16, (8, 16)), rng.integers(0, 4, 8), vocab_size=16, class_names=list("abcd"))
    with pytest.raises(ARPGError, match="hold no condition maps"):
        Trainer(_tcfg(plain, tmp_path / "c", condition="layout"))


def test_fine_tune_from_class_conditional_weights_starts_from_them(stripe_codes, tmp_path):
    base = train(_tcfg(stripe_codes, tmp_path / "base", steps=2))  # a plain model (the maps are ignored)
    assert not load_model(base.final_weights).config.controlled
    t = Trainer(_tcfg(stripe_codes, tmp_path / "ft", condition="layout", init=str(base.final_weights)))
    start = load_model(base.final_weights).state_dict()
    sd = t.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in start.items())
    assert t.model.config.condition_kind == "layout" and t.model.config.condition_stride == 1
    assert any(k.startswith("condition_encoder.") for k in sd)


@pytest.mark.parametrize("mode", ["add", "replace"])
def test_a_tiny_model_learns_to_follow_the_condition(stripe_codes, tmp_path, mode):
    res = train(_tcfg(stripe_codes, tmp_path / mode, condition="layout", steps=150, lr=0.2, min_lr=0.01,
                      overrides={"condition_mode": mode, "condition_width": 32}))
    model = load_model(res.final_weights)
    assert model.config.controlled
    rng = np.random.default_rng(99)  # fresh maps, never seen in training
    maps = torch.from_numpy(rng.random((64, 1, 4, 4)) < 0.5).float()
    out = generate(model, torch.from_numpy(rng.integers(0, 4, 64)), steps=8, cfg_scale=1.0, temperature=1.0,
                   condition=maps, generator=torch.Generator().manual_seed(0))
    follows = ((out == 1) == (maps.reshape(64, 16) > 0)).float().mean().item()
    free = generate(model, torch.from_numpy(rng.integers(0, 4, 64)), steps=8, cfg_scale=1.0,
                    generator=torch.Generator().manual_seed(0))
    chance = ((free == 1) == (maps.reshape(64, 16) > 0)).float().mean().item()
    assert follows > 0.8 and follows > chance + 0.2, (follows, chance)
