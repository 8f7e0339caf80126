"""LPIPS-style perceptual distance from a VGG-like feature network loaded by path.

We ship no weights (none can be downloaded here). The user passes one or more files whose merged
tensors hold

* the conv stack, named like torchvision's VGG ``features.{i}.weight`` / ``.bias`` (also accepted:
  the ``lpips`` package's ``net.slice{k}.{i}.*`` names, any prefix before them), and
* optionally the LPIPS linear heads ``lin{k}.model.1.weight`` (or ``lin{k}.weight``) shaped [1, C, 1, 1].

With torchvision's VGG16 weights plus LPIPS's ``vgg.pth`` this computes LPIPS(vgg) exactly: input
scaling, ReLU taps at the end of each stage (relu1_2 … relu5_3), channel-unit-normalised features,
squared differences weighted by the linear heads, spatial mean, summed over taps. Without linear
heads every channel weighs 1 (the un-learned "baseline" variant).

The stage layout is read from the conv indices, torchvision-style: conv ``i`` is followed by its ReLU at
``i + 1``; a max-pool sits at ``i + 2`` when the next conv is at ``i + 3``. So any VGG-like stack loads,
including the small random stand-in the tests use.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..util.checkpoints import read_checkpoint
from ..errors import CheckpointError

# LPIPS' ScalingLayer constants for inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_CONV = re.compile(r"(?:^|\.)(?:features|slice\d+)\.(\d+)\.(weight|bias)$")
_LIN = re.compile(r"(?:^|\.)lin(\d+)\.(?:model\.1\.)?weight$")


class PerceptualLoss(nn.Module):
    """Frozen feature net; ``forward(x, y)`` → per-sample distances [B] for images in [-1, 1]."""

    def __init__(self, convs: list[tuple[torch.Tensor, torch.Tensor]], pool_after: list[bool],
                 lins: list[torch.Tensor] | None = None):
        super().__init__()
        self.convs = nn.ModuleList()
        for w, b in convs:
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2)
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(b)
            self.convs.append(conv)
        self.pool_after = list(pool_after)
        # A tap ends every stage: the ReLU before each pool, and the last ReLU.
        self.taps = [i for i, p in enumerate(self.pool_after) if p or i == len(self.convs) - 1]
        widths = [self.convs[i].out_channels for i in self.taps]
        if lins is None:
            lins = [torch.ones(1, c, 1, 1) for c in widths]
        if [lin.numel() for lin in lins] != widths:
            raise CheckpointError(f"perceptual weights: {len(lins)} linear heads of widths "
                                  f"{[lin.numel() for lin in lins]} do not fit the feature taps {widths}")
        for k, lin in enumerate(lins):
            self.register_buffer(f"lin{k}", lin.reshape(1, -1, 1, 1).float().clone())
        self.in_channels = self.convs[0].in_channels
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # always frozen, never in training mode

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1 and self.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != self.in_channels:
            raise CheckpointError(f"perceptual net expects {self.in_channels}-channel inputs; got {x.shape[1]}")
        if self.in_channels == 3:
            x = (x - self.shift) / self.scale
        feats = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i in self.taps:
                feats.append(x)
            if self.pool_after[i]:
                x = F.max_pool2d(x, 2)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for k, (fx, fy) in enumerate(zip(self._features(x), self._features(y))):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + ((fx - fy).pow(2) * getattr(self, f"lin{k}")).sum(1).mean((1, 2))
        return total


def perceptual_from_state_dict(sd: dict[str, torch.Tensor], source: str = "weights") -> PerceptualLoss:
    """Build a :class:`PerceptualLoss` from merged tensors (see the module docstring for names)."""
    convs: dict[int, dict[str, torch.Tensor]] = {}
    lins: dict[int, torch.Tensor] = {}
    for key, value in sd.items():
        if m := _CONV.search(key):
            convs.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif m := _LIN.search(key):
            lins[int(m.group(1))] = value
    order = sorted(convs)
    if not order:
        raise CheckpointError(f"{source} holds no VGG-style conv weights (expected keys like features.0.weight)")
    incomplete = [i for i in order if set(convs[i]) != {"weight", "bias"} or convs[i]["weight"].ndim != 4]
    if incomplete:
        raise CheckpointError(f"{source}: conv layer(s) {incomplete} lack a 4-D weight or a bias")
    for a, b in zip(order, order[1:]):
        if b - a not in (2, 3):
            raise CheckpointError(f"{source}: conv indices {a} and {b} do not follow the VGG layout (conv, relu[, pool])")
        if convs[b]["weight"].shape[1] != convs[a]["weight"].shape[0]:
            raise CheckpointError(f"{source}: conv {b} takes {convs[b]['weight'].shape[1]} channels but conv {a} "
                                  f"gives {convs[a]['weight'].shape[0]}")
    pool_after = [b - a == 3 for a, b in zip(order, order[1:])] + [False]
    lin_list = [lins[k].float() for k in sorted(lins)] if lins else None
    return PerceptualLoss([(convs[i]["weight"].float(), convs[i]["bias"].float()) for i in order], pool_after,
                          lin_list)


def load_perceptual(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> PerceptualLoss:
    """Load the feature net (and optional LPIPS heads) from one file or several (their tensors are merged)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    merged: dict[str, torch.Tensor] = {}
    for path in paths:
        sd, _ = read_checkpoint(path)
        merged.update(sd)
    return perceptual_from_state_dict(merged, source=", ".join(map(str, paths)))
