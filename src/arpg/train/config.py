"""The settings of an ARPG training run (``arpg train``): :class:`TrainConfig`, its checks, how the model
config and run length follow from the code set, and how a resumed run gets its settings back."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..model.config import ARPG_PRESETS, ARPGConfig, get_preset
from ..data.codes import CodeIndex
from ..errors import ARPGError
from ..util.devices import parse_dtype
from . import checkpointing as ckpt

#: Settings that must match to resume a run (they define the data stream, the schedule or the update). The
#: run length may grow: a resumed run with a larger ``--steps`` keeps the checkpoint's lr schedule, so the
#: extra steps run at the schedule's floor (``min_lr``) once its original length is passed.
RECIPE_KEYS = ("batch_size", "lr", "min_lr", "warmup", "weight_decay", "betas", "grad_clip", "seed", "ema")
#: TrainConfig fields a resumed run takes from its checkpoint unless given, and refuses when given differently.
FIXED_ON_RESUME = ("codes", "preset", "overrides", "condition") + RECIPE_KEYS
DATA_KEYS = ("num_samples", "num_crops", "grid_size", "vocab_size", "num_classes", "condition")


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
    # ControlARPG: train with the code set's condition maps of this kind (a condition encoder is added; with
    # --init, everything but the encoder comes from the checkpoint).
    condition: str | None = None
    fsdp: bool = False
    # torch.compile the training forward (and so its backward): faster after a one-off compile at the first
    # step (benchmarks/results/training_demo_b64.md).
    compile: bool = False
    # The head and the loss in chunks of this many rows (the full float32 logits never exist; the same loss
    # and gradients); 0 = the plain formula. Memory only: resumable with another value.
    loss_chunk: int = 1024
    # Recompute each block's activations in backward (less memory, about 1/3 more time).
    grad_checkpoint: bool = False
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
        for name in ("keep", "sample_every", "loss_chunk"):
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
    fields = SHAPELESS_FIELDS
    if model_cfg.texted and not init_config.get("text_dim"):  # class -> text: the class token is not used any more
        fields = tuple(k for k in fields if k not in ("class_rope", "class_queries"))
    diff = [f"{k}={init_config.get(k, defaults[k])!r} (model: {getattr(model_cfg, k)!r})" for k in fields
            if init_config.get(k, defaults[k]) != getattr(model_cfg, k)]
    if diff:
        raise ARPGError(f"--init {path} was trained with a different config: {'; '.join(diff)}; pass the same "
                        "values with --set FIELD=VALUE")


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


def resolve_model_config(preset: str | None, overrides: dict[str, Any], index: CodeIndex,
                         condition: str | None = None) -> tuple[ARPGConfig, list[str]]:
    """The preset with ``overrides``, adapted to the codes (grid, vocabulary, classes) when not overridden;
    with ``condition``, given the condition encoder fields of the code set's maps of that kind."""
    if preset is None:
        raise ARPGError(f"choose the model size with --preset ({', '.join(ARPG_PRESETS)}); for these codes "
                        f"({index.num_samples} images, {index.grid_size}x{index.grid_size} grid, {index.num_classes} "
                        f"classes) a fitting one is {preset_hint(index)}")
    overrides = dict(overrides)
    stored = index.condition
    if condition is not None:
        if not stored:
            raise ARPGError(f"--condition {condition}: the codes hold no condition maps; extract them with "
                            f"arpg extract-codes --condition {condition}")
        if stored["kind"] != condition:
            raise ARPGError(f"--condition {condition}: the codes hold {stored['kind']!r} maps")
        overrides.update(condition_channels=stored["channels"], condition_stride=stored["stride"],
                         condition_kind=condition)
    elif overrides.get("condition_channels"):
        raise ARPGError("condition_channels is set but --condition is not: say which of the codes' maps to train on")
    text = index.text
    if text:  # a caption set: the model takes its prompt features (any preset becomes a text-to-image model)
        for key, have in (("text_dim", text["dim"]), ("text_len", text["length"])):
            if overrides.get(key, have) != have:
                raise ARPGError(f"the codes hold prompt features with {key}={have} but the model config says "
                                f"{key}={overrides[key]}")
            overrides[key] = have
        overrides["class_rope"] = "identity"  # prompt keys must be attendable (arpg.model.text)
    elif overrides.get("text_dim") or get_preset(preset).texted:
        raise ARPGError(f"preset {preset} is text-to-image but the codes hold no prompt features; extract a caption "
                        "set with arpg extract-codes --captions")
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
    """The autocast dtype of training: ``auto`` is bf16 on GPUs that support it, else fp32; fp16 is refused
    (it needs loss scaling, which the trainer does not do)."""
    name = (name or "auto").lower()
    if name == "auto":
        ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else torch.float32
    dtype = parse_dtype(name)
    if dtype == torch.float16:
        raise ARPGError("fp16 training needs loss scaling, which arpg train does not do; use bf16 or fp32")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ARPGError("this GPU does not support bf16; use --dtype fp32")
    return dtype  # the emulation warning comes from the trainer, once every setting has been checked


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
