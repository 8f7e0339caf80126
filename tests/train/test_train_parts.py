"""Trainer building blocks: sample stream, schedule, optimizer groups, EMA, checkpoint helpers."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from arpg import ARPG
from arpg.data.codes import CodeDataset, CodeIndex, write_code_set
from arpg.errors import ARPGError, CheckpointError
from arpg.train import checkpointing as ck
from arpg.train.optim import EMA, WarmupCosine, build_optimizer, param_groups, scaled_lr, warmup_steps
from arpg.train.stream import SampleStream
from arpg.model.config import get_preset
from arpg.train.config import check_init_config, resolve_model_config


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(2)
    write_code_set(tmp_path / "c", rng.integers(0, 16, (30, 4, 16)), rng.integers(0, 4, 30), vocab_size=16,
                   class_names=list("abcd"), shard_size=7)
    return CodeDataset(tmp_path / "c", seed=9)


def test_stream_positions_partition_the_global_batch(dataset):
    s = SampleStream(dataset, seed=9)
    G, world, accum = 12, 2, 3
    b = G // (world * accum)
    for step in (0, 5):
        got = np.concatenate([s.positions(step, m, r, world, accum, b) for m in range(accum) for r in range(world)])
        assert np.array_equal(np.sort(got), np.arange(step * G, (step + 1) * G))


def test_stream_epochs_visit_every_sample_once(dataset):
    s = SampleStream(dataset, seed=9)
    idx, ep = s.indices(np.arange(90))
    for e in range(3):
        assert sorted(idx[ep == e].tolist()) == list(range(30))
    assert not np.array_equal(idx[:30], idx[30:60])  # reshuffled each epoch


def test_stream_orders_and_dropout_depend_only_on_position(dataset):
    s = SampleStream(dataset, seed=9, class_dropout=0.25)
    pos = np.arange(100, 140)
    o = s.orders(pos, 16)
    assert all(sorted(row.tolist()) == list(range(16)) for row in o)
    assert torch.equal(s.orders(pos[10:20], 16), o[10:20])  # batching does not matter
    assert not torch.equal(o[0], o[1])
    t1, l1, o1, d1 = s.batch(pos)
    t2, l2, o2, d2 = SampleStream(dataset, seed=9, class_dropout=0.25).batch(pos)
    assert torch.equal(t1, t2) and torch.equal(l1, l2) and torch.equal(o1, o2) and torch.equal(d1, d2)
    drop = s.dropped(np.arange(20_000)).float().mean().item()
    assert abs(drop - 0.25) < 0.02
    assert d1.any() and (~d1).any() and (l1 >= 0).all()  # labels stay real: the model does the dropping


def test_warmup_cosine_schedule():
    sched = WarmupCosine(base_lr=4e-4, min_lr=1e-5, warmup=25, total=100)
    lrs = [sched(s) for s in range(100)]
    assert 0 < lrs[0] < lrs[1] and lrs[24] == pytest.approx(4e-4)
    assert all(a > b for a, b in zip(lrs[25:-1], lrs[26:]))  # strictly decreasing after warm-up
    assert lrs[99] == pytest.approx(1e-5)
    assert lrs[62] == pytest.approx(1e-5 + (4e-4 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 37 / 74)))
    assert scaled_lr(1e-4, 1024) == pytest.approx(4e-4)
    assert warmup_steps(0.25, 1000) == 250 and warmup_steps(40, 1000) == 40 and warmup_steps(0, 10) == 0
    assert WarmupCosine(1.0, 0.1, 0, 10)(0) == pytest.approx(1.0)


def test_weight_decay_only_on_matrices():
    torch.manual_seed(0)
    model = ARPG.from_preset("ARPG-nano")
    groups = param_groups(model, 0.05)
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and all(p.dim() < 2 for p in groups[1]["params"])
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    assert any(p is model.embeddings.weight for p in groups[0]["params"])
    assert any(p is model.norm.weight for p in groups[1]["params"])
    opt = build_optimizer(model, 1e-3)
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_ema_update_and_swap():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    ema = EMA(m, 0.9)
    start = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update()
    torch.testing.assert_close(ema.shadow[0], start + 0.1)
    now = m.weight.detach().clone()
    with ema.swapped_in():
        torch.testing.assert_close(m.weight.detach(), start + 0.1)
    assert torch.equal(m.weight.detach(), now)
    with pytest.raises(ARPGError):
        EMA(m, 1.0)


def test_model_config_adapts_to_codes():
    idx = CodeIndex(num_samples=1, grid_size=8, vocab_size=512, num_crops=1, class_names=list("abc"), shards=[])
    cfg, notes = resolve_model_config("ARPG-tiny", {}, idx)
    assert (cfg.grid_size, cfg.vocab_size, cfg.num_classes) == (8, 512, 3) and "vocab_size=512" in notes[0]
    with pytest.raises(ARPGError, match="grid_size=8 but the model config says grid_size=4"):
        resolve_model_config("ARPG-tiny", {"grid_size": 4}, idx)
    cfg, notes = resolve_model_config("ARPG-tiny", {"num_classes": 10, "vocab_size": 512}, idx)
    assert cfg.num_classes == 10 and notes == []


def test_checkpoint_helpers(tmp_path):
    for step in (3, 6, 9):
        ck.save_checkpoint({"format": ck.FORMAT, "step": step, "x": torch.randn(3)}, tmp_path, step, keep=2)
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [6, 9]
    (ck.checkpoint_dir(tmp_path) / ".step-00000012.pt.abc.tmp").write_bytes(b"torn")
    assert ck.latest_checkpoint(tmp_path).name == "step-00000009.pt"
    assert ck.remove_stale_temp_files(tmp_path) == 1
    assert ck.load_checkpoint(ck.latest_checkpoint(tmp_path))["step"] == 9
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an ARPG training checkpoint"):
        ck.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 50)
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a torch file"):
        ck.load_checkpoint(tmp_path / "junk.pt")
    diffs = ck.describe_differences({"lr": 1e-4, "betas": [0.9, 0.95], "seed": 0},
                                    {"lr": 2e-4, "betas": [0.9, 0.99], "seed": 0})
    assert diffs == ["betas (0.9, 0.95) (checkpoint) vs (0.9, 0.99) (now)", "lr 0.0001 (checkpoint) vs 0.0002 (now)"]


def test_rng_capture_restore_roundtrip(tmp_path):
    state = ck.capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    a = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(5)
    ck.restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_preview_grid_layout(tmp_path):
    """Preview grids: ceil(sqrt(N)) columns, no gaps, black fill, the published uint8 conversion."""
    from arpg.util.images import make_grid, to_pil, to_uint8

    x = torch.rand(5, 3, 4, 6) * 2 - 1
    to_pil(make_grid(to_uint8(x), pad=0, fill=0)).save(tmp_path / "g.png")
    im = np.asarray(Image.open(tmp_path / "g.png"))
    assert im.shape == (2 * 4, 3 * 6, 3)
    want = (x[4] * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(im[4:8, 6:12], want) and not im[4:8, 12:].any()


def test_init_weights_with_a_different_shapeless_config_are_refused():
    model_cfg = get_preset("ARPG-nano", class_rope="identity", class_queries=True)
    same = model_cfg.to_dict()
    check_init_config(same, model_cfg, "w.safetensors")
    check_init_config(None, model_cfg, "released.pt")  # no stored config: nothing to compare
    published = get_preset("ARPG-nano").to_dict()
    with pytest.raises(ARPGError, match=r"class_rope='zero' \(model: 'identity'\); class_queries=False"):
        check_init_config(published, model_cfg, "w.safetensors")
    old_file = {k: v for k, v in published.items() if k not in ("class_rope", "class_queries")}
    with pytest.raises(ARPGError, match="--set FIELD=VALUE"):  # saved before the fields existed: defaults
        check_init_config(old_file, model_cfg, "w.safetensors")
    check_init_config(old_file, get_preset("ARPG-nano"), "w.safetensors")


def test_both_trainers_share_one_checkpoint_format(tmp_path):
    """One format, one naming scheme: a kind tag tells ARPG and tokenizer runs apart, and each loader
    refuses the other's files."""
    ck.save_checkpoint({"step": 1}, tmp_path / "a", 1, kind="arpg")
    ck.save_checkpoint({"step": 2}, tmp_path / "v", 2, kind="vq")
    a, v = ck.latest_checkpoint(tmp_path / "a"), ck.latest_checkpoint(tmp_path / "v")
    assert (a.name, v.name) == ("step-00000001.pt", "step-00000002.pt")
    assert ck.load_checkpoint(a)["format"] == ck.load_checkpoint(v, kind="vq")["format"] == ck.FORMAT
    with pytest.raises(CheckpointError, match="not an ARPG training checkpoint"):
        ck.load_checkpoint(v)
    with pytest.raises(CheckpointError, match="not an arpg train-vq checkpoint"):
        ck.load_checkpoint(a, kind="vq")


def test_model_forward_owns_loss_and_class_dropout():
    """The loss and class dropout live in ARPG.forward: an explicit drop mask equals null labels, and the
    loss equals cross-entropy of the returned logits."""
    import torch.nn.functional as F

    from arpg import ARPG

    torch.manual_seed(0)
    model = ARPG.from_preset("ARPG-nano", class_dropout=0.5).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    tokens = torch.randint(0, 16, (6, 16))
    labels = torch.randint(0, 4, (6,))
    orders = torch.stack([torch.randperm(16) for _ in range(6)])
    drop = torch.tensor([True, False, True, False, False, True])
    masked = model(tokens, labels, orders, drop_labels=drop)
    nulled = model(tokens, torch.where(drop, torch.full_like(labels, -1), labels), orders)
    assert torch.allclose(masked, nulled)
    loss = model(tokens, labels, orders, drop_labels=drop, return_loss=True)
    want = F.cross_entropy(masked.reshape(-1, 16), tokens.gather(1, orders).reshape(-1))
    assert torch.allclose(loss, want) and torch.allclose(model.loss(tokens, labels, orders), F.cross_entropy(
        model(tokens, labels, orders).reshape(-1, 16), tokens.gather(1, orders).reshape(-1)))
