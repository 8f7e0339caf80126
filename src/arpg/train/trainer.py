"""The ARPG trainer: one function, :func:`train`, for one process or many (DDP / FSDP under torchrun).

What a step does (see :mod:`arpg.train.stream` for how the samples, orders and class dropout are chosen
so that results do not depend on the number of processes):

1. lr from the warm-up + cosine schedule of the step;
2. for each accumulation micro-step: read the rank's slice of the global batch from the memory-mapped
   codes, forward under autocast (bf16 where asked and supported), cross-entropy over every cell in the
   sample's random order, backward (gradient sync only on the last micro-step);
3. clip the gradient norm (1.0), check the loss and the norm are finite, AdamW step, EMA update;
4. log / checkpoint / sample on their intervals.

Class dropout is done here, not inside the model: the trainer's model copy is built with
``class_dropout=0`` and the stream replaces labels by the null class from a hash of the sample's
position (exact across world sizes and resumes). Checkpoints and exported weights carry the real config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoints import load_state_strict, read_checkpoint, save_model, suggest_preset
from ..config import ARPG_PRESETS, ARPGConfig, get_preset
from ..data.codes import CodeDataset, CodeIndex
from ..errors import ARPGError
from ..model import ARPG
from . import checkpointing as ckpt
from ..util.distributed import (DistInfo, all_gather_objects, all_reduce_mean, barrier, init_distributed, shutdown,
                          wrap_model)
from .metrics import MetricsLog
from .optim import EMA, WarmupCosine, build_optimizer, scaled_lr, set_lr, warmup_steps
from .stream import SampleStream

#: Settings that must match to resume a run (they define the data stream, the schedule or the update). The
#: run length may grow: a resumed run with a larger ``--steps`` keeps the checkpoint's lr schedule, so the
#: extra steps run at the schedule's floor (``min_lr``) once its original length is passed.
RECIPE_KEYS = ("batch_size", "lr", "min_lr", "warmup", "weight_decay", "betas", "grad_clip", "seed", "ema")
#: TrainConfig fields a resumed run takes from its checkpoint unless given, and refuses when given differently.
FIXED_ON_RESUME = ("codes", "preset", "overrides") + RECIPE_KEYS
DATA_KEYS = ("num_samples", "num_crops", "grid_size", "vocab_size", "num_classes")


@dataclass
class TrainConfig:
    """Everything ``arpg train`` takes (see ``arpg train --help`` for each flag)."""

    codes: str
    out: str
    preset: str | None = None  # required for a new run (see preset_hint); a resumed run keeps its own
    overrides: dict[str, Any] = field(default_factory=dict)  # ARPGConfig fields on top of the preset
    batch_size: int = 256  # GLOBAL batch (all ranks and accumulation micro-steps together)
    grad_accum: int = 1
    steps: int | None = None
    epochs: float | None = None
    lr: float = 1e-4  # per 256 samples; scaled by batch_size / 256
    # Per 256 samples too, scaled the same way (so the decay never rises): 2.5e-6 is the paper's floor of
    # 1e-5 at its batch of 1024.
    min_lr: float = 2.5e-6
    warmup: float = 0.25  # < 1: fraction of the steps; >= 1: steps
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # <= 0: no clipping (the norm is still logged)
    dtype: str = "auto"  # auto (bf16 on GPUs that support it, else fp32), fp32, bf16
    device: str = "auto"
    ema: float = 0.0  # EMA decay; 0 = no EMA
    seed: int = 0
    save_every: int = 1000
    keep: int = 3
    log_every: int = 10
    tensorboard: bool = False
    sample_every: int = 0  # 0 = never
    sample_steps: int = 32
    sample_cfg: float = 4.0
    sample_count: int = 16
    tokenizer: str | None = None
    resume: str | None = None  # a checkpoint path, or "auto" = the newest in out/checkpoints (if any)
    init: str | None = None  # start from these weights (fine-tuning); ignored when resuming
    fsdp: bool = False
    # torch.compile the training forward (and so its backward): 1.15x on this 2-core CPU for ARPG-demo at
    # batch 64 (benchmarks/results/training_demo_b64.md), for ~40 s of compiling at the first step.
    compile: bool = False
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    def validate(self) -> "TrainConfig":
        """One-line :class:`ARPGError` for the first impossible setting (checked before any work)."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ARPGError(what)

        def finite(name: str) -> float:
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and math.isfinite(v), f"--{name.replace('_', '-')} must be a finite "
                 f"number, got {v!r}")
            return v

        for name in ("batch_size", "grad_accum", "save_every", "log_every", "sample_steps", "sample_count"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 1, f"--{name.replace('_', '-')} must be >= 1, got {v!r}")
        for name in ("keep", "sample_every"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 0, f"--{name.replace('_', '-')} must be >= 0, got {v!r}")
        need(finite("lr") > 0, f"--lr must be > 0, got {self.lr}")
        need(finite("min_lr") >= 0, f"--min-lr must be >= 0, got {self.min_lr}")
        need(self.min_lr <= self.lr, f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}: the cosine decay would "
             "rise; give a floor at or below the peak")
        need(finite("warmup") >= 0, f"--warmup must be >= 0, got {self.warmup}")
        need(finite("weight_decay") >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(finite("grad_clip") >= 0, f"--grad-clip must be >= 0 (0 = off), got {self.grad_clip}")
        need(0 <= finite("ema") < 1, f"--ema must be 0 (off) or a decay in (0, 1), got {self.ema}")
        finite("sample_cfg")
        need(len(self.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
             f"--betas must be two numbers in [0, 1), got {list(self.betas)}")
        need(self.steps is None or (isinstance(self.steps, int) and self.steps >= 1),
             f"--steps must be >= 1, got {self.steps!r}")
        need(self.epochs is None or (math.isfinite(self.epochs) and self.epochs > 0),
             f"--epochs must be > 0, got {self.epochs!r}")
        need(isinstance(self.seed, int) and 0 <= self.seed < 2**63, f"--seed must be in 0..2^63-1, got {self.seed!r}")
        for name in ("init", "tokenizer"):  # read late (first step / first sample grid): checked up front
            v = getattr(self, name)
            need(v is None or Path(v).is_file(), f"--{name} {v}: file not found")
        return self


@dataclass
class TrainResult:
    """What a finished run leaves behind (``losses`` holds every step this process ran)."""

    steps: int
    losses: dict[int, float]
    checkpoint: Path | None
    final_weights: Path | None
    final_ema_weights: Path | None


#: Config fields that change the computation without changing any tensor's shape, so a strict load of
#: ``--init`` weights cannot catch a mismatch in them.
SHAPELESS_FIELDS = ("grid_size", "rope_base", "norm_eps", "class_rope", "class_queries")


def check_init_config(init_config: dict | None, model_cfg: ARPGConfig, path: str) -> None:
    """Refuse ``--init`` weights whose stored config differs from the model's in a :data:`SHAPELESS_FIELDS`
    field (files without a stored config, e.g. the released ``.pt`` ones, are not checked)."""
    if not init_config:
        return
    # A field missing from an older file had its default value then.
    defaults = {f.name: f.default for f in dataclasses.fields(ARPGConfig)}
    diff = [f"{k}={init_config.get(k, defaults[k])!r} (model: {getattr(model_cfg, k)!r})" for k in SHAPELESS_FIELDS
            if init_config.get(k, defaults[k]) != getattr(model_cfg, k)]
    if diff:
        raise ARPGError(f"--init {path} was trained with a different config: {'; '.join(diff)}; pass the same "
                        "values with --set FIELD=VALUE")


class NonFiniteLossError(ARPGError):
    """The loss or the gradient norm became NaN or infinite."""


# ------------------------------------------------------------------------------------------------
# Configuration helpers
# ------------------------------------------------------------------------------------------------
def preset_hint(index: CodeIndex) -> str:
    """A preset that fits a code set, for the message when ``--preset`` is missing."""
    if index.grid_size <= 8 and index.num_samples <= 100_000:
        return "ARPG-demo (2.6M parameters, the shipped demo model's size)"
    if index.num_samples <= 200_000:
        return "ARPG-S (~50M parameters)"
    return "ARPG-L (320M parameters, the paper's smallest)"


def resolve_model_config(preset: str | None, overrides: dict[str, Any], index: CodeIndex) -> tuple[ARPGConfig, list[str]]:
    """The preset with ``overrides``, adapted to the codes (grid, vocabulary, classes) when not overridden."""
    if preset is None:
        raise ARPGError(f"choose the model size with --preset ({', '.join(ARPG_PRESETS)}); for these codes "
                        f"({index.num_samples} images, {index.grid_size}x{index.grid_size} grid, {index.num_classes} "
                        f"classes) a fitting one is {preset_hint(index)}")
    cfg = get_preset(preset, **overrides)
    notes, fit = [], {}
    for key, have in (("grid_size", index.grid_size), ("vocab_size", index.vocab_size),
                      ("num_classes", index.num_classes)):
        want = getattr(cfg, key)
        if key in overrides:
            ok = want == have if key == "grid_size" else want >= have
            if not ok:
                raise ARPGError(f"the codes have {key}={have} but the model config says {key}={want}")
        elif want != have:
            fit[key] = have
    if fit:
        cfg = ARPGConfig.from_dict({**cfg.to_dict(), **fit})
        notes.append("model config adapted to the codes: " + ", ".join(f"{k}={v}" for k, v in fit.items()))
    return cfg, notes


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    name = (name or "auto").lower()
    if name == "auto":
        ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else torch.float32
    if name in ("fp32", "float32"):
        return torch.float32
    if name in ("bf16", "bfloat16"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ARPGError("this GPU does not support bf16; use --dtype fp32")
        return torch.bfloat16
    raise ARPGError(f"unsupported training dtype {name!r}; choose auto, fp32 or bf16")


def total_steps(cfg: TrainConfig, num_samples: int) -> int:
    if cfg.steps is not None and cfg.epochs is not None:
        raise ARPGError("give --steps or --epochs, not both")
    if cfg.steps is not None:
        steps = int(cfg.steps)
    elif cfg.epochs is not None:
        steps = math.ceil(cfg.epochs * num_samples / cfg.batch_size)
    else:
        raise ARPGError("give the run length with --steps or --epochs")
    if steps < 1:
        raise ARPGError(f"the run must have at least one step (got {steps})")
    return steps


def resume_train_config(out: str, resume: str, explicit: dict[str, Any]) -> TrainConfig | None:
    """The settings of the run to resume: the checkpoint's, with the flags the user typed (``explicit``) on
    top. Flags that contradict what defines the run (:data:`FIXED_ON_RESUME`) are refused; the length
    (``--steps`` / ``--epochs``), logging, checkpointing, sampling and hardware settings may change.
    None when ``resume == "auto"`` and ``out`` holds no checkpoint yet (a fresh start)."""
    path = ckpt.latest_checkpoint(out) if resume == "auto" else Path(resume)
    if path is None:
        return None
    state = ckpt.load_checkpoint(path)
    stored = state.get("args")
    if not isinstance(stored, dict):
        raise ARPGError(f"{path} stores no training settings; run with every flag of the original command")
    given = {k: (list(v) if isinstance(v, tuple) else v) for k, v in explicit.items()}
    problems = ckpt.describe_differences(stored, given, [k for k in FIXED_ON_RESUME if k in given and k != "overrides"])
    # Model fields are compared with the model the checkpoint holds, field by field.
    overrides = given.get("overrides") or {}
    problems += ckpt.describe_differences(state.get("config") or {}, overrides, list(overrides))
    if problems:
        raise ARPGError(f"cannot resume from {path} with other settings: {'; '.join(problems)}; drop these flags "
                        "(a resumed run keeps its own) or start a new run in another --out")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = {k: v for k, v in stored.items() if k in fields}
    if "steps" in explicit or "epochs" in explicit:  # the new length replaces the stored one, in either unit
        merged.pop("steps", None)
        merged.pop("epochs", None)
    merged.update(explicit)
    merged.update(out=str(out), resume=str(resume))
    merged["betas"] = tuple(merged.get("betas", (0.9, 0.95)))
    return TrainConfig(**merged)


def _state_dict_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


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
        self.model_cfg, notes = resolve_model_config(cfg.preset, dict(cfg.overrides), self.data.index)
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
        self.stream = SampleStream(self.data, cfg.seed, self.model_cfg.class_dropout)

        resume_path = self._resume_path()
        # The model: identical initial weights on every rank (same seed), class dropout done by the stream.
        torch.manual_seed(cfg.seed)
        with torch.device(d.device):
            model = ARPG(dataclasses.replace(self.model_cfg, class_dropout=0.0))
        if cfg.init and resume_path is None:
            sd, extras = read_checkpoint(cfg.init)
            check_init_config(extras.get("config"), self.model_cfg, cfg.init)
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

    def recipe(self) -> dict[str, Any]:
        c = self.cfg
        return {"batch_size": c.batch_size, "total_steps": self.total_steps, "lr": c.lr, "min_lr": c.min_lr,
                "warmup": c.warmup, "weight_decay": c.weight_decay, "betas": list(c.betas),
                "grad_clip": c.grad_clip, "seed": c.seed, "ema": c.ema}

    def data_fingerprint(self) -> dict[str, Any]:
        i = self.data.index
        return {"num_samples": i.num_samples, "num_crops": i.num_crops, "grid_size": i.grid_size,
                "vocab_size": i.vocab_size, "num_classes": i.num_classes}

    def _write_run_json(self) -> None:
        info = {"args": self.cfg.to_dict(), "model_config": self.model_cfg.to_dict(), "recipe": self.recipe(),
                "data": self.data_fingerprint(), "world_size": self.dist.world_size,
                "micro_batch": self.micro_batch, "base_lr": self.base_lr, "warmup_steps": self.schedule.warmup,
                "amp_dtype": str(self.amp_dtype).replace("torch.", "")}
        (self.out / "run.json").write_text(json.dumps(info, indent=1))

    # -- checkpoints ------------------------------------------------------------------------------
    def _full_state_dicts(self, with_optimizer: bool = True) -> tuple[dict, dict | None, dict | None]:
        """Full (gathered) model, EMA and optimizer state dicts; collective under FSDP, complete on rank 0."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        opts = _state_dict_options(cpu_offload=True)
        ema_sd = None
        if self.ema is not None:
            with self.ema.swapped_in():
                # Clone: without a process group the helpers return views of the live parameters.
                ema_sd = {k: v.detach().clone() for k, v in get_model_state_dict(self.model, options=opts).items()}
        model_sd = get_model_state_dict(self.model, options=opts)
        optim_sd = get_optimizer_state_dict(self.model, self.optimizer, options=opts) if with_optimizer else None
        return model_sd, ema_sd, optim_sd

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
                "format": ckpt.FORMAT, "version": ckpt.VERSION, "step": self.step,
                "world_size": self.dist.world_size,
                "model": model_sd, "ema": ema_sd, "optimizer": optim_sd,
                "scheduler": self.schedule.state_dict(), "rng": rng,
                "data": {"position": self.step * self.cfg.batch_size,
                         "epoch": self.step * self.cfg.batch_size / len(self.data)},
                "config": self.model_cfg.to_dict(), "args": self.cfg.to_dict(), "recipe": self.recipe(),
                "data_fingerprint": self.data_fingerprint(),
            }
            path = ckpt.save_checkpoint(state, self.out, self.step, keep=self.cfg.keep)
        barrier(self.dist)
        self.last_checkpoint = ckpt.checkpoint_path(self.out, self.step)
        return path

    def _load(self, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        state = ckpt.load_checkpoint(path)
        problems = ckpt.describe_differences(state.get("config", {}), self.model_cfg.to_dict())
        problems += ckpt.describe_differences(state.get("recipe", {}), self.recipe(), RECIPE_KEYS)
        problems += ckpt.describe_differences(state.get("data_fingerprint", {}), self.data_fingerprint(),
                                              DATA_KEYS, prefix="codes ")
        if problems:
            raise ARPGError(f"cannot resume from {path}: it was trained with different settings: "
                            + "; ".join(problems))
        opts = _state_dict_options()
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
    def _plain_model(self, sd: dict, device: torch.device) -> ARPG:
        """A non-distributed model with the real config holding ``sd`` (for sampling and export)."""
        c = self.model_cfg
        with torch.device("meta"):  # no random init: every weight is overwritten below
            model = ARPG(c)
        model = model.to_empty(device=device)
        model.rope.copy_(model.rope_table())
        load_state_strict(model, sd, "training state")
        return model.eval()

    def sample_grid(self) -> Path | None:
        """Generate ``sample_count`` samples (EMA weights if any) and save codes (+ an image grid)."""
        model_sd, ema_sd, _ = self._full_state_dicts(with_optimizer=False)
        if not self.dist.is_main:
            return None
        try:
            from ..sampling import generate
        except ImportError as e:  # the sampler is optional for training
            tqdm.write(f"arpg train: sampling unavailable ({e}); skipping the sample grid")
            return None
        cfg = self.model_cfg
        labels = torch.arange(self.cfg.sample_count, device=self.dist.device) % cfg.num_classes
        folder = self.out / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        devices = [self.dist.device] if self.dist.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # sampling never disturbs the training generators
            model = self._plain_model(ema_sd if ema_sd is not None else model_sd, self.dist.device)
            gen = torch.Generator(device=self.dist.device).manual_seed(self.cfg.seed)
            codes = generate(model, labels, steps=min(self.cfg.sample_steps, cfg.n_cells),
                             cfg_scale=self.cfg.sample_cfg, generator=gen,
                             dtype=self.amp_dtype if self.amp_dtype != torch.float32 else None)
            del model  # a full copy of the weights: do not keep it on the training device
        stem = folder / f"step-{self.step:08d}"
        np.save(f"{stem}.npy", codes.cpu().numpy())
        if self.cfg.tokenizer:
            images = self._decode(codes)
            save_image_grid(images, f"{stem}.png")
            return Path(f"{stem}.png")
        return Path(f"{stem}.npy")

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        if self._tokenizer is None:
            from ..vq import load_tokenizer

            self._tokenizer = load_tokenizer(self.cfg.tokenizer).to(self.dist.device).eval()
        with torch.no_grad():
            return self._tokenizer.decode(codes)

    def export(self) -> tuple[Path | None, Path | None]:
        """Final raw and EMA weights as .safetensors with the config (rank 0 writes)."""
        model_sd, ema_sd, _ = self._full_state_dicts(with_optimizer=False)
        if not self.dist.is_main:
            return None, None
        raw = self.out / "final.safetensors"
        save_model(self._plain_model(model_sd, torch.device("cpu")), raw)
        ema_path = None
        if ema_sd is not None:
            ema_path = self.out / "final-ema.safetensors"
            save_model(self._plain_model(ema_sd, torch.device("cpu")), ema_path)
        return raw, ema_path

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
            tokens, labels, orders = (t.to(d.device, non_blocking=True) for t in self.stream.batch(pos))
            with _grad_sync(self.wrapped, last, cfg.fsdp and d.distributed):
                with torch.autocast(device_type=d.device.type, dtype=self.amp_dtype,
                                    enabled=self.amp_dtype != torch.float32):
                    logits = self.wrapped(tokens, labels, orders)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.gather(1, orders).reshape(-1))
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


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, columns: int | None = None) -> None:
    """Save images ``[B, C, H, W]`` in ``[-1, 1]`` as one PNG grid (uint8 = clamp(127.5 x + 128))."""
    from PIL import Image

    x = (images.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    B, C, H, W = x.shape
    cols = columns or max(1, math.ceil(math.sqrt(B)))
    rows = math.ceil(B / cols)
    grid = torch.zeros(C, rows * H, cols * W, dtype=torch.uint8)
    for i in range(B):
        r, c = divmod(i, cols)
        grid[:, r * H:(r + 1) * H, c * W:(c + 1) * W] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if C == 1 else arr).save(path)


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) training as configured; joins torchrun's process group when launched by it."""
    info = init_distributed(cfg.device)
    try:
        return Trainer(cfg, info).fit()
    finally:
        shutdown(info)
