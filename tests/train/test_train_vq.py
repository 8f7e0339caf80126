import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from arpg.cli import main
from arpg.errors import ARPGError, CheckpointError
from arpg.vq import load_tokenizer
from arpg.data.images import BatchSchedule
from arpg.train.vq_config import TrainVQConfig
from arpg.train.vq_trainer import VQTrainer



def _make_folder(root, n_per_class=32, size=20, seed=0):
    """A small ImageNet-layout folder: coloured ellipses and rectangles on coloured backgrounds."""
    rng = np.random.default_rng(seed)
    for c, shape in enumerate(("ellipse", "rectangle")):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            bg, fg = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
            image = Image.new("RGB", (size, size), bg)
            lo = rng.integers(0, size // 2, 2)
            hi = lo + rng.integers(4, size // 2, 2)
            getattr(ImageDraw.Draw(image), shape)([int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])], fill=fg)
            image.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _make_folder(tmp_path_factory.mktemp("images"))


def _cfg(folder, out, **kw):
    base = dict(data=str(folder), out=str(out), preset="VQ-tiny", image_size=16, batch_size=8, lr=1e-3, warmup=10,
                log_every=50, eval_every=0, eval_images=64, ckpt_every=1000, reseed_every=50)
    return TrainVQConfig(**{**base, **kw})


