"""The app's jobs, called directly (no server, no browser): good inputs give images, bad ones one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from arpg.app.backend import AppBackend, make_backend
from arpg.app.classes import class_names, imagenet_names, read_names
from arpg.app.ui import build_app, display, guarded
from arpg.errors import ARPGError


@pytest.fixture(scope="module")
def demo():
    return make_backend()


@pytest.fixture
def tiny(editing_model, editing_tok, tmp_path):
    names = [f"class {i}" for i in range(editing_model.config.num_classes)]
    return AppBackend(editing_model, editing_tok, names, out_dir=tmp_path)


def _editor(img, painted):
    """An image-editor value: the image shown 8x (as the app shows it) with ``painted`` [h, w] in a layer."""
    big = display(img)
    layer = np.zeros(big.shape[:2] + (4,), np.uint8)
    k = big.shape[0] // painted.shape[0]
    layer[..., 3] = painted.repeat(k, 0).repeat(k, 1) * 255
    return dict(background=big, layers=[layer], composite=big)


def test_generate_tab_makes_the_asked_images(demo):
    sc = demo.sampling(steps=8)
    r = demo.run_generate(["1: bird", "zebra"], 3, sc, seed=5)
    assert r["images"].shape == (6, 32, 32, 1) and len(r["files"]) == 7
    assert "6 images" in r["report"] and "8 steps" in r["report"]
    again = demo.run_generate(["1: bird", "zebra"], 3, sc, seed=5)
    assert np.array_equal(again["images"], r["images"])  # the seed fixes the samples


def test_generate_progress_reports_every_step(demo):
    calls = []
    demo.run_generate(["cat"], 2, demo.sampling(steps=6), seed=1, on_step=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 6) for i in range(1, 7)]


def test_defaults_are_the_models_recommended_settings(demo):
    from arpg.sampling import recommended_sampling
    assert demo.sampling() == recommended_sampling(demo.model)


@pytest.mark.parametrize("labels, per_class, words", [
    ([], 2, "at least one class"), (["10: ?"], 1, "0..9"), (["unicorn"], 1, "unknown class"),
    (["cat"], 0, "positive"), (["cat"], 2.5, "positive"), (["cat", "dog"], 40, "at most 64")])
def test_generate_bad_inputs(demo, labels, per_class, words):
    with pytest.raises(ARPGError, match=words):
        demo.run_generate(labels, per_class, demo.sampling(steps=4), seed=0)


@pytest.mark.parametrize("kw, words", [(dict(steps=0), "steps"), (dict(steps=2.5), "whole"),
                                       (dict(temperature=-1), "temperature"), (dict(order="diagonal"), "order")])
def test_bad_settings(demo, kw, words):
    with pytest.raises(ARPGError, match=words):
        demo.sampling(**kw)


def test_inpaint_changes_only_painted_cells(demo):
    img = demo.examples[3][1]
    rng = np.random.default_rng()
    painted = np.zeros((32, 32), bool)
    y, x = rng.integers(4, 16, size=2)
    painted[y:y + 10, x:x + 8] = True
    r = demo.run_inpaint(_editor(img, painted), "3: cow", demo.sampling(steps=8), seed=int(rng.integers(100)))
    assert r["result"].shape == img.shape
    assert np.array_equal(r["result"][~painted], img[~painted])  # unpainted pixels come back exactly
    known = np.asarray(r["known"])
    assert (known == 128).any() and "cells regenerated" in r["report"]


def test_inpaint_bad_inputs(demo, tiny):
    img = demo.examples[0][1]
    sc = demo.sampling(steps=4)
    with pytest.raises(ARPGError, match="no image"):
        demo.run_inpaint(None, "bear", sc, seed=0)
    with pytest.raises(ARPGError, match="no mask painted"):
        demo.run_inpaint(_editor(img, np.zeros((32, 32), bool)), "bear", sc, seed=0)
    with pytest.raises(ARPGError, match="whole image"):
        demo.run_inpaint(_editor(img, np.ones((32, 32), bool)), "bear", sc, seed=0)
    with pytest.raises(ARPGError, match="0..9"):
        demo.run_inpaint(_editor(img, np.eye(32, dtype=bool)), 12, sc, seed=0)
    with pytest.raises(ARPGError, match="seed"):
        demo.run_inpaint(_editor(img, np.eye(32, dtype=bool)), 1, sc, seed=-1)
    # not fitted: the editor's 256x256 view is not the model's 32x32 image
    with pytest.raises(ARPGError, match="256x256 pixels; this model edits 32x32"):
        demo.run_inpaint(_editor(img, np.eye(32, dtype=bool)), 1, sc, seed=0, fit=False)
    with pytest.raises(ARPGError, match="too large"):
        demo.source(np.zeros((5000, 10, 3), np.uint8))


def test_uploads_are_fitted_like_the_cli(demo, tiny):
    rgb = np.random.default_rng().integers(0, 256, (70, 50, 3), dtype=np.uint8)
    assert demo.source(rgb).shape == (32, 32, 1)  # the demo tokenizer's one channel
    assert tiny.source(rgb).shape == tiny.image_size + (3,)
    from arpg.editing.images import read_image
    assert np.array_equal(demo.source(rgb), read_image(rgb, 1, fit=(32, 32)))


def test_outpaint_and_expand(demo):
    img = demo.examples[5][1]
    sc = demo.sampling(steps=4)
    r = demo.run_outpaint(img, 32, 64, "left", "elephant", sc, seed=2)
    assert r["result"].shape == (32, 64, 1)
    assert np.array_equal(r["result"][:, :32], img)  # the source sits on the left, kept exactly
    e = demo.run_expand(img, 2, "elephant", sc, seed=2)
    assert e["result"].shape == (64, 64, 1)
    with pytest.raises(ARPGError, match="smaller than the source"):
        demo.run_outpaint(img, 16, 64, "centre", 0, sc, seed=0)
    with pytest.raises(ARPGError, match="nothing to outpaint"):
        demo.run_outpaint(img, 32, 32, "centre", 0, sc, seed=0)
    with pytest.raises(ARPGError, match="limit"):
        demo.run_outpaint(img, 32 * 8, 32 * 8, "centre", 0, sc, seed=0)
    with pytest.raises(ARPGError, match="position"):
        demo.run_outpaint(img, 32, 64, "middle", 0, sc, seed=0)
    with pytest.raises(ARPGError, match="factor"):
        demo.run_expand(img, 1, 0, sc, seed=0)


def test_class_names(tmp_path):
    names = imagenet_names()
    assert len(names) == 1000 and names[207] == "golden retriever" and names[0] == "tench"
    assert class_names(10, is_demo=True)[9] == "zebra" and class_names(3) == ["class 0", "class 1", "class 2"]
    (tmp_path / "n.json").write_text(json.dumps(["a", "b"]))
    assert read_names(tmp_path / "n.json", 2) == ["a", "b"]
    (tmp_path / "n.txt").write_text("a\nb\nc\n")
    with pytest.raises(ARPGError, match="3 names; the model has 2"):
        read_names(tmp_path / "n.txt", 2)


def test_guarded_turns_errors_into_one_status_line():
    def bad(x):
        raise ARPGError("label must be in 0..9")

    def broken(x):
        raise RuntimeError("boom")
    assert guarded(bad, 3)(1) == (None, None, "**Error:** label must be in 0..9")
    assert guarded(broken, 2)(1) == (None, "**Internal error:** RuntimeError: boom")


def test_app_builds_without_a_server(demo):
    app = build_app(demo, max_queue=4)
    ids = {getattr(b, "elem_id", None) for b in app.blocks.values()}
    assert {"gen-run", "inp-editor", "out-run", "exp-run", "gen-status"} <= ids
    assert app.arpg_limits["max_queue"] == 4


@pytest.fixture
def tiny_control(editing_model, editing_tok, tmp_path):
    """The tiny backend with a random ControlARPG (Canny, 16 px maps) in its Control tab."""
    import torch
    from arpg import ARPG

    torch.manual_seed(2)
    ctl = ARPG.from_preset("ARPG-tiny", vocab_size=editing_tok.codebook_size, grid_size=4, condition_channels=1,
                           condition_stride=4, condition_kind="canny", condition_mode="replace").eval()
    names = [f"class {i}" for i in range(editing_model.config.num_classes)]
    return AppBackend(editing_model, editing_tok, names, out_dir=tmp_path, controls={"canny": ctl})


def test_control_tab_from_an_image_or_an_uploaded_map(tiny_control):
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    sc = tiny_control.sampling(steps=4)
    r = tiny_control.run_control(img, None, "canny", "class 2", "keep", sc, seed=1)
    assert r["result"].shape == (16, 16, 3) and r["condition"].shape == (16, 16, 1) and len(r["files"]) == 2
    assert "canny map of the image" in r["report"]
    edges = np.zeros((64, 64, 3), np.uint8)
    edges[8:12] = 255  # row 2 of the 16 px map after area resizing
    r = tiny_control.run_control(None, edges, "canny", "class 2", "drop", sc, seed=1)
    assert "uploaded" in r["report"] and r["condition"][2, :, 0].max() == 255
    record = json.loads((Path(r["files"][0]).parent / "record.json").read_text())
    assert record["condition_guidance"] == "drop" and record["kind"] == "canny"


def test_control_tab_bad_inputs(tiny_control, tiny):
    sc = tiny.sampling(steps=4)
    img = np.random.default_rng(5).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with pytest.raises(ARPGError, match="--control-model"):
        tiny.run_control(img, None, "canny", "class 1", "keep", sc, seed=0)
    with pytest.raises(ARPGError, match="no ControlARPG weights for 'layout'"):
        tiny_control.run_control(img, None, "layout", "class 1", "keep", sc, seed=0)
    with pytest.raises(ARPGError, match="upload or pick an image"):
        tiny_control.run_control(None, None, "canny", "class 1", "keep", sc, seed=0)
    with pytest.raises(ARPGError, match="condition_guidance"):
        tiny_control.run_control(img, None, "canny", "class 1", "sometimes", sc, seed=0)


def test_a_control_model_must_have_a_condition_encoder(tiny_weights):
    with pytest.raises(ARPGError, match="not a ControlARPG model"):
        make_backend(str(tiny_weights / "arpg.safetensors"), str(tiny_weights / "vq.safetensors"),
                     control_paths=[str(tiny_weights / "arpg.safetensors")])


def test_the_demo_app_serves_the_shipped_control_models(demo):
    assert set(demo.controls) == {"canny", "layout"}
    caption, img, label = demo.examples[3]
    r = demo.run_control(img, None, "layout", caption, "keep", demo.sampling(steps=8), seed=0)
    assert r["result"].shape == (32, 32, 1) and r["condition"].shape == (32, 32, 1)
    assert "layout map of the image" in r["report"]


def test_the_text_to_image_tab_draws_the_prompt_with_the_shipped_model(demo):
    t2i = demo.text_to_image
    assert t2i is not None and t2i.examples and t2i.sampling() == t2i.recommended()
    sc = t2i.sampling(steps=8, cfg_scale=2.0, temperature=0.8)
    calls = []
    r = demo.run_t2i("a red cat above a blue dog", 3, sc, seed=4, on_step=lambda d, t: calls.append(d))
    assert r["images"].shape == (3, 64, 64, 3) and len(r["files"]) == 4 and calls == list(range(1, 9))
    assert "3 images of 'a red cat above a blue dog'" in r["report"] and "8 steps" in r["report"]
    record = json.loads((Path(r["files"][0]).parent / "record.json").read_text())
    assert record["prompt"] == "a red cat above a blue dog" and record["sampling"]["cfg_scale"] == 2.0
    again = demo.run_t2i("a red cat above a blue dog", 3, sc, seed=4)
    assert np.array_equal(again["images"], r["images"])


@pytest.mark.parametrize("prompt, num, words", [
    ("", 2, "the prompt is empty"), ("   ", 2, "the prompt is empty"), (None, 2, "the prompt is empty"),
    ("a cat", 0, "from 1 to 64"), ("a cat", 2.5, "whole number"), ("a cat", 65, "from 1 to 64")])
def test_text_to_image_bad_inputs(demo, prompt, num, words):
    with pytest.raises(ARPGError, match=words):
        demo.run_t2i(prompt, num, demo.text_to_image.sampling(steps=4), seed=0)


def test_text_to_image_tab_without_a_model_says_how_to_get_one(tiny, demo):
    with pytest.raises(ARPGError, match="--t2i-model"):
        tiny.run_t2i("a cat", 1, None, seed=0)
    with pytest.raises(ARPGError, match="steps must be a whole number"):
        demo.text_to_image.sampling(steps=2.5)


def test_the_page_has_the_text_to_image_tab(demo):
    app = build_app(demo, max_queue=4)
    ids = {getattr(b, "elem_id", None) for b in app.blocks.values()}
    assert {"t2i-prompt", "t2i-example", "t2i-run", "t2i-status", "t2i-grid"} <= ids
