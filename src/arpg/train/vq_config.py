"""The settings of a tokenizer training run (``arpg train-vq``), and how a resumed run gets them back."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.images import BUNDLED
from ..errors import ARPGError, CheckpointError
from ..util.configs import check_field_types
from ..vq import get_vq_preset
from . import checkpointing as ckpt

#: Checkpoint kind of tokenizer runs (see :mod:`arpg.train.checkpointing`).
KIND = "vq"
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
        """The fields of ``d`` (keys of other versions are ignored, so old checkpoints still resume)."""
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
    state = ckpt.load_checkpoint(path, kind=KIND)
    return TrainVQConfig.from_dict({**state["train_config"], **explicit, "out": str(out)})
