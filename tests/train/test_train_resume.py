"""Trainer end to end on a nano model: exact resume, guard rails, logs, exports."""

import json
import math

import numpy as np
import pytest
import torch

from arpg.model.weights import load_model, read_checkpoint
from arpg.data.codes import write_code_set
from arpg.errors import ARPGError
from arpg.train import checkpointing as ck
from arpg.train.metrics import read_log
from arpg.train.config import TrainConfig
from arpg.train.trainer import NonFiniteLossError, Trainer, train



@pytest.fixture
def codes(tmp_path):
    rng = np.random.default_rng(7)
    N, K, n = 48, 3, 16
    labels = rng.integers(0, 4, N)
    # Class-dependent codes so the loss can actually fall.
    base = rng.integers(0, 16, (4, n))
    codes = np.where(rng.random((N, K, n)) < 0.7, base[labels][:, None, :], rng.integers(0, 16, (N, K, n)))
    write_code_set(tmp_path / "codes", codes, labels, vocab_size=16, class_names=list("abcd"), shard_size=20)
    return tmp_path / "codes"


def _cfg(codes, out, **kw):
    base = dict(codes=str(codes), out=str(out), preset="ARPG-nano", batch_size=8, steps=10, lr=0.05, min_lr=1e-3,
                warmup=0.2, save_every=4, log_every=1, progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


# Dropout layers on, class dropout high, EMA and accumulation on: every piece of state must come back.
STATEFUL = dict(overrides={"resid_dropout": 0.1, "ffn_dropout": 0.1, "class_dropout": 0.3}, ema=0.9, grad_accum=2)


def test_interrupted_and_resumed_run_matches_uninterrupted(codes, tmp_path):
    full = train(_cfg(codes, tmp_path / "full", **STATEFUL))
    assert full.steps == 10 and len(full.losses) == 10

    # Crash after step 6: the newest checkpoint is step 4, steps 5-6 are lost.
    class Crashing(Trainer):
        def train_step(self):
            if self.step == 6:
                raise KeyboardInterrupt
            return super().train_step()

    with pytest.raises(KeyboardInterrupt):
        Crashing(_cfg(codes, tmp_path / "part", **STATEFUL)).fit()
    assert [r["step"] for r in read_log(tmp_path / "part")] == list(range(1, 7))
    assert ck.latest_checkpoint(tmp_path / "part").name == "step-00000004.pt"

    resumed = train(_cfg(codes, tmp_path / "part", resume="auto", **STATEFUL))
    assert sorted(resumed.losses) == list(range(5, 11))
    for s in range(5, 11):
        assert resumed.losses[s] == full.losses[s], f"step {s}: {resumed.losses[s]} != {full.losses[s]}"
    # Final weights identical too (raw and EMA).
    a, _ = read_checkpoint(tmp_path / "full" / "final.safetensors")
    b, _ = read_checkpoint(tmp_path / "part" / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, _ = read_checkpoint(tmp_path / "full" / "final-ema.safetensors")
    b, _ = read_checkpoint(tmp_path / "part" / "final-ema.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The log was cut back to the checkpoint and continued: one record per step, in order.
    assert [r["step"] for r in read_log(tmp_path / "part")] == list(range(1, 11))


def test_run_outputs_logs_checkpoints_and_exports(codes, tmp_path):
    out = tmp_path / "run"
    res = train(_cfg(codes, out, steps=12, keep=2, ema=0.8, log_every=3))
    recs = read_log(out)
    assert [r["step"] for r in recs] == [3, 6, 9, 12]
    for r in recs:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(r)
        assert r["tokens_per_s"] > 0 and math.isfinite(r["loss"])
    assert recs[-1]["loss"] < recs[0]["loss"]  # it learns the class-dependent codes
    # keep=2: only the two newest of 4, 8, 12 remain
    assert [s for s, _ in ck.list_checkpoints(out)] == [8, 12]
    state = ck.load_checkpoint(res.checkpoint)
    assert state["step"] == 12 and state["ema"] is not None and len(state["rng"]) == 1
    assert {"model", "optimizer", "scheduler", "data", "config", "args"} <= set(state)
    assert state["data"]["position"] == 12 * 8
    # Exports carry the real config (class dropout of the preset, not the trainer's 0).
    raw = load_model(res.final_weights)
    ema = load_model(res.final_ema_weights)
    assert raw.config.class_dropout == pytest.approx(0.1)
    assert any(not torch.equal(p, q) for p, q in zip(raw.parameters(), ema.parameters()))
    # The training checkpoint itself is loadable as a model (EMA weights preferred).
    m = load_model(res.checkpoint)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), ema.parameters()))
    run = json.loads((out / "run.json").read_text())
    assert run["base_lr"] == pytest.approx(0.05 * 8 / 256) and run["micro_batch"] == 8


