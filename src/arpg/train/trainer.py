"""The ARPG trainer: one function, :func:`train`, for one process or many (DDP / FSDP under torchrun).

What a step does (see :mod:`arpg.train.stream` for how the samples, orders and class dropout are chosen
so that results do not depend on the number of processes):

1. lr from the warm-up + cosine schedule of the step;
2. for each accumulation micro-step: read the rank's slice of the global batch from the memory-mapped
   codes, the model's forward with ``return_loss=True`` under autocast (bf16 where asked and supported):
   cross-entropy over every cell in the sample's random order; backward (gradient sync only on the last
   micro-step);
3. clip the gradient norm (1.0), check the loss and the norm are finite, AdamW step, EMA update;
4. log / checkpoint / sample on their intervals.

Class dropout is the model's (``ARPG.forward(..., drop_labels=...)``); the stream only chooses which labels
drop, from a hash of the sample's position, so the choice is exact across world sizes and resumes.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
from tqdm import tqdm

from ..util.state import load_state_strict
from ..model.weights import read_checkpoint, suggest_preset
from ..data.codes import CodeDataset
from ..errors import ARPGError
from ..model.config import ARPGConfig
from ..model import ARPG
from ..util.devices import warn_if_emulated
from ..util.distributed import (DistInfo, all_gather_objects, all_reduce_mean, barrier, init_distributed, shutdown,
                                wrap_model)
from ..vq import load_tokenizer
from . import checkpointing as ckpt
from .config import (DATA_KEYS, RECIPE_KEYS, TrainConfig, check_init_config, resolve_dtype, resolve_model_config,
                     total_steps)
from .export import export_weights, full_options, full_state_dicts, plain_model
from .metrics import MetricsLog
from .optim import EMA, WarmupCosine, build_optimizer, scaled_lr, set_lr, warmup_steps
from .preview import save_preview
from .stream import SampleStream

@dataclass
class TrainResult:
    """What a finished run leaves behind (``losses`` holds every step this process ran)."""

    steps: int
    losses: dict[int, float]
    checkpoint: Path | None
    final_weights: Path | None
    final_ema_weights: Path | None


class NonFiniteLossError(ARPGError):
    """The loss or the gradient norm became NaN or infinite."""


# ------------------------------------------------------------------------------------------------
# The trainer
# ------------------------------------------------------------------------------------------------
class Trainer:
    """Set up with :meth:`__init__`, run with :meth:`fit`. Use :func:`train` for the whole thing."""

    def __init__(self, cfg: TrainConfig, dist_info: DistInfo | None = None):
        self.cfg = cfg.validate()
        self.dist = dist_info or init_distributed(cfg.device)
        d = self.dist
        self.out = Path(cfg.out)
        self.data = CodeDataset(cfg.codes, seed=cfg.seed)
        self.model_cfg, notes = resolve_model_config(cfg.preset, dict(cfg.overrides), self.data.index, cfg.condition)
        self.data.check_ranges(self.model_cfg.vocab_size, self.model_cfg.num_classes)
        self.total_steps = total_steps(cfg, len(self.data))
        self.amp_dtype = resolve_dtype(cfg.dtype, d.device)
        if cfg.grad_accum < 1:
            raise ARPGError(f"--grad-accum must be >= 1, got {cfg.grad_accum}")
        per = d.world_size * cfg.grad_accum
        if cfg.batch_size < per or cfg.batch_size % per:
            raise ARPGError(f"--batch-size {cfg.batch_size} (global) must be a multiple of world size "
                            f"{d.world_size} x grad-accum {cfg.grad_accum}")
        self.micro_batch = cfg.batch_size // per
        self.base_lr = scaled_lr(cfg.lr, cfg.batch_size)
        # The floor is scaled like the peak, so at any batch size the decay only ever falls.
        self.schedule = WarmupCosine(self.base_lr, scaled_lr(cfg.min_lr, cfg.batch_size),
                                     warmup_steps(cfg.warmup, self.total_steps), self.total_steps)
        self.stream = SampleStream(self.data, cfg.seed, self.model_cfg.class_dropout,
                                   self.model_cfg.condition_dropout if self.model_cfg.controlled else 0.0,
                                   self.model_cfg.caption_dropout if self.model_cfg.texted else 0.0)

        resume_path = self._resume_path()
        # The model: identical initial weights on every rank (same seed); the stream chooses what drops.
        torch.manual_seed(cfg.seed)
        with torch.device(d.device):
            model = ARPG(self.model_cfg)
        if cfg.init and resume_path is None:
            sd, extras = read_checkpoint(cfg.init)
            check_init_config(extras.get("config"), self.model_cfg, cfg.init)
            fresh = [k for k in model.state_dict() if k.startswith(("condition_encoder.", "caption.")) and k not in sd]
            if fresh:  # from a class-conditional model to a ControlARPG or text one: the new module starts fresh
                sd = {**sd, **{k: model.state_dict()[k] for k in fresh}}
                notes.append(f"{fresh[0].split('.')[0]} ({len(fresh)} tensors) starts fresh; the rest comes from {cfg.init}")
            load_state_strict(model, sd, cfg.init, suggest=suggest_preset)
        self.model = model
        self.wrapped = wrap_model(model, d, cfg.fsdp)
        if cfg.compile:
            if d.device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
                raise ARPGError("--compile on a CPU needs a C++ compiler (c++, g++ or clang++) on PATH")
            # Only the training call goes through the compiled wrapper; the optimizer, the EMA, checkpoints
            # and preview sampling keep using the plain module, so state-dict keys do not change.
            self.wrapped = torch.compile(self.wrapped)
        self.model.train()
        # Fused AdamW on plain CUDA tensors; the default (foreach) kernels for FSDP's sharded DTensors.
        fused = d.device.type == "cuda" and not (cfg.fsdp and d.distributed)
        self.optimizer = build_optimizer(self.model, self.base_lr, cfg.betas, cfg.weight_decay, fused=fused)
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None
        self.step = 0
        self.last_checkpoint: Path | None = None
        # Per-rank generator streams (only dropout layers and sampling helpers would use them).
        self._seed_process(cfg.seed, d.rank)
        if resume_path is not None:
            self._load(resume_path)
        if d.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for note in notes:
                print(f"arpg train: {note}")
            self._write_run_json()
            ckpt.remove_stale_temp_files(self.out)
        self.log = MetricsLog(self.out, cfg.tensorboard, resume_step=self.step if resume_path else None) \
            if d.is_main else None
        self._tokenizer = None
        # Only now, with every setting checked and the run set up, is a slow-dtype warning about a run that goes ahead.
        if d.is_main:
            warn_if_emulated(d.device, self.amp_dtype)
        barrier(d)

    # -- setup helpers ----------------------------------------------------------------------------
    @staticmethod
    def _seed_process(seed: int, rank: int) -> None:
        s = (seed * 1_000_003 + rank) % (2**31)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    def _resume_path(self) -> Path | None:
        r = self.cfg.resume
        latest = ckpt.latest_checkpoint(self.out)
        if r in (None, "", "none"):
            if latest is not None:
                raise ARPGError(f"{self.out} already holds checkpoints (latest {latest.name}); pass --resume auto "
                                "to continue that run or choose another --out")
            return None
        if r == "auto":
            return latest  # None = nothing to resume yet: start fresh (same command for every restart)
        return Path(r)

    def optimizer_settings(self) -> dict[str, Any]:
        """What defines the updates (stored as "recipe" in run.json and checkpoints; compared on resume)."""
        c = self.cfg
        return {"batch_size": c.batch_size, "total_steps": self.total_steps, "lr": c.lr, "min_lr": c.min_lr,
                "warmup": c.warmup, "weight_decay": c.weight_decay, "betas": list(c.betas),
                "grad_clip": c.grad_clip, "seed": c.seed, "ema": c.ema}

    def data_fingerprint(self) -> dict[str, Any]:
        i = self.data.index
        return {"num_samples": i.num_samples, "num_crops": i.num_crops, "grid_size": i.grid_size,
                "vocab_size": i.vocab_size, "num_classes": i.num_classes,
                "condition": i.condition["kind"] if i.condition and self.model_cfg.controlled else None}

    def _write_run_json(self) -> None:
        info = {"args": self.cfg.to_dict(), "model_config": self.model_cfg.to_dict(), "recipe": self.optimizer_settings(),
                "data": self.data_fingerprint(), "world_size": self.dist.world_size,
                "micro_batch": self.micro_batch, "base_lr": self.base_lr, "warmup_steps": self.schedule.warmup,
                "amp_dtype": str(self.amp_dtype).replace("torch.", "")}
        (self.out / "run.json").write_text(json.dumps(info, indent=1))

    # -- checkpoints ------------------------------------------------------------------------------
    def _full_state_dicts(self, with_optimizer: bool = True) -> tuple[dict, dict | None, dict | None]:
        return full_state_dicts(self.model, self.optimizer if with_optimizer else None, self.ema)

    def _params_finite(self) -> bool:
        ok = torch.tensor(1.0, device=self.dist.device)
        for p in self.model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            if not torch.isfinite(local).all():
                ok.zero_()
                break
        return bool(all_reduce_mean(ok, self.dist).item() == 1.0)

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank takes part in gathering)."""
        if not self._params_finite():
            self._stop(f"parameters became non-finite at step {self.step}")
        model_sd, ema_sd, optim_sd = self._full_state_dicts()
        rng = all_gather_objects(ckpt.capture_rng(self.dist.device), self.dist)
        path = None
        if self.dist.is_main:
            state = {
                "step": self.step,
                "world_size": self.dist.world_size,
                "model": model_sd, "ema": ema_sd, "optimizer": optim_sd,
                "scheduler": self.schedule.state_dict(), "rng": rng,
                "data": {"position": self.step * self.cfg.batch_size,
                         "epoch": self.step * self.cfg.batch_size / len(self.data)},
                "config": self.model_cfg.to_dict(), "args": self.cfg.to_dict(), "recipe": self.optimizer_settings(),
                "data_fingerprint": self.data_fingerprint(),
            }
            path = ckpt.save_checkpoint(state, self.out, self.step, keep=self.cfg.keep)
        barrier(self.dist)
        self.last_checkpoint = ckpt.checkpoint_path(self.out, self.step)
        return path

    def _load(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path)
        # A field added since the checkpoint was written had its default value then.
        saved = {**ARPGConfig().to_dict(), **state.get("config", {})}
        problems = ckpt.describe_differences(saved, self.model_cfg.to_dict())
        problems += ckpt.describe_differences(state.get("recipe", {}), self.optimizer_settings(), RECIPE_KEYS)
        problems += ckpt.describe_differences(state.get("data_fingerprint", {}), self.data_fingerprint(),
                                              DATA_KEYS, prefix="codes ")
        if problems:
            raise ARPGError(f"cannot resume from {path}: it was trained with different settings: "
                            + "; ".join(problems))
        opts = full_options()
        if self.ema is not None:
            if state.get("ema") is None:
                raise ARPGError(f"cannot resume from {path}: it has no EMA weights but --ema is set")
            set_model_state_dict(self.model, dict(state["ema"]), options=opts)
            self.ema.copy_from_model()
        set_model_state_dict(self.model, dict(state["model"]), options=opts)
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=opts)
        self.step = int(state["step"])
        if self.total_steps <= self.step:
            raise ARPGError(f"the run in {self.out} is already at step {self.step}; pass a larger --steps (now "
                            f"{self.total_steps}) to extend it")
        sched = state.get("scheduler")
        if isinstance(sched, dict) and set(sched) == {"base_lr", "min_lr", "warmup", "total"}:
            # The checkpoint's schedule continues unchanged; past its end (an extended run) lr stays at the floor.
            self.schedule = WarmupCosine(**sched)
        rngs = state.get("rng") or []
        if len(rngs) == self.dist.world_size:
            ckpt.restore_rng(rngs[self.dist.rank], self.dist.device)
        elif self.dist.is_main:
            print(f"arpg train: note: {path.name} was written by {len(rngs)} process(es), this run has "
                  f"{self.dist.world_size}: data, orders and class dropout continue exactly, per-rank "
                  "generator states (dropout layers) are reseeded")
        self.last_checkpoint = Path(path)
        if self.dist.is_main:
            print(f"arpg train: resumed from {path} at step {self.step}")

    # -- sampling and export ----------------------------------------------------------------------
    def sample_grid(self) -> Path | None:
        """Preview samples of the EMA weights (or the raw ones): codes, and a PNG grid with a tokenizer."""
        model_sd, ema_sd, _ = self._full_state_dicts(with_optimizer=False)
        if not self.dist.is_main:
            return None
        if self.cfg.tokenizer and self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.tokenizer, device=self.dist.device)
        model = plain_model(self.model_cfg, ema_sd if ema_sd is not None else model_sd, self.dist.device)
        # a text model draws the first captions of the set
        prompts = self.data.get_text(np.arange(min(self.cfg.sample_count, len(self.data)))) if self.model_cfg.texted else None
        return save_preview(model, self.out / "samples", self.step, count=self.cfg.sample_count,
                            steps=self.cfg.sample_steps, cfg_scale=self.cfg.sample_cfg, seed=self.cfg.seed,
                            dtype=self.amp_dtype if self.amp_dtype != torch.float32 else None,
                            tokenizer=self._tokenizer, prompts=prompts)

    def export(self) -> tuple[Path | None, Path | None]:
        """Final raw and EMA weights as .safetensors with the config (rank 0 writes)."""
        model_sd, ema_sd, _ = self._full_state_dicts(with_optimizer=False)
        if not self.dist.is_main:
            return None, None
        text = self.data.index.text if self.model_cfg.texted else None
        return export_weights(self.out, self.model_cfg, model_sd, ema_sd, text and {"text_encoder": text["encoder"]})

    # -- training ---------------------------------------------------------------------------------
    def _stop(self, what: str) -> None:
        last = self.last_checkpoint if self.last_checkpoint and self.last_checkpoint.exists() else None
        keep = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
        raise NonFiniteLossError(f"{what}: training stopped; {keep}")

    def train_step(self) -> tuple[float, float, float]:
        """One optimizer step over the global batch; returns ``(loss, grad_norm, lr)``."""
        cfg, d = self.cfg, self.dist
        lr = self.schedule(self.step)
        set_lr(self.optimizer, lr)
        loss_sum = torch.zeros((), device=d.device)
        for m in range(cfg.grad_accum):
            last = m == cfg.grad_accum - 1
            pos = self.stream.positions(self.step, m, d.rank, d.world_size, cfg.grad_accum, self.micro_batch)
            tokens, labels, orders, drop = (t.to(d.device, non_blocking=True) for t in self.stream.batch(pos))
            control = {}
            if self.model_cfg.texted:  # prompt features in place of labels
                feats, mask, tdrop = (t.to(d.device, non_blocking=True) for t in self.stream.captions(pos))
                control = {"text": feats, "text_mask": mask, "drop_text": tdrop}
                labels, drop = None, None
            if self.model_cfg.controlled:
                maps, cdrop = self.stream.conditions(pos)
                control = {"condition": maps.to(d.device, non_blocking=True),
                           "drop_condition": cdrop.to(d.device, non_blocking=True)}
            with _grad_sync(self.wrapped, last, cfg.fsdp and d.distributed):
                with torch.autocast(device_type=d.device.type, dtype=self.amp_dtype,
                                    enabled=self.amp_dtype != torch.float32):
                    loss = self.wrapped(tokens, labels, orders, drop_labels=drop, return_loss=True,
                                        loss_chunk=cfg.loss_chunk, grad_checkpoint=cfg.grad_checkpoint, **control)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach() / cfg.grad_accum
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        stats = all_reduce_mean(torch.stack([loss_sum, grad_norm.detach().float().to(d.device)]), d)
        loss_v, gn_v = (float(x) for x in stats.tolist())
        if not math.isfinite(loss_v):
            self._stop(f"loss is {loss_v} at step {self.step + 1}")
        if not math.isfinite(gn_v):
            self._stop(f"gradient norm is {gn_v} at step {self.step + 1}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        return loss_v, gn_v, lr

    def fit(self) -> TrainResult:
        cfg, d = self.cfg, self.dist
        losses: dict[int, float] = {}
        tokens_per_step = cfg.batch_size * self.model_cfg.n_cells
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (d.is_main and cfg.progress))
        acc_loss, acc_gn, acc_n, t0 = 0.0, 0.0, 0, time.perf_counter()
        try:
            while self.step < self.total_steps:
                loss, gn, lr = self.train_step()
                losses[self.step] = loss
                acc_loss, acc_gn, acc_n = acc_loss + loss, acc_gn + gn, acc_n + 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    dt = time.perf_counter() - t0
                    rec = {"step": self.step, "loss": acc_loss / acc_n, "lr": lr, "grad_norm": acc_gn / acc_n,
                           "tokens_per_s": acc_n * tokens_per_step / max(dt, 1e-9),
                           "samples_per_s": acc_n * cfg.batch_size / max(dt, 1e-9),
                           "epoch": self.step * cfg.batch_size / len(self.data)}
                    if self.log is not None:
                        self.log.log(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                    acc_loss, acc_gn, acc_n, t0 = 0.0, 0.0, 0, time.perf_counter()
                if self.step % cfg.save_every == 0 or self.step == self.total_steps:
                    path = self.save()
                    if path is not None:
                        bar.write(f"arpg train: saved {path}")
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    out = self.sample_grid()
                    if out is not None:
                        bar.write(f"arpg train: samples {out}")
                    self.model.train()
            raw, ema = self.export()
        finally:
            bar.close()
            if self.log is not None:
                self.log.close()
        if raw is not None and d.is_main:
            print(f"arpg train: done at step {self.step}; weights {raw}" + (f", EMA {ema}" if ema else ""))
        return TrainResult(self.step, losses, self.last_checkpoint, raw, ema)


class _grad_sync:
    """Skip the gradient all-reduce on non-final accumulation micro-steps (DDP no_sync / FSDP2 flag)."""

    def __init__(self, wrapped: torch.nn.Module, last: bool, fsdp: bool):
        self.wrapped, self.last, self.fsdp, self.ctx = wrapped, last, fsdp, None

    def __enter__(self):
        if self.fsdp:
            self.wrapped.set_requires_gradient_sync(self.last)
        elif not self.last and hasattr(self.wrapped, "no_sync"):
            self.ctx = self.wrapped.no_sync()
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) training as configured; joins torchrun's process group when launched by it."""
    info = init_distributed(cfg.device)
    try:
        return Trainer(cfg, info).fit()
    finally:
        shutdown(info)