def test_training_raises_psnr(folder, tmp_path):
    trainer = VQTrainer(_cfg(folder, tmp_path / "run", steps=200), progress=False)
    start = trainer.evaluate()
    records = trainer.run()
    end = records[-1]
    assert end["step"] == 200 and end["eval_psnr"] >= start["eval_psnr"] + 4.0, (start, end)
    assert end["eval_usage"] > 0.3  # no codebook collapse
    lines = [json.loads(s) for s in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [50, 100, 150, 200]
    assert {"loss", "recon", "codebook", "commit", "psnr", "usage", "lr"} <= set(lines[0])
    # The exported tokenizer and the final training checkpoint both load and encode like the trained model.
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    trainer.model.eval()
    for path in [tmp_path / "run" / "tokenizer.safetensors", *trainer.checkpoints()]:
        tok = load_tokenizer(path)
        assert tok.config == trainer.model.config
        assert torch.equal(tok.encode(x), trainer.model.encode(x))


def test_resume_continues_exactly(folder, tmp_path):
    # Small stand-in for VGG/LPIPS weights so the perceptual path is part of the resumed state too.
    g = torch.Generator().manual_seed(0)
    lpips = tmp_path / "standin.pt"
    torch.save({"features.0.weight": torch.randn(4, 3, 3, 3, generator=g), "features.0.bias": torch.zeros(4),
                "features.3.weight": torch.randn(8, 4, 3, 3, generator=g), "features.3.bias": torch.zeros(8)}, lpips)
    kw = dict(steps=8, batch_size=4, log_every=1, ckpt_every=4, keep=2, disc_start=2, reseed_every=3, hflip=True,
              lpips_weights=[str(lpips)], perceptual_weight=0.5)
    a = VQTrainer(_cfg(folder, tmp_path / "a", **kw), progress=False)
    a.run()
    b = VQTrainer(_cfg(folder, tmp_path / "b", **kw), progress=False)
    b.run(stop_at=6)  # "crash" after step 6: the last checkpoint is step 4
    assert [p.name for p in b.checkpoints()] == ["step-00000004.pt"]
    torch.manual_seed(999)  # a resumed process starts from different global RNG state
    b2 = VQTrainer(_cfg(folder, tmp_path / "b", **kw), resume="auto", progress=False)
    assert b2.step == 4
    b2.run()

    def log(run):
        return [{k: v for k, v in json.loads(s).items() if k != "elapsed_s"}
                for s in (tmp_path / run / "log.jsonl").read_text().splitlines()]

    assert [r["step"] for r in log("b")] == list(range(1, 9))
    assert log("a") == log("b")  # bit-identical losses, PSNR, usage and re-seed counts
    assert {"g_adv", "d_loss", "perceptual", "reseeded"} <= set().union(*log("a"))
    sa, sb = a.model.state_dict(), b2.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [p.name for p in b2.checkpoints()] == ["step-00000004.pt", "step-00000008.pt"]


def test_reseed_dead_codes(folder, tmp_path):
    trainer = VQTrainer(_cfg(folder, tmp_path / "r", steps=2, reseed_every=0), progress=False)
    trainer.run(stop_at=1)  # populates the optimiser state
    weight = trainer.model.quantize.embedding.weight
    before = weight.detach().clone()
    dead = torch.tensor([3, 10, 42])
    trainer.window_counts.fill_(5)
    trainer.window_counts[dead] = 0
    latent = torch.nn.functional.normalize(torch.randn(2, weight.shape[1], 4, 4), dim=1)
    assert trainer._reseed_dead_codes(latent, step=7) == 3
    alive = torch.ones(len(weight), dtype=torch.bool)
    alive[dead] = False
    assert torch.equal(weight[alive], before[alive])
    rows = latent.permute(0, 2, 3, 1).reshape(-1, weight.shape[1])
    cos = torch.nn.functional.normalize(weight[dead].detach(), dim=-1) @ rows.t()
    assert (cos.max(1).values > 0.99).all()  # each re-seeded code sits on a current encoder output
    state = trainer.opt.state[weight]
    assert (state["exp_avg"][dead] == 0).all() and (state["exp_avg_sq"][dead] == 0).all()
    assert (trainer.window_counts == 0).all()


def test_batch_schedule_is_a_pure_function_of_step():
    s = BatchSchedule(n=10, batch_size=3, seed=1)
    epoch0 = torch.cat([s.indices(i) for i in range(3)])
    assert len(set(epoch0.tolist())) == 9
    fresh = BatchSchedule(n=10, batch_size=3, seed=1)
    assert torch.equal(fresh.indices(4), s.indices(4)) and torch.equal(fresh.indices(1), epoch0[3:6])
    assert not torch.equal(torch.cat([s.indices(i) for i in range(3, 6)]), epoch0)
    with pytest.raises(ARPGError, match="fewer than the batch size"):
        BatchSchedule(n=2, batch_size=3, seed=0)


def test_bundled_data_gray_to_rgb(tmp_path):
    pytest.importorskip("animal_mnist")
    cfg = TrainVQConfig(out=str(tmp_path / "am"), preset="VQ-tiny", image_size=32, channels=3, batch_size=5,
                        steps=1, eval_images=16)
    trainer = VQTrainer(cfg, progress=False)
    assert len(trainer.train_set) == 9000 and len(trainer.eval_set) == 1000 and trainer.eval_name == "heldout"
    x = trainer.batch(0)
    assert x.shape == (5, 3, 32, 32) and x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
    assert torch.equal(x[:, 0], x[:, 2])
    trainer.run()
    assert (tmp_path / "am" / "tokenizer.safetensors").exists()


def _cli(args, capsys):
    rc = main(["train-vq", "--no-progress", *map(str, args)])
    err = capsys.readouterr().err.strip()
    return rc, err


def test_cli_runs_and_resumes(folder, tmp_path, capsys):
    out = tmp_path / "cli"
    common = ["--data", folder, "--out", out, "--preset", "VQ-tiny", "--image-size", 16, "--batch-size", 4]
    rc, _ = _cli([*common, "--steps", 4, "--ckpt-every", 2, "--log-every", 2], capsys)
    assert rc == 0 and (out / "tokenizer.safetensors").exists()
    rc, err = _cli([*common, "--steps", 4], capsys)
    assert rc == 2 and "--resume auto" in err and "\n" not in err
    rc, err = _cli(["--out", out, "--resume", "auto", "--lr", 0.5, "--steps", 6], capsys)
    assert rc == 2 and "lr (0.001 in the checkpoint, 0.5 now)" in err and "\n" not in err
    rc, _ = _cli(["--out", out, "--resume", "auto", "--steps", 6], capsys)  # other settings from the checkpoint
    assert rc == 0
    assert [json.loads(s)["step"] for s in (out / "log.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_cli_one_line_errors(folder, tmp_path, capsys):
    rc, err = _cli(["--data", folder, "--out", tmp_path / "x", "--preset", "VQ-tiny", "--image-size", 18], capsys)
    assert rc == 2 and "not a multiple" in err and "\n" not in err
    rc, err = _cli(["--data", tmp_path / "nowhere", "--out", tmp_path / "y"], capsys)
    assert rc == 2 and "not found" in err and "\n" not in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x02garbage" * 50)
    rc, err = _cli(["--data", folder, "--out", tmp_path / "z", "--resume", junk], capsys)
    assert rc == 2 and "corrupt, truncated or not a torch file" in err and "\n" not in err
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.ones(2)}}, foreign)
    rc, err = _cli(["--data", folder, "--out", tmp_path / "z", "--resume", foreign], capsys)
    assert rc == 2 and "not an arpg train-vq checkpoint" in err
    with pytest.raises(CheckpointError):
        VQTrainer(_cfg(folder, tmp_path / "w", steps=1), resume=str(tmp_path / "missing.pt"), progress=False)