def test_resume_with_incompatible_config_is_refused(codes, tmp_path):
    out = tmp_path / "run"
    train(_cfg(codes, out, steps=4))
    with pytest.raises(ARPGError) as e:
        Trainer(_cfg(codes, out, steps=4, resume="auto", lr=0.01, overrides={"dim": 64}))
    msg = str(e.value)
    assert "\n" not in msg and "cannot resume" in msg
    assert "lr 0.05 (checkpoint) vs 0.01 (now)" in msg and "dim 32 (checkpoint) vs 64 (now)" in msg


def test_init_from_weights_with_the_class_conditioning_options(codes, tmp_path):
    cond = {"class_rope": "identity", "class_queries": True}
    first = train(_cfg(codes, tmp_path / "a", steps=4, overrides=cond))
    assert load_model(first.final_weights).config.class_queries is True
    with pytest.raises(ARPGError, match="class_rope='identity' \\(model: 'zero'\\)"):
        Trainer(_cfg(codes, tmp_path / "b", init=str(first.final_weights)))
    second = Trainer(_cfg(codes, tmp_path / "c", init=str(first.final_weights), overrides=cond))
    start = load_model(first.final_weights)
    assert all(torch.equal(p, q) for p, q in zip(second.model.parameters(), start.parameters()))


