"""Weights by name, hf:// and Hub repositories through the real huggingface_hub code path, on a Hugging Face
cache laid out here (no network); save_pretrained / from_pretrained / push_to_hub; model cards."""

from __future__ import annotations

import json
import socket

import pytest
import torch

pytest.importorskip("huggingface_hub")

from arpg import ARPG, VQTokenizer, load_model, load_tokenizer  # noqa: E402
from arpg.cli import main  # noqa: E402
from arpg.errors import ARPGError  # noqa: E402
from arpg.util import hub  # noqa: E402
from arpg.util.pretrained import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _tiny(seed=0, **overrides):
    torch.manual_seed(seed)
    model = ARPG.from_preset("ARPG-tiny", **overrides)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return model.eval()


def _inputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = model.config.n_cells
    tokens = torch.randint(0, model.config.vocab_size, (3, n), generator=g)
    labels = torch.randint(0, model.config.num_classes, (3,), generator=g)
    orders = torch.stack([torch.randperm(n, generator=g) for _ in range(3)])
    return tokens, labels, orders


def _snapshot(cache, repo: str):
    """The snapshot folder of ``repo`` in a cache laid out as huggingface_hub lays it out."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


@pytest.fixture
def cache(tmp_path, monkeypatch):
    c = tmp_path / "hf-cache"
    c.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(c))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return c


def test_published_names_point_at_the_released_files():
    assert hub.PUBLISHED == {"ARPG-L": ("hp-l33/ARPG", "arpg_300m.pt"), "ARPG-XL": ("hp-l33/ARPG", "arpg_700m.pt"),
                             "ARPG-XXL": ("hp-l33/ARPG", "arpg_1b.pt"),
                             "VQ-16": ("FoundationVision/LlamaGen", "vq_ds16_c2i.pt")}
    assert hub.published_name("arpg-xl") == "ARPG-XL" and hub.published_name("ARPG-M") is None


def test_a_published_format_file_loads_by_name_from_the_cache(cache, monkeypatch):
    """A released-layout .pt (weights under "state_dict") in the cache, loaded through hf_hub_download."""
    model = _tiny(grid_size=16, n_head=1)  # head_dim 64, as the released files have (inferred from shapes)
    torch.save({"state_dict": model.state_dict()}, _snapshot(cache, "hp-l33/ARPG") / "arpg_tiny.pt")
    monkeypatch.setitem(hub.PUBLISHED, "ARPG-TEST", ("hp-l33/ARPG", "arpg_tiny.pt"))
    loaded = load_model("ARPG-test")
    t, lab, o = _inputs(model)
    assert torch.equal(loaded(t, lab, o), model(t, lab, o))
    # The same file by address.
    assert torch.equal(load_model("hf://hp-l33/ARPG/arpg_tiny.pt")(t, lab, o), model(t, lab, o))


def test_a_repository_folder_loads_with_from_pretrained(cache):
    model = _tiny(seed=3)
    model.save_pretrained(_snapshot(cache, "someone/arpg-tiny"))
    t, lab, o = _inputs(model)
    for loaded in (ARPG.from_pretrained("someone/arpg-tiny"), load_model("someone/arpg-tiny")):
        assert torch.equal(loaded(t, lab, o), model(t, lab, o))
    tok = VQTokenizer.from_preset("VQ-tiny").eval()
    tok.save_pretrained(_snapshot(cache, "someone/vq-tiny"))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(load_tokenizer("someone/vq-tiny").encode(x), tok.encode(x))


def test_save_pretrained_round_trip_and_card(tmp_path):
    from arpg.sampling import SamplingConfig, recommended_sampling

    model = _tiny(seed=5)
    model.sampling = SamplingConfig(steps=16, cfg_scale=2.0)
    folder = model.save_pretrained(tmp_path / "m", card={"training_data": "random", "quality": {"acc": 0.5}})
    assert sorted(p.name for p in folder.iterdir()) == [CARD_FILE, CONFIG_FILE, WEIGHTS_FILE]
    back = ARPG.from_pretrained(folder)
    t, lab, o = _inputs(model)
    assert torch.equal(back(t, lab, o), model(t, lab, o))
    assert recommended_sampling(back) == model.sampling
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["model_type"] == "arpg" and config["config"] == model.config.to_dict()
    card = (folder / CARD_FILE).read_text()
    for words in ("license: mit", "pipeline_tag: unconditional-image-generation", "## Architecture",
                  "## Parameters", f"{sum(p.numel() for p in model.parameters()):,}", "## Training data", "random",
                  "## Measured quality", '"acc": 0.5', "## Recommended sampling settings", '"cfg_scale": 2.0',
                  "## Training command", "Not recorded."):
        assert words in card, words
    tok = VQTokenizer.from_preset("VQ-tiny").eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    tok_back = VQTokenizer.from_pretrained(tok.save_pretrained(tmp_path / "t"))
    assert torch.equal(tok_back.decode(tok.encode(x)), tok.decode(tok.encode(x)))
    assert "pipeline_tag: image-to-image" in (tmp_path / "t" / CARD_FILE).read_text()
    with pytest.raises(ARPGError, match="holds a 'vq' model, not 'arpg'"):
        ARPG.from_pretrained(tmp_path / "t")


def test_convert_a_released_pt_to_a_folder_and_back(tmp_path, capsys):
    model = _tiny(seed=7, grid_size=16, n_head=1)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "arpg_released.pt")
    assert main(["convert", str(tmp_path / "arpg_released.pt"), str(tmp_path / "folder")]) == 0
    assert main(["convert", str(tmp_path / "folder"), str(tmp_path / "back.safetensors")]) == 0
    t, lab, o = _inputs(model)
    for source in (tmp_path / "folder", tmp_path / "back.safetensors"):
        assert torch.equal(load_model(source)(t, lab, o), model(t, lab, o))
    assert "Converted by `arpg convert`" in (tmp_path / "folder" / CARD_FILE).read_text()
    assert main(["info", str(tmp_path / "folder")]) == 0 and "ARPG dim=64" in capsys.readouterr().out


def test_shipped_demo_weights_are_pretrained_folders():
    from arpg.demo.assets import demo_paths
    from arpg.sampling import get_recipe, recommended_sampling

    paths = demo_paths()
    model = ARPG.from_pretrained(paths.model)
    assert recommended_sampling(model) == get_recipe("demo").sampling
    assert VQTokenizer.from_pretrained(paths.tokenizer).codebook_size == model.config.vocab_size
    card = (paths.model / CARD_FILE).read_text()
    assert "## Training command" in card and "arpg train " in card and "classifier_heldout_accuracy" in card


def test_offline_and_missing_is_one_line(cache, capsys):
    with pytest.raises(ARPGError) as e:
        load_model("ARPG-L")
    msg = str(e.value)
    assert "arpg_300m.pt of hp-l33/ARPG is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in msg
    assert "huggingface-cli download hp-l33/ARPG arpg_300m.pt" in msg and "local path" in msg
    assert main(["info", "VQ-16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vq_ds16_c2i.pt of FoundationVision/LlamaGen" in err


def test_unreachable_hub_uses_the_cache_only_and_fails_fast(cache, monkeypatch):
    """No network attempt when the probe says the Hub is unreachable: the download is asked of the cache only.
    (Asserted on the call, not on a wall-clock bound, which would follow the host's load.)"""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: False)
    real, asked = huggingface_hub.hf_hub_download, []

    def recording(*args, **kwargs):
        asked.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", recording)
    with pytest.raises(ARPGError, match="the Hub is not reachable from this machine"):
        load_model("ARPG-XL")
    assert asked == [True]


def test_reachability_probe_respects_its_timeout(monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: refused, so False
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not hub.hub_reachable(f"http://127.0.0.1:{port}", timeout=1.0)
    seen = []

    def hanging(address, timeout=None):  # a host that never answers: the probe must pass its timeout on
        seen.append((address, timeout))
        raise socket.timeout("timed out")

    monkeypatch.setattr(hub.socket, "create_connection", hanging)
    assert not hub.hub_reachable("https://example.invalid", timeout=0.7)
    assert seen == [(("example.invalid", 443), 0.7)]


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    """Tested up to the upload call (no network here): the repository is created and the folder uploaded
    holds config, weights and card."""
    import huggingface_hub

    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create", repo_id, kw.get("private")))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        from pathlib import Path

        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return "https://huggingface.co/me/x/commit/1"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = _tiny().push_to_hub("me/x", private=True)
    assert url.endswith("/commit/1")
    assert calls == [("create", "me/x", True), ("upload", "me/x", [CARD_FILE, CONFIG_FILE, WEIGHTS_FILE])]


def test_missing_local_files_are_not_mistaken_for_repositories(tmp_path):
    with pytest.raises(ARPGError, match="checkpoint not found"):
        load_model("runs/final.safetensors")
    assert not hub.looks_like_repo("runs/final.safetensors") and hub.looks_like_repo("owner/repo")
    (tmp_path / "runs").mkdir()
    assert not hub.looks_like_repo(str(tmp_path / "runs" / "final"))  # an absolute path has more parts anyway
    import os

    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert not hub.looks_like_repo("runs/final")  # under an existing local folder: a local path
    finally:
        os.chdir(cwd)
