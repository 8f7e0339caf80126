"""Training a VQ tokenizer (``arpg train-vq``).

Losses: reconstruction (L1 or L2) + codebook + ``beta`` · commitment on L2-normalised codes with a
straight-through estimator; optionally an LPIPS-style perceptual loss (feature-net weights by path) and
a PatchGAN hinge loss from ``disc_start``. Dead codes (unused over ``reseed_every`` steps) are re-seeded
from current encoder outputs.

Exact resume: every random choice is a pure function of ``(seed, step)`` (data order per epoch, flips,
re-seeding) or lives in the checkpoint (model, optimisers, usage counters, log accumulators, global
RNG states), so a run interrupted at a checkpoint and resumed logs the same numbers as one that never
stopped.

Output folder: ``log.jsonl`` (one JSON record per log step), ``checkpoints/step-XXXXXXXX.pt`` (atomic,
last ``keep`` kept), ``train_config.json`` and, at the end, ``tokenizer.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..util.configs import check_field_types
from ..util.files import atomic_torch_save, atomic_write, load_torch_file
from ..errors import ARPGError, CheckpointError
from ..vq import VQTokenizer, get_vq_preset, save_tokenizer
from ..vq.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from ..vq.perceptual import load_perceptual
from ..util.devices import pick_device
from . import checkpointing as ckpt

BUNDLED = "animal-mnist"
CKPT_FORMAT = "arpg-train-vq"
# Fields that may differ when resuming; everything else must match the checkpoint's run.
RESUMABLE_CHANGES = {"steps", "log_every", "eval_every", "eval_images", "ckpt_every", "keep", "out"}


@dataclass
class TrainVQConfig:
    """Everything that defines a tokenizer training run (stored in every checkpoint)."""

    data: str = BUNDLED  # an image folder (ROOT/<class>/<images>) or "animal-mnist"
    out: str = "runs/vq"
    preset: str = "VQ-demo"
    image_size: int = 64
    channels: int | None = None  # None: 1 for the bundled grayscale set, 3 for image folders
    codebook_size: int | None = None  # None: the preset's
    codebook_dim: int | None = None
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # or "constant"; both after a linear warm-up
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    recon_loss: str = "l2"  # or "l1"
    beta: float = 0.25  # commitment weight
    codebook_weight: float = 1.0
    lpips_weights: list[str] = field(default_factory=list)
    perceptual_weight: float = 1.0
    disc_start: int = -1  # step at which the adversarial loss starts; -1 = never
    disc_weight: float = 0.1
    disc_lr: float | None = None  # None: lr
    disc_layers: int | None = None  # None: 2 for images up to 32 px, else 3
    disc_width: int = 64
    reseed_every: int = 100  # 0 = never re-seed dead codes (nor in the last reseed_every steps)
    hflip: bool = False
    seed: int = 0
    log_every: int = 20
    eval_every: int = 500  # 0 = only at the end
    eval_images: int = 500
    ckpt_every: int = 500
    keep: int = 3

    def __post_init__(self) -> None:
        problems = check_field_types(self)
        if problems:
            raise ARPGError("invalid training settings: " + "; ".join(problems))
        if self.recon_loss not in ("l1", "l2"):
            problems.append(f"recon_loss must be l1 or l2 (got {self.recon_loss!r})")
        if self.lr_schedule not in ("cosine", "constant"):
            problems.append(f"lr_schedule must be cosine or constant (got {self.lr_schedule!r})")
        if self.channels not in (None, 1, 3):
            problems.append(f"channels must be 1 or 3 (got {self.channels})")
        for name in ("steps", "batch_size", "image_size", "log_every", "ckpt_every", "eval_images", "disc_width"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("keep", "eval_every", "reseed_every", "warmup", "seed"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("codebook_size", "codebook_dim", "disc_layers"):
            v = getattr(self, name)
            if v is not None and v < (2 if name == "codebook_size" else 1):
                problems.append(f"{name} must be >= {2 if name == 'codebook_size' else 1} (got {v})")
        for name in ("lr", "disc_lr"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                problems.append(f"{name} must be a finite number > 0 (got {v})")
        for name in ("weight_decay", "grad_clip", "beta", "codebook_weight", "perceptual_weight", "disc_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                problems.append(f"{name} must be a finite number >= 0 (got {v})")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})")
        if problems:
            raise ARPGError("invalid training settings: " + "; ".join(problems))
        self.lpips_weights = [str(p) for p in self.lpips_weights]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainVQConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def n_channels(self) -> int:
        return self.channels or (1 if self.data == BUNDLED else 3)

    def vq_config(self):
        overrides: dict[str, Any] = {"in_channels": self.n_channels}
        if self.codebook_size is not None:
            overrides["codebook_size"] = self.codebook_size
        if self.codebook_dim is not None:
            overrides["codebook_dim"] = self.codebook_dim
        return get_vq_preset(self.preset, **overrides)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def center_crop(image, size: int):
    """Resize the short side to ``size`` (halving with a box filter first while it is ≥ 2x too big, which
    avoids aliasing) and cut the central ``size`` × ``size`` square."""
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize((image.size[0] // 2, image.size[1] // 2), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.size[0] * scale)), max(size, round(image.size[1] * scale))),
                         resample=Image.BICUBIC)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


class ImageSet:
    """Images as uint8 [C, S, S]: held in memory, or read from files on demand for large folders."""

    PRELOAD_BYTES = 1 << 30

    def __init__(self, pixels: torch.Tensor | None = None, paths: list[str] | None = None, size: int = 0,
                 channels: int = 3, progress: bool = False):
        self.pixels, self.paths, self.size, self.channels = pixels, paths, size, channels
        if pixels is None and paths is not None and len(paths) * channels * size * size <= self.PRELOAD_BYTES:
            self.pixels = torch.stack([self._read(p) for p in tqdm(paths, desc="loading images", disable=not progress)])

    def __len__(self) -> int:
        return len(self.pixels) if self.pixels is not None else len(self.paths)

    def _read(self, path: str) -> torch.Tensor:
        from ..data.folder import read_rgb

        image = center_crop(read_rgb(path), self.size)
        if self.channels == 1:
            image = image.convert("L")
        arr = np.asarray(image).reshape(self.size, self.size, -1)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        if self.pixels is not None:
            return self.pixels[indices]
        return torch.stack([self._read(self.paths[i]) for i in indices.tolist()])


def _bundled(split: str, size: int, channels: int) -> ImageSet:
    from ..data.animal_mnist import load_split

    from ..data.animal_mnist import padded

    images, _ = load_split(split)
    if size >= images.shape[-1]:  # pad (exact pixels), the framing extract-codes and the demo use
        x = torch.from_numpy(padded(images, size)).permute(0, 3, 1, 2)
    else:
        x = torch.from_numpy(images).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return ImageSet(x.expand(-1, channels, -1, -1).contiguous(), size=size, channels=channels)


def load_data(cfg: TrainVQConfig, progress: bool = False) -> tuple[ImageSet, ImageSet, str]:
    """``(train, eval, eval_name)``; the bundled set has a held-out split, a folder is evaluated on a
    fixed subset of its own images."""
    if cfg.data == BUNDLED:
        return (_bundled("train", cfg.image_size, cfg.n_channels), _bundled("heldout", cfg.image_size, cfg.n_channels),
                "heldout")
    from ..data.folder import scan_image_folder

    samples, _ = scan_image_folder(cfg.data)
    train = ImageSet(paths=[p for p, _ in samples], size=cfg.image_size, channels=cfg.n_channels, progress=progress)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(12345))[: cfg.eval_images]
    pick = pick.sort().values
    if train.pixels is not None:
        evalset = ImageSet(train.pixels[pick], size=cfg.image_size, channels=cfg.n_channels)
    else:
        evalset = ImageSet(paths=[train.paths[i] for i in pick.tolist()], size=cfg.image_size, channels=cfg.n_channels)
    return train, evalset, "train-subset"


def _read_state(path: Path) -> dict[str, Any]:
    """A train-vq checkpoint, read safely; one-line errors for unreadable or foreign files."""
    state = load_torch_file(path)
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path} is not an arpg train-vq checkpoint (cannot resume from it)")
    return state


def _step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    # Independent, reproducible streams per (seed, step, purpose) without any carried state.
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + stream * 104_729) % (2**63))


class BatchSchedule:
    """Which images form step ``s``'s batch: epoch ``e`` is a permutation drawn from ``(seed, e)``;
    batches never straddle epochs (a remainder smaller than a batch is skipped that epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ARPGError(f"the data set has {n} images, fewer than the batch size {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm = torch.randperm(self.n, generator=_step_generator(self.seed, epoch, 1))
            self._epoch = epoch
        return self._perm[i * self.batch_size:(i + 1) * self.batch_size]


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = (recon.clamp(-1, 1) - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


# ------------------------------------------------------------------------------------------------
# Trainer
# ------------------------------------------------------------------------------------------------
class VQTrainer:
    """Owns the model, optimisers, data schedule and output folder of one run."""

    def __init__(self, cfg: TrainVQConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 resume: str | None = None, progress: bool = True):
        self.cfg, self.device, self.progress = cfg, torch.device(device), progress
        if dtype == torch.float16:
            raise ARPGError("fp16 training needs loss scaling, which train-vq does not do; use bf16 or fp32")
        self.dtype = dtype
        self.out = Path(cfg.out)
        self.ckpt_dir = ckpt.checkpoint_dir(self.out)
        ckpt_path = self._resume_path(resume)

        vq_cfg = cfg.vq_config()
        if cfg.image_size % vq_cfg.downsample:
            raise ARPGError(f"--image-size {cfg.image_size} is not a multiple of {cfg.preset}'s downsampling "
                            f"factor {vq_cfg.downsample}")
        self.train_set, self.eval_set, self.eval_name = load_data(cfg, progress=progress)
        self.schedule = BatchSchedule(len(self.train_set), cfg.batch_size, cfg.seed)

        torch.manual_seed(cfg.seed)
        self.model = VQTokenizer(vq_cfg).to(self.device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                                     weight_decay=cfg.weight_decay)
        self.perceptual = load_perceptual(cfg.lpips_weights).to(self.device) if cfg.lpips_weights else None
        self.disc = self.disc_opt = None
        if cfg.disc_start >= 0:
            layers = cfg.disc_layers or (2 if cfg.image_size <= 32 else 3)
            self.disc = PatchDiscriminator(vq_cfg.in_channels, cfg.disc_width, layers).to(self.device).train()
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=cfg.disc_lr or cfg.lr, betas=(0.5, 0.9),
                                              weight_decay=0.0)

        self.step = 0
        k = vq_cfg.codebook_size
        self.window_counts = torch.zeros(k, dtype=torch.long)  # code use since the last re-seed check
        self.log_counts = torch.zeros(k, dtype=torch.long)  # code use since the last log record
        self.acc: dict[str, float] = {}  # sums of per-step metrics since the last log record
        self.acc_steps = 0
        self.records: list[dict[str, Any]] = []
        if ckpt_path is not None:
            self._load(ckpt_path)
        else:
            self._start_fresh()

    # Output folder ------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        return [p for _, p in ckpt.list_checkpoints(self.out)]

    def _resume_path(self, resume: str | None) -> Path | None:
        existing = self.checkpoints()
        if resume is None:
            if existing:
                raise ARPGError(f"{self.out} already holds checkpoints; pass --resume auto to continue that run "
                                "or choose a new --out")
            return None
        if resume == "auto":
            return existing[-1] if existing else None
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError(f"checkpoint to resume from not found: {path}")
        return path

    def _start_fresh(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "log.jsonl").unlink(missing_ok=True)
        atomic_write(self.out / "train_config.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n"))

    # Schedules -----------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        if cfg.lr_schedule == "constant":
            return cfg.lr
        t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    def batch(self, step: int) -> torch.Tensor:
        """Float images in [-1, 1] for ``step`` (same for every run with this seed)."""
        x = self.train_set.get(self.schedule.indices(step)).float() / 127.5 - 1.0
        if self.cfg.hflip:
            flip = torch.rand(len(x), generator=_step_generator(self.cfg.seed, step, 2)) < 0.5
            x[flip] = x[flip].flip(-1)
        return x.to(self.device)

    # One optimisation step -----------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg, step = self.cfg, self.step
        x = self.batch(step)
        lr = self.lr_at(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        use_disc = self.disc is not None and step >= cfg.disc_start
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

        with autocast:
            out = self.model(x)
            recon = out.recon.float()
            rec = F.l1_loss(recon, x) if cfg.recon_loss == "l1" else F.mse_loss(recon, x)
            loss = rec + cfg.codebook_weight * out.codebook_loss + cfg.beta * out.commit_loss
            metrics = {"recon": rec.item(), "codebook": out.codebook_loss.item(), "commit": out.commit_loss.item()}
            if self.perceptual is not None:
                perc = self.perceptual(recon, x).mean()
                loss = loss + cfg.perceptual_weight * perc
                metrics["perceptual"] = perc.item()
            if use_disc:
                g = hinge_g_loss(self.disc(recon))
                loss = loss + cfg.disc_weight * g
                metrics["g_adv"] = g.item()
        if not torch.isfinite(loss):
            raise ARPGError(f"training diverged at step {step} (loss {loss.item()}); lower --lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()

        if use_disc:
            with autocast:
                d = hinge_d_loss(self.disc(x), self.disc(recon.detach()))
            self.disc_opt.zero_grad(set_to_none=True)
            d.backward()
            self.disc_opt.step()
            metrics["d_loss"] = d.item()

        counts = torch.bincount(out.codes.flatten().cpu(), minlength=self.model.codebook_size)
        self.window_counts += counts
        self.log_counts += counts
        metrics.update(loss=loss.item(), psnr=psnr(recon.detach(), x).mean().item(), lr=lr)
        # Re-seed only while the new codes still get ``reseed_every`` steps of training before the end.
        if cfg.reseed_every and (step + 1) % cfg.reseed_every == 0 and step + 1 + cfg.reseed_every <= cfg.steps:
            metrics["reseeded"] = float(self._reseed_dead_codes(out.latent.detach(), step))
        return metrics

    @torch.no_grad()
    def _reseed_dead_codes(self, latent: torch.Tensor, step: int) -> int:
        """Point codes unused since the last check at random current encoder outputs (plus a little
        noise, so codes seeded from the same vector drift apart) and clear their optimiser moments."""
        dead = (self.window_counts == 0).nonzero().flatten()
        self.window_counts.zero_()
        if not len(dead):
            return 0
        g = _step_generator(self.cfg.seed, step, 3)
        rows = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1]).float().cpu()
        new = rows[torch.randint(0, len(rows), (len(dead),), generator=g)]
        new = new + 0.01 * torch.randn(new.shape, generator=g)
        weight = self.model.quantize.embedding.weight
        new = self.model.quantize.normalize(new, dim=-1) * (weight.norm(dim=-1).mean().cpu() if not
                                                            self.model.config.l2_norm else 1.0)
        dead_dev = dead.to(weight.device)
        weight[dead_dev] = new.to(weight.dtype).to(weight.device)
        for moment in self.opt.state.get(weight, {}).values():
            if isinstance(moment, torch.Tensor) and moment.shape == weight.shape:
                moment[dead_dev] = 0
        return len(dead)

    # Evaluation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batch_size: int = 64) -> dict[str, float]:
        """PSNR and codebook usage over the fixed evaluation images (deterministic, no RNG)."""
        self.model.eval()
        n = min(len(self.eval_set), self.cfg.eval_images)
        scores, used = [], torch.zeros(self.model.codebook_size, dtype=torch.bool)
        for i in range(0, n, batch_size):
            idx = torch.arange(i, min(n, i + batch_size))
            x = (self.eval_set.get(idx).float() / 127.5 - 1.0).to(self.device)
            z_q, codes = self.model.quantize_latent(self.model.encode_latent(x))
            scores.append(psnr(self.model.decode_latent(z_q).float(), x).cpu())
            used[codes.flatten().cpu()] = True
        self.model.train()
        return {"eval_psnr": torch.cat(scores).mean().item(), "eval_usage": used.float().mean().item(),
                "eval_images": float(n)}

    # Loop ----------------------------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> list[dict[str, Any]]:
        """Train until ``cfg.steps`` (or until ``stop_at``, to simulate an interruption); returns the log
        records written by this call. The final weights go to ``out/tokenizer.safetensors``."""
        cfg = self.cfg
        end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        written: list[dict[str, Any]] = []
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train-vq", disable=not self.progress, dynamic_ncols=True)
        t0 = time.time()
        while self.step < end:
            metrics = self.train_step()
            self.step += 1
            bar.update(1)
            for k, v in metrics.items():
                self.acc[k] = self.acc.get(k, 0.0) + v
            self.acc_steps += 1
            last = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or last:
                record = self._log_record(time.time() - t0)
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or last:
                    record.update(self.evaluate())
                self._append_log(record)
                written.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{record['psnr']:.2f}",
                                usage=f"{record['usage']:.2f}")
            if self.step % cfg.ckpt_every == 0 or last:
                self.save_checkpoint()
        bar.close()
        if self.step >= cfg.steps:
            save_tokenizer(self.model, self.out / "tokenizer.safetensors",
                           metadata={"train_steps": str(self.step), "train_data": str(cfg.data)})
        return written

    def _log_record(self, elapsed: float) -> dict[str, Any]:
        n = max(1, self.acc_steps)
        record: dict[str, Any] = {"step": self.step}
        record.update({k: (v if k == "reseeded" else v / n) for k, v in self.acc.items()})
        record["usage"] = (self.log_counts > 0).float().mean().item()
        record["elapsed_s"] = round(elapsed, 3)
        self.acc, self.acc_steps = {}, 0
        self.log_counts.zero_()
        return record

    def _append_log(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # Checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = ckpt.checkpoint_path(self.out, self.step)
        state = {
            "format": CKPT_FORMAT,
            "step": self.step,
            "model": self.model.state_dict(),
            "config": self.model.config.to_dict(),
            "train_config": self.cfg.to_dict(),
            "optimizer": self.opt.state_dict(),
            "window_counts": self.window_counts,
            "log_counts": self.log_counts,
            "acc": dict(self.acc),
            "acc_steps": self.acc_steps,
            "rng_cpu": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.disc is not None:
            state["disc"] = self.disc.state_dict()
            state["disc_optimizer"] = self.disc_opt.state_dict()
        atomic_torch_save(state, path)
        for old in self.checkpoints()[: -self.cfg.keep]:
            old.unlink(missing_ok=True)
        return path

    def _load(self, path: Path) -> None:
        state = _read_state(path)
        stored = TrainVQConfig.from_dict(state["train_config"])
        diffs = [f.name for f in dataclasses.fields(TrainVQConfig)
                 if f.name not in RESUMABLE_CHANGES and getattr(stored, f.name) != getattr(self.cfg, f.name)]
        if diffs:
            shown = ", ".join(f"{d} ({getattr(stored, d)!r} in the checkpoint, {getattr(self.cfg, d)!r} now)"
                              for d in diffs[:3])
            raise ARPGError(f"cannot resume {path} with different settings: {shown}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_optimizer"])
        self.step = int(state["step"])
        self.window_counts = state["window_counts"].clone()
        self.log_counts = state["log_counts"].clone()
        self.acc, self.acc_steps = dict(state["acc"]), int(state["acc_steps"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop log records written after the checkpoint (by the run that was interrupted)."""
        log = self.out / "log.jsonl"
        if not log.exists():
            return
        keep = [line for line in log.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= self.step]
        atomic_write(log, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in keep)))
        self.records = [json.loads(line) for line in keep]


def resume_config(out: str | os.PathLike, resume: str, explicit: dict[str, Any]) -> TrainVQConfig | None:
    """The settings of the run to resume, with ``explicit`` (user-given) values applied; ``None`` when
    ``resume == "auto"`` and there is nothing to resume."""
    path: Path | None
    if resume == "auto":
        path = ckpt.latest_checkpoint(out)
    else:
        path = Path(resume)
    if path is None:
        return None
    if not path.is_file():
        raise CheckpointError(f"checkpoint to resume from not found: {path}")
    state = _read_state(path)
    return TrainVQConfig.from_dict({**state["train_config"], **explicit, "out": str(out)})


def train_vq(cfg: TrainVQConfig, *, resume: str | None = None, device: str | torch.device = "auto",
             dtype: torch.dtype = torch.float32, progress: bool = True, finished: str = "skip") -> "VQTrainer":
    """Run (or resume) a tokenizer training; returns the trainer (its ``records`` hold the log).

    A run already at ``cfg.steps`` is left as it is (``finished="skip"``) or refused with a one-line error
    that says how to extend it (``finished="error"``, what ``arpg train-vq`` does)."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    trainer = VQTrainer(cfg, device=dev, dtype=dtype, resume=resume, progress=progress)
    if trainer.step >= cfg.steps:
        if finished == "error":
            raise ARPGError(f"the run in {cfg.out} is already at step {trainer.step} of {cfg.steps}; "
                            "pass a larger --steps to continue")
        return trainer
    if trainer.step and progress:
        print(f"resuming at step {trainer.step} of {cfg.steps}")
    trainer.run()
    return trainer
