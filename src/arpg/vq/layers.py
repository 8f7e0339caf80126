"""Encoder and decoder of the VQ autoencoder (LlamaGen's layout and parameter names).

Module names matter: they are the state-dict keys of ``vq_ds16_c2i.pt``, e.g.
``encoder.conv_blocks.{l}.res.{j}.norm1`` or ``decoder.conv_blocks.{l}.upsample.conv``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQConfig


def _norm(channels: int, cfg: VQConfig) -> nn.GroupNorm:
    return nn.GroupNorm(cfg.norm_groups, channels, eps=cfg.norm_eps, affine=True)


class ResBlock(nn.Module):
    """GroupNorm–swish–conv twice, with a 1×1 ``nin_shortcut`` when the width changes."""

    def __init__(self, c_in: int, c_out: int, cfg: VQConfig):
        super().__init__()
        self.norm1 = _norm(c_in, cfg)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1×1 convolutions for q, k, v and the output."""

    def __init__(self, channels: int, cfg: VQConfig):
        super().__init__()
        self.norm = _norm(channels, cfg)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        # [B, 1, HW, C] so SDPA treats the whole map as one head.
        q, k, v = (m(n).reshape(b, 1, c, h * w).transpose(-1, -2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Pad right/bottom by one, then a 3×3 stride-2 conv (as LlamaGen, so the weights line up)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``res`` blocks, optional ``attn`` after each, optional resampler."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, attn: bool, cfg: VQConfig):
        super().__init__()
        self.res = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(n_blocks):
            self.res.append(ResBlock(c_in, c_out, cfg))
            c_in = c_out
            if attn:
                self.attn.append(AttnBlock(c_out, cfg))

    def blocks(self, h: torch.Tensor) -> torch.Tensor:
        for j, res in enumerate(self.res):
            h = res(h)
            if len(self.attn):
                h = self.attn[j](h)
        return h


def _mid(channels: int, cfg: VQConfig) -> nn.ModuleList:
    middle = [ResBlock(channels, channels, cfg)]
    if cfg.mid_attn:
        middle.append(AttnBlock(channels, cfg))
    middle.append(ResBlock(channels, channels, cfg))
    return nn.ModuleList(middle)


class Encoder(nn.Module):
    """Image [B, C, H, W] → features [B, z_channels, H/f, W/f]."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        c_in = cfg.ch
        for level, c_out in enumerate(widths):
            block = _Level(c_in, c_out, cfg.enc_blocks, cfg.attn_lowest and level == last, cfg)
            if level != last:
                block.downsample = Downsample(c_out)
            self.conv_blocks.append(block)
            c_in = c_out
        self.mid = _mid(c_in, cfg)
        self.norm_out = _norm(c_in, cfg)
        self.conv_out = nn.Conv2d(c_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.conv_blocks:
            h = block.blocks(h)
            if hasattr(block, "downsample"):
                h = block.downsample(h)
        for m in self.mid:
            h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Features [B, z_channels, h, w] → image [B, C, h·f, w·f] (unbounded; ≈[-1, 1] once trained).

    ``conv_blocks`` run from the lowest resolution up, so index 0 is the deepest level (the one with
    attention) and every level but the last upsamples.
    """

    def __init__(self, cfg: VQConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult][::-1]
        last = len(widths) - 1
        c_in = widths[0]
        self.conv_in = nn.Conv2d(cfg.z_channels, c_in, 3, padding=1)
        self.mid = _mid(c_in, cfg)
        self.conv_blocks = nn.ModuleList()
        for level, c_out in enumerate(widths):
            block = _Level(c_in, c_out, cfg.dec_blocks, cfg.attn_lowest and level == 0, cfg)
            if level != last:
                block.upsample = Upsample(c_out)
            self.conv_blocks.append(block)
            c_in = c_out
        self.norm_out = _norm(c_in, cfg)
        self.conv_out = nn.Conv2d(c_in, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        for block in self.conv_blocks:
            h = block.blocks(h)
            if hasattr(block, "upsample"):
                h = block.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
