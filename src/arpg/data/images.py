"""Image sets for tokenizer training: images held in memory (or read on demand), the bundled split, and the
batch schedule that picks each step's images from ``(seed, step)`` alone (so a resumed run sees the same
batches)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ARPGError
from .animal_mnist import load_split, padded
from .crops import center_crop_arr
from .folder import read_rgb, scan_image_folder

BUNDLED = "animal-mnist"


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
        image = center_crop_arr(read_rgb(path), self.size)
        if self.channels == 1:
            image = image.convert("L")
        arr = np.asarray(image).reshape(self.size, self.size, -1)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        if self.pixels is not None:
            return self.pixels[indices]
        return torch.stack([self._read(self.paths[i]) for i in indices.tolist()])


def bundled_images(split: str, size: int, channels: int) -> ImageSet:
    """A split of the bundled Animal-MNIST set at ``size`` pixels, padded (exact pixels) like extract-codes
    and the demo frame it, or resized when smaller."""
    images, _ = load_split(split)
    if size >= images.shape[-1]:  # pad (exact pixels), the framing extract-codes and the demo use
        x = torch.from_numpy(padded(images, size)).permute(0, 3, 1, 2)
    else:
        x = torch.from_numpy(images).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return ImageSet(x.expand(-1, channels, -1, -1).contiguous(), size=size, channels=channels)


def load_image_sets(data: str, size: int, channels: int, eval_images: int,
                    progress: bool = False) -> tuple[ImageSet, ImageSet, str]:
    """``(train, eval, eval_name)`` for ``data`` (a class-folder root or ``animal-mnist``): the bundled set
    has a held-out split; a folder is evaluated on a fixed subset of its own images."""
    if data == BUNDLED:
        return bundled_images("train", size, channels), bundled_images("heldout", size, channels), "heldout"
    samples, _ = scan_image_folder(data)
    train = ImageSet(paths=[p for p, _ in samples], size=size, channels=channels, progress=progress)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(12345))[:eval_images]
    pick = pick.sort().values
    if train.pixels is not None:
        evalset = ImageSet(train.pixels[pick], size=size, channels=channels)
    else:
        evalset = ImageSet(paths=[train.paths[i] for i in pick.tolist()], size=size, channels=channels)
    return train, evalset, "train-subset"


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
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
            self._perm = torch.randperm(self.n, generator=step_generator(self.seed, epoch, 1))
            self._epoch = epoch
        return self._perm[i * self.batch_size:(i + 1) * self.batch_size]