def test_fresh_start_into_a_run_with_checkpoints_is_refused(codes, tmp_path):
    out = tmp_path / "run"
    train(_cfg(codes, out, steps=4))
    with pytest.raises(ARPGError, match="--resume auto"):
        Trainer(_cfg(codes, out, steps=4))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(codes, tmp_path, monkeypatch):
    from arpg.model import ARPG

    calls = {"n": 0}
    forward = ARPG.forward

    def poisoned(self, *a, **k):
        calls["n"] += 1
        out = forward(self, *a, **k)
        return out * float("nan") if calls["n"] == 6 else out

    monkeypatch.setattr(ARPG, "forward", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as e:
        train(_cfg(codes, out, steps=10, save_every=2))
    msg = str(e.value)
    assert "\n" not in msg and "loss is nan at step 6" in msg and "step-00000004.pt" in msg
    assert [s for s, _ in ck.list_checkpoints(out)] == [2, 4]
    state = ck.load_checkpoint(ck.latest_checkpoint(out))
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_bf16_autocast_trains(codes, tmp_path):
    res = train(_cfg(codes, tmp_path / "run", steps=3, dtype="bf16", save_every=100))
    assert all(math.isfinite(v) for v in res.losses.values())
    assert json.loads((tmp_path / "run" / "run.json").read_text())["amp_dtype"] == "bfloat16"


def test_cli_train_and_one_line_errors(codes, tmp_path, capsys):
    from arpg.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "--codes", str(codes), "--out", str(out), "--preset", "ARPG-nano", "--steps", "2",
               "--batch-size", "4", "--no-progress", "--set", "resid_dropout=0.0"])
    assert rc == 0 and (out / "final.safetensors").exists()
    rc = main(["train", "--codes", str(codes), "--out", str(out), "--preset", "ARPG-nano", "--steps", "2",
               "--batch-size", "4", "--no-progress", "--resume", "auto", "--set", "dim=64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "dim 32 (checkpoint) vs 64 (now)" in err[0]
    rc = main(["train", "--codes", str(codes), "--out", str(tmp_path / "x"), "--preset", "ARPG-nano",
               "--batch-size", "4", "--no-progress"])
    assert rc == 2 and "--steps or --epochs" in capsys.readouterr().err


def test_sample_grid_with_tokenizer_does_not_disturb_training(codes, tmp_path):
    from PIL import Image

    from arpg.vq import VQTokenizer, save_tokenizer

    torch.manual_seed(0)
    tok = tmp_path / "vq.safetensors"
    save_tokenizer(VQTokenizer.from_preset("VQ-tiny"), tok)  # 4x downsampling: 4x4 codes -> 16 px
    kw = dict(steps=4, save_every=100, overrides={"resid_dropout": 0.2})
    plain = train(_cfg(codes, tmp_path / "plain", **kw))
    sampled = train(_cfg(codes, tmp_path / "sampled", sample_every=2, sample_count=4, sample_steps=4,
                         tokenizer=str(tok), **kw))
    assert sampled.losses == plain.losses
    grid = np.asarray(Image.open(tmp_path / "sampled" / "samples" / "step-00000004.png"))
    assert grid.shape == (32, 32, 3)
    codes4 = np.load(tmp_path / "sampled" / "samples" / "step-00000002.npy")
    assert codes4.shape == (4, 16) and codes4.min() >= 0 and codes4.max() < 16


def test_gradient_accumulation_matches_the_full_batch(codes, tmp_path):
    one = train(_cfg(codes, tmp_path / "one", steps=4, save_every=100))
    acc = train(_cfg(codes, tmp_path / "acc", steps=4, save_every=100, grad_accum=4))
    for s in one.losses:
        assert acc.losses[s] == pytest.approx(one.losses[s], rel=1e-5)
    # --epochs: 1.5 passes over 48 samples at batch 8 = 9 steps
    assert Trainer(_cfg(codes, tmp_path / "ep", steps=None, epochs=1.5)).total_steps == 9


def test_tensorboard_is_optional(codes, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ARPGError, match=r"pip install 'arpg\[tensorboard\]'"):
            train(_cfg(codes, tmp_path / "tb", steps=1, tensorboard=True))
    else:
        train(_cfg(codes, tmp_path / "tb", steps=2, tensorboard=True))
        assert any((tmp_path / "tb" / "tensorboard").iterdir())


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(codes, tmp_path):
    """`--compile` changes how the step runs, not what it computes: losses, weights and EMA track the eager
    run's, and the saved files keep their plain state-dict keys."""
    kw = dict(steps=4, lr=0.005, ema=0.9, grad_accum=2)
    tr = Trainer(_cfg(codes, tmp_path / "probe", compile=True, **kw))
    assert isinstance(tr.wrapped, torch._dynamo.eval_frame.OptimizedModule)  # the flag really compiles
    eager = train(_cfg(codes, tmp_path / "eager", **kw))
    comp = train(_cfg(codes, tmp_path / "comp", compile=True, **kw))
    for s in range(1, 5):
        assert math.isclose(eager.losses[s], comp.losses[s], rel_tol=1e-3, abs_tol=1e-4), s
    for a, b in ((eager.final_weights, comp.final_weights), (eager.final_ema_weights, comp.final_ema_weights)):
        sd_eager, _ = read_checkpoint(a)
        sd_comp, _ = read_checkpoint(b)
        assert sd_eager.keys() == sd_comp.keys()
        for k in sd_eager:
            # Adam's first steps move each weight by about lr whatever the gradient's size, so a gradient
            # near zero may flip sign between the two runs: allow a few lr-sized steps.
            torch.testing.assert_close(sd_comp[k], sd_eager[k], rtol=0, atol=4 * kw["lr"])


def test_compile_flag_reaches_the_config():
    from arpg.cli import build_parser
    from arpg.commands.train import config_from_args

    args = build_parser().parse_args(["train", "--codes", "C", "--out", "O", "--compile"])
    assert config_from_args(args).compile is True
    args = build_parser().parse_args(["train", "--codes", "C", "--out", "O"])
    assert config_from_args(args).compile is False


def test_compile_without_a_cpp_compiler_is_one_clear_error(codes, tmp_path, monkeypatch):
    import arpg.train.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod.shutil, "which", lambda name: None)
    with pytest.raises(ARPGError, match="needs a C\\+\\+ compiler"):
        Trainer(_cfg(codes, tmp_path / "run", compile=True, device="cpu"))


@pytest.mark.parametrize("batch", [4, 16, 256, 1024])
def test_lr_schedule_never_rises_at_any_batch(codes, tmp_path, batch):
    """The floor is scaled like the peak (both per 256 samples), so the decay only falls after warm-up."""
    t = Trainer(TrainConfig(codes=str(codes), out=str(tmp_path / f"b{batch}"), preset="ARPG-nano", batch_size=batch,
                            steps=50, lr=1e-4, min_lr=1e-5, warmup=0.2, progress=False))
    lrs = [t.schedule(s) for s in range(50)]
    peak = max(lrs)
    assert peak == pytest.approx(1e-4 * batch / 256)
    after = lrs[lrs.index(peak):]
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert after[-1] == pytest.approx(1e-5 * batch / 256)


def test_floor_above_peak_is_refused(codes, tmp_path):
    with pytest.raises(ARPGError, match="above --lr"):
        TrainConfig(codes=str(codes), out=str(tmp_path), preset="ARPG-nano", steps=5, lr=1e-5, min_lr=1e-4).validate()


def _cli_train(codes, out, *extra):
    from arpg.cli import main

    return main(["train", "--codes", str(codes), "--out", str(out), "--no-progress", *extra])


def test_resume_takes_the_checkpoints_settings_and_refuses_contradictions(codes, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli_train(codes, out, "--preset", "ARPG-nano", "--steps", "4", "--batch-size", "4", "--lr", "0.02",
                      "--seed", "5", "--save-every", "2") == 0
    # Finished: a plain resume says how to extend.
    capsys.readouterr()
    assert main_resume(out) == 2
    assert "already at step 4; pass a larger --steps" in capsys.readouterr().err
    # Contradicting flags are refused, naming each.
    assert main_resume(out, "--steps", "6", "--lr", "0.03", "--seed", "6") == 2
    err = capsys.readouterr().err
    assert "lr 0.02 (checkpoint) vs 0.03 (now)" in err and "seed 5 (checkpoint) vs 6 (now)" in err
    # Same values are fine; the rest comes from the checkpoint (no --codes, --preset, --batch-size, --lr).
    assert main_resume(out, "--steps", "6", "--lr", "0.02") == 0
    info = json.loads((out / "run.json").read_text())
    assert info["args"]["batch_size"] == 4 and info["args"]["seed"] == 5 and info["args"]["preset"] == "ARPG-nano"
    steps = [r["step"] for r in read_log(out)]
    assert steps[-1] == 6 and steps == sorted(set(steps))


def main_resume(out, *extra):
    from arpg.cli import main

    return main(["train", "--out", str(out), "--no-progress", "--resume", "auto", *extra])


def test_extended_run_continues_at_the_floor(codes, tmp_path):
    """Past the original length the checkpoint's schedule stays at min_lr; before it, nothing changes."""
    out = tmp_path / "run"
    base = dict(lr=0.05, min_lr=1e-3, batch_size=8, warmup=0.2, save_every=4)
    first = train(_cfg(codes, out, steps=8, **base))
    t = Trainer(_cfg(codes, out, steps=12, resume="auto", **base))
    assert t.step == 8 and t.schedule.total == 8
    floor = 1e-3 * 8 / 256
    assert [t.schedule(s) for s in range(8, 12)] == pytest.approx([floor] * 4)
    assert first.steps == 8
    res = t.fit()
    assert res.steps == 12 and [r["lr"] for r in read_log(out) if r["step"] > 8] == pytest.approx([floor] * 4)
