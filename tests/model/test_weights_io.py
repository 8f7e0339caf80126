import argparse
import pickle

import pytest
import torch
from safetensors.torch import save_file

from arpg import ARPG, CheckpointError, load_model, save_model
from arpg.model.weights import read_checkpoint
from arpg.cli import main


def _tiny(seed=0):
    torch.manual_seed(seed)
    m = ARPG.from_preset("ARPG-tiny")
    torch.nn.init.normal_(m.head.weight, std=0.1)
    return m.eval()


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _check_logits(a, b):
    tokens = torch.randint(0, 64, (2, 64))
    labels = torch.tensor([1, 2])
    orders = torch.stack([torch.randperm(64), torch.randperm(64)])
    assert torch.allclose(a(tokens, labels, orders), b(tokens, labels, orders))


@pytest.mark.parametrize("layout", ["state_dict", "model", "ema", "module", "bare", "ddp_prefix", "compile_prefix"])
def test_round_trip_pt_layouts(tmp_path, layout):
    m = _tiny()
    sd = m.state_dict()
    obj = {
        "state_dict": {"state_dict": sd},
        "model": {"model": sd, "optimizer": {}, "steps": 10, "args": argparse.Namespace(lr=1e-4, model="ARPG-L")},
        "ema": {"model": {k: torch.randn_like(v) for k, v in sd.items()}, "ema": sd},
        "module": {"module": sd},
        "bare": sd,
        "ddp_prefix": {"model": {f"module.{k}": v for k, v in sd.items()}},
        "compile_prefix": {"model": {f"_orig_mod.module.{k}": v for k, v in sd.items()}},
    }[layout]
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    loaded = load_model(path, preset="ARPG-tiny")
    assert _same(m, loaded)
    _check_logits(m, loaded)


def test_round_trip_safetensors_with_config(tmp_path):
    m = ARPG.from_preset("ARPG-tiny", grid_size=4, num_classes=7)
    path = tmp_path / "w.safetensors"
    save_model(m, path)
    loaded = load_model(path)  # architecture from the metadata, grid included
    assert loaded.config == m.config and _same(m, loaded)


def test_class_conditioning_options_survive_a_round_trip(tmp_path):
    torch.manual_seed(0)
    m = ARPG.from_preset("ARPG-tiny", class_rope="identity", class_queries=True).eval()
    torch.nn.init.normal_(m.head.weight, std=0.1)
    path = tmp_path / "w.safetensors"
    save_model(m, path)
    loaded = load_model(path)
    assert (loaded.config.class_rope, loaded.config.class_queries) == ("identity", True)
    assert torch.equal(loaded.rope, m.rope)  # the buffer is rebuilt from the config, not stored
    _check_logits(m, loaded)


def test_foreign_safetensors_infers_architecture(tmp_path):
    m = _tiny()
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    loaded = load_model(path, grid_size=8, head_dim=16)
    assert (loaded.config.dim, loaded.config.n_layer, loaded.config.n_head) == (64, 4, 4)
    assert loaded.config.num_classes == 10 and loaded.config.vocab_size == 64
    _check_logits(m, loaded)


def test_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(CheckpointError, match="unsafe to load") as e:
        read_checkpoint(path)
    assert "builtins.print" in str(e.value)


def _published_like(tmp_path, mutate):
    sd = dict(_tiny().state_dict())
    mutate(sd)
    path = tmp_path / "arpg_tiny.pt"
    torch.save({"state_dict": sd}, path)
    return path


def test_missing_tensor_one_line(tmp_path):
    path = _published_like(tmp_path, lambda sd: sd.pop("layers.to_k.weight"))
    with pytest.raises(CheckpointError) as e:
        load_model(path, preset="ARPG-tiny")
    msg = str(e.value)
    assert "missing 1: layers.to_k.weight" in msg and "\n" not in msg


def test_misshaped_tensor_names_shapes_and_preset(tmp_path):
    path = _published_like(tmp_path, lambda sd: sd.update({"norm.weight": torch.ones(65)}))
    with pytest.raises(CheckpointError) as e:
        load_model(path, preset="ARPG-tiny")
    msg = str(e.value)
    assert "mis-shaped 1: norm.weight file [65] vs model [64]" in msg and "\n" not in msg


def test_wrong_preset_suggests_the_right_one(tmp_path):
    path = _published_like(tmp_path, lambda sd: None)
    with pytest.raises(CheckpointError) as e:
        load_model(path, preset="ARPG-nano")
    msg = str(e.value)
    assert "suggest preset ARPG-tiny" in msg and "mis-shaped" in msg and "\n" not in msg


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("arpg info: error: argument input: file not found") and "\n" not in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    assert main(["info", str(junk)]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt, truncated or not a torch file" in err and "\n" not in err and "Traceback" not in err


def test_cli_convert(tmp_path, capsys):
    m = _tiny()
    torch.save({"state_dict": m.state_dict()}, tmp_path / "a.pt")
    assert main(["convert", str(tmp_path / "a.pt"), str(tmp_path / "a.safetensors"), "--preset", "ARPG-tiny"]) == 0
    assert _same(m, load_model(tmp_path / "a.safetensors"))


def test_written_files_follow_the_umask(tmp_path):
    """Weight files are readable by the group and others under the usual umask (not mkstemp's 0600)."""
    import os

    from arpg.vq import VQTokenizer, save_tokenizer

    old = os.umask(0o022)
    try:
        save_model(_tiny(), tmp_path / "m.safetensors")
        save_tokenizer(VQTokenizer.from_preset("VQ-tiny"), tmp_path / "t.safetensors")
    finally:
        os.umask(old)
    for name in ("m.safetensors", "t.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
