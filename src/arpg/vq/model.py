"""The VQ tokenizer: image ↔ grid of integer codes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ARPGError
from .config import VQConfig, get_vq_preset
from .layers import Decoder, Encoder
from .quantizer import VectorQuantizer
from ..util.pretrained import PretrainedMixin


@dataclass
class VQOutput:
    """What a training forward pass returns (losses unweighted; the trainer weights them)."""

    recon: torch.Tensor  # [B, C, H, W], unclamped
    codes: torch.Tensor  # [B, h, w]
    latent: torch.Tensor  # normalised encoder output [B, D, h, w] (before quantisation)
    codebook_loss: torch.Tensor
    commit_loss: torch.Tensor


class VQTokenizer(nn.Module, PretrainedMixin):
    """Convolutional VQ autoencoder with LlamaGen's parameter names (``encoder``, ``decoder``,
    ``quantize``, ``quant_conv``, ``post_quant_conv``).

    Public inference API (batched, no grad): :meth:`encode` images in [-1, 1] → codes [B, h·w] in raster
    order; :meth:`decode` codes → images in [-1, 1]. Images may have any size that is a multiple of
    :attr:`downsample`.
    """

    model_type = "vq"
    config_class = VQConfig
    metadata_key = "vq_config"
    pipeline_tag = "image-to-image"  # encode + decode: an image back from its codes

    def card_facts(self) -> dict[str, Any]:
        c = self.config
        return {"architecture": f"VQ tokenizer (LlamaGen layout): {self.downsample}x downsampling, codebook "
                                f"{c.codebook_size} x {c.codebook_dim}, ch {c.ch}, ch_mult {list(c.ch_mult)}, "
                                f"{c.in_channels} input channel(s)",
                "parameters": f"{sum(p.numel() for p in self.parameters()):,}", "config": c.to_dict()}

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_dim, config.z_channels, 1)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "VQTokenizer":
        """A randomly initialised tokenizer of the named preset (``VQ-16``, ``VQ-demo``, ``VQ-tiny``, ...)."""
        return cls(get_vq_preset(name, **overrides))

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        """Code grid (h, w) for an image of ``height`` × ``width`` pixels."""
        f = self.downsample
        if height % f or width % f or height < f or width < f:
            raise ARPGError(f"image size {height}x{width} is not a multiple of the tokenizer's downsampling "
                            f"factor {f}; resize or crop to e.g. {max(f, height // f * f)}x{max(f, width // f * f)}")
        return height // f, width // f

    # Differentiable pieces ----------------------------------------------------------------------
    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, D, h, w] (the vectors that get quantised)."""
        return self.quantize.normalize(self.quant_conv(self.encoder(images)), dim=1)

    def decode_latent(self, z_q: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] (not clamped) from quantised latents [B, D, h, w]."""
        return self.decoder(self.post_quant_conv(z_q))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantised latents [B, D, h, w] for codes [B, h, w]."""
        return self.quantize.lookup(codes)

    def forward(self, images: torch.Tensor) -> VQOutput:
        """Training pass: encode, quantise with a straight-through estimator, decode."""
        z = self.encode_latent(images)
        z_st, codes, cb_loss, commit_loss = self.quantize(z)
        return VQOutput(self.decode_latent(z_st), codes, z, cb_loss, commit_loss)

    # Inference API -------------------------------------------------------------------------------
    @torch.no_grad()
    def quantize_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_q, codes)`` for normalised latents ``z`` [B, D, h, w]."""
        codes = self.quantize.nearest(z)
        return self.quantize.lookup(codes), codes

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Float images [B, C, H, W] in [-1, 1] → codes LongTensor [B, h·w] in raster order (row-major)."""
        images = self._check_images(images)
        chunks = images.split(batch_size or max(1, len(images)))
        codes = [self.quantize.nearest(self.encode_latent(x)).flatten(1) for x in chunks]
        return torch.cat(codes) if codes else torch.empty(0, 0, dtype=torch.long)

    @torch.no_grad()
    def decode(self, codes: Any, grid: tuple[int, int] | None = None, batch_size: int | None = None) -> torch.Tensor:
        """Codes [B, h·w] (raster order) or [B, h, w] → float images [B, C, h·f, w·f] clamped to [-1, 1].

        A flat code sequence needs ``grid=(h, w)`` unless it is square.
        """
        codes = self._check_codes(codes, grid)
        out = [self.decode_latent(self.lookup(c)).float().clamp_(-1, 1)
               for c in codes.split(batch_size or max(1, len(codes)))]
        return torch.cat(out)

    # Input checks (one-line errors) ----------------------------------------------------------------
    def _param(self) -> torch.Tensor:
        return self.quant_conv.weight

    def _check_images(self, images: Any) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise ARPGError(f"encode expects a float torch tensor [B, C, H, W] in [-1, 1]; got {type(images).__name__} "
                            "(convert uint8 pixels or PIL images with arpg.vq.from_uint8)")
        if not images.is_floating_point():
            raise ARPGError(f"encode expects float images in [-1, 1]; got a {str(images.dtype).replace('torch.', '')} "
                            "tensor (convert uint8 pixels with arpg.vq.from_uint8)")
        if images.ndim != 4:
            raise ARPGError(f"encode expects images shaped [B, C, H, W]; got {list(images.shape)}")
        c = self.config.in_channels
        if images.shape[1] != c:
            hint = " (channels-last? use x.permute(0, 3, 1, 2))" if images.shape[-1] == c else ""
            raise ARPGError(f"this tokenizer expects {c}-channel images; got {images.shape[1]} channels "
                            f"(shape {list(images.shape)}){hint}")
        self.grid_shape(images.shape[2], images.shape[3])
        if images.numel():
            lo, hi = images.min().item(), images.max().item()
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ARPGError("images contain NaN or infinite values")
            if lo < -1.5 or hi > 1.5:
                raise ARPGError(f"images must be floats in [-1, 1]; got values in [{lo:.3g}, {hi:.3g}] "
                                "(pixels 0..255? use arpg.vq.from_uint8)")
        p = self._param()
        return images.to(device=p.device, dtype=p.dtype)

    def _check_codes(self, codes: Any, grid: tuple[int, int] | None) -> torch.Tensor:
        if isinstance(codes, np.ndarray):
            codes = torch.from_numpy(codes)
        if not isinstance(codes, torch.Tensor):
            raise ARPGError(f"decode expects an integer tensor of codes; got {type(codes).__name__}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ARPGError(f"decode expects integer codes [B, h*w] or [B, h, w]; got a "
                            f"{str(codes.dtype).replace('torch.', '')} tensor (images go to encode)")
        if codes.ndim == 2:
            n = codes.shape[1]
            if grid is None:
                side = math.isqrt(n)
                if side * side != n:
                    raise ARPGError(f"cannot infer the grid of {n} codes per image; pass grid=(h, w)")
                grid = (side, side)
            if grid[0] * grid[1] != n:
                raise ARPGError(f"grid {tuple(grid)} holds {grid[0] * grid[1]} codes, but each image has {n}")
            codes = codes.reshape(codes.shape[0], grid[0], grid[1])
        elif codes.ndim == 3:
            if grid is not None and tuple(grid) != tuple(codes.shape[1:]):
                raise ARPGError(f"grid {tuple(grid)} does not match codes shaped {list(codes.shape)}")
        else:
            raise ARPGError(f"decode expects codes shaped [B, h*w] or [B, h, w]; got {list(codes.shape)}")
        if codes.numel():
            lo, hi = codes.min().item(), codes.max().item()
            if lo < 0 or hi >= self.config.codebook_size:
                raise ARPGError(f"codes must lie in 0..{self.config.codebook_size - 1}; got values in [{lo}, {hi}]")
        return codes.to(device=self._param().device, dtype=torch.long)
