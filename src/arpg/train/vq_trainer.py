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
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.images import BatchSchedule, load_image_sets, step_generator
from ..errors import ARPGError, CheckpointError
from ..util.devices import pick_device
from ..util.files import atomic_write_text
from ..vq import VQTokenizer, save_tokenizer
from ..vq.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from ..vq.perceptual import load_perceptual
from . import checkpointing as ckpt
from .metrics import MetricsLog, read_log
from .optim import WarmupCosine, set_lr
from .vq_config import KIND, RESUMABLE_CHANGES, TrainVQConfig

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
        self.train_set, self.eval_set, self.eval_name = load_image_sets(cfg.data, cfg.image_size, cfg.n_channels,
                                                                        cfg.eval_images, progress=progress)
        # The shared schedule: warm-up, then cosine to lr * min_lr_ratio at the last step (a floor equal to
        # the peak makes it constant). ``total = steps + 1`` puts the floor one step past the end, as before.
        floor = cfg.lr if cfg.lr_schedule == "constant" else cfg.lr * cfg.min_lr_ratio
        self.lr_schedule = WarmupCosine(cfg.lr, floor, cfg.warmup, cfg.steps + 1)
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
        self.log = MetricsLog(self.out, resume_step=self.step if ckpt_path is not None else None)
        self.records = read_log(self.out)

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
        atomic_write_text(self.out / "train_config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")

    # Schedules -----------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        return self.lr_schedule(step)

    def batch(self, step: int) -> torch.Tensor:
        """Float images in [-1, 1] for ``step`` (same for every run with this seed)."""
        x = self.train_set.get(self.schedule.indices(step)).float() / 127.5 - 1.0
        if self.cfg.hflip:
            flip = torch.rand(len(x), generator=step_generator(self.cfg.seed, step, 2)) < 0.5
            x[flip] = x[flip].flip(-1)
        return x.to(self.device)

    # One optimisation step -----------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg, step = self.cfg, self.step
        x = self.batch(step)
        lr = self.lr_at(step)
        set_lr(self.opt, lr)
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
        g = step_generator(self.cfg.seed, step, 3)
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
        self.log.close()
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
        self.log.log(record)

    # Checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        state = {
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
        return ckpt.save_checkpoint(state, self.out, self.step, keep=self.cfg.keep, kind=KIND)

    def _load(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, kind=KIND)
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
