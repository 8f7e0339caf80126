"""ControlARPG's model side: a condition encoder that gives one feature per grid cell, and how those features
enter Pass 2.

The paper (arXiv 2503.10568, following ControlAR) makes Pass-2 queries *target-aware*: the query of cell
``c`` starts from the condition's feature at ``c`` instead of the shared [MASK] embedding, and the
class-conditional model is fine-tuned with the encoder. Two ways are offered (``ARPGConfig.condition_mode``):

* ``"add"`` (default): query input = [MASK] (+ class) + feature. The encoder's last layer starts at zero, so
  a fine-tune starts *exactly* at the class-conditional model and only moves as far as the condition helps;
  a row without a condition is the plain model. The default: in a pilot (benchmarks/results/control_pilot.md)
  it led early and was level by step 600.
* ``"replace"``: query input = feature (+ class), the paper's wording; a row without a condition falls back
  to the [MASK] embedding. The encoder starts random, so the first steps undo part of the pretrained queries.

The encoder is a small convolutional network trained from scratch (no pretrained weights can be
downloaded here); ``condition_encoder`` names the kind so another (e.g. a pretrained ViT adapter) can be added
to :data:`ENCODERS`. A condition map is ``[B, C, S, S]`` floats in ``[0, 1]`` with ``S = grid * stride``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import ARPGError

CONDITION_MODES = ("add", "replace")
ENCODERS = ("conv",)
#: What the unconditional half of classifier-free guidance sees: "keep" (class dropped, condition kept: the
#: paper's choice, guidance sharpens the class only) or "drop" (class and condition dropped).
CONDITION_GUIDANCE = ("keep", "drop")


class ConvConditionEncoder(nn.Module):
    """``[B, C, S, S]`` -> ``[B, grid*grid, dim]`` (raster order): 3x3 convolutions, ``log2(stride)`` of them
    with stride 2, then a 1x1 projection to the model width (zero-initialised in ``add`` mode)."""

    def __init__(self, channels: int, dim: int, stride: int, width: int, zero_out: bool):
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ARPGError(f"condition_stride must be a power of 2, got {stride}")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.SiLU()]
        for _ in range(int(math.log2(stride))):
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU()]
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, dim, 1)
        self.zero_out = zero_out
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
        if self.zero_out:  # the fine-tune starts exactly at the class-conditional model
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        else:
            nn.init.normal_(self.out.weight, std=0.02)
            nn.init.zeros_(self.out.bias)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        f = self.out(self.body(condition))
        return f.flatten(2).transpose(1, 2)


def build_encoder(kind: str, channels: int, dim: int, stride: int, width: int, mode: str) -> nn.Module:
    if kind == "conv":
        return ConvConditionEncoder(channels, dim, stride, width, zero_out=mode == "add")
    raise ARPGError(f"condition_encoder must be one of {ENCODERS}, got {kind!r}")


def check_condition(condition: torch.Tensor, batch: int | None, channels: int, side: int) -> torch.Tensor:
    """A float ``[batch, channels, side, side]`` condition (a ``[C, S, S]`` one is shared by the batch; with
    ``batch`` None any batch size is accepted), or a one-line error naming what is wrong."""
    if not isinstance(condition, torch.Tensor):
        raise ARPGError(f"condition must be a tensor [B, {channels}, {side}, {side}], got {type(condition).__name__}")
    if condition.dim() == 3 and batch is not None:
        condition = condition[None].expand(batch, -1, -1, -1)
    want = (condition.shape[0] if batch is None and condition.dim() == 4 else batch or 1, channels, side, side)
    if tuple(condition.shape) != want:
        raise ARPGError(f"condition must be shaped {list(want)} (batch, channels, side, side) for this model, got "
                        f"{list(condition.shape)}")
    if not condition.is_floating_point():
        raise ARPGError(f"condition must hold floats in [0, 1], got dtype {condition.dtype}")
    if not bool(torch.isfinite(condition).all()):
        raise ARPGError("condition holds NaN or infinite values")
    return condition


def gather_cells(features: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """``features[b, cells[b, t]]``: [B, n, d] gathered at cells [B, T] -> [B, T, d]."""
    return features.gather(1, cells[..., None].expand(-1, -1, features.shape[-1]))


def condition_queries(base: torch.Tensor, mask_row: torch.Tensor, features: torch.Tensor, cells: torch.Tensor,
                      mode: str, active: torch.Tensor | None) -> torch.Tensor:
    """Pass-2 inputs with the condition: ``base`` [B, T, d] is [MASK] (+ class), ``mask_row`` [d] the [MASK]
    embedding, ``features`` [B, n, d] the encoder's output, ``active`` [B] which rows have a condition (None:
    all)."""
    f = gather_cells(features.to(base.dtype), cells)
    x = base + f if mode == "add" else base - mask_row.to(base.dtype) + f
    if active is None:
        return x
    return torch.where(active[:, None, None], x, base)

