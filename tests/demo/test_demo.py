"""The shipped demo weights and `arpg demo` (reduced setting)."""

import json
from pathlib import Path

import numpy as np
import torch

from arpg import generate, load_model
from arpg.model.config import ARPGConfig
from arpg.demo.report import run_demo
from arpg.demo.assets import demo_card, demo_paths
from arpg.vq import load_tokenizer, to_uint8


def test_shipped_weights_load_and_generate():
    paths = demo_paths()
    model = load_model(paths.model)
    tok = load_tokenizer(paths.tokenizer)
    assert model.config.vocab_size == tok.codebook_size and model.config.num_classes == 10
    codes = generate(model, torch.tensor([3]), steps=4, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    img = to_uint8(tok.decode(codes, grid=(model.config.grid_size,) * 2))
    assert img.shape == (1, 32, 32, 1) and img.dtype == np.uint8
    assert img.std() > 5  # a silhouette on a background, not a flat image


def test_model_card_describes_the_weights():
    card = demo_card()
    model = load_model(demo_paths().model)
    # The card was written before the ControlARPG fields existed: they take their defaults (off).
    assert ARPGConfig.from_dict(card["arpg_config"]).to_dict() == model.config.to_dict()
    assert card["commands"] and card["wall_time_s"] and "quality" in card


def test_demo_runs_end_to_end_reduced(tmp_path):
    timings = run_demo(tmp_path, samples_per_class=1, steps=4, n_edit=1, log=lambda *_: None)
    for name in ("samples.png", "inpaint.png", "edit.png", "outpaint.png", "expand.png", "control.png", "t2i.png",
                 "index.html", "timings.json"):
        assert (tmp_path / name).exists(), name
    html = (tmp_path / "index.html").read_text()
    assert "samples.png" in html and "expand.png" in html and "t2i.png" in html and "Held-out (colour, animal) pairs" in html
    assert set(json.loads((tmp_path / "timings.json").read_text())) >= {"generate", "inpaint", "t2i", "total"}
    assert timings["total"] > 0


def test_demo_leaves_grad_mode_alone(tmp_path):
    run_demo(tmp_path, samples_per_class=1, steps=2, n_edit=1, log=lambda *_: None)
    assert torch.is_grad_enabled()


def test_retrain_commands_parse_and_chain(tmp_path):
    """The recorded recipe must stay runnable: every command parses, and each one reads what the one
    before it writes."""
    from arpg.cli import build_parser
    from arpg.demo.retrain import FINAL, retrain_commands

    parser = build_parser()
    cmds = retrain_commands(str(tmp_path))
    for cmd in cmds:
        args = parser.parse_args(cmd)
        assert callable(args.func)
    vq, extract, train = cmds
    tok = str(tmp_path / "vq" / "tokenizer.safetensors")
    assert extract[extract.index("--tokenizer") + 1] == tok
    assert train[train.index("--codes") + 1] == extract[extract.index("--out") + 1]
    # The shipped file is the run's EMA export, so the run must keep an EMA.
    assert "--ema" in train and "ema" in FINAL.name
    assert FINAL.parts[0] == Path(train[train.index("--out") + 1]).name


def test_recorded_commands_parse_to_the_configs_retrain_runs(tmp_path):
    """Retraining calls the library, not the CLI; the command lines in the card must mean the same runs."""
    from arpg.cli import build_parser
    from arpg.commands import extract_codes, train, train_vq
    from arpg.demo.retrain import retrain_commands, retrain_configs

    parser = build_parser()
    vq_cmd, ex_cmd, tr_cmd = (parser.parse_args(c) for c in retrain_commands(str(tmp_path)))
    vq_cfg, ex_cfg, tr_cfg = retrain_configs(str(tmp_path))
    assert train_vq.config_from_args(vq_cmd) == vq_cfg
    assert extract_codes.config_from_args(ex_cmd) == ex_cfg
    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "tokenizer.safetensors").write_bytes(b"")  # train checks that its --tokenizer exists
    assert train.config_from_args(tr_cmd) == tr_cfg
