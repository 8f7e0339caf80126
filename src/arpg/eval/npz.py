"""Sample and reference image sets: the standard ``.npz`` layout and folders of images.

The standard layout (guided-diffusion / ADM evaluator, DiT): an uncompressed ``.npz`` whose ``arr_0`` is
uint8 ``[N, H, W, 3]`` (RGB, channels last); reference files such as ``VIRTUAL_imagenet256_labeled.npz``
add Inception statistics ``mu`` [2048] and ``sigma`` [2048, 2048] (and spatial ``mu_s`` / ``sigma_s``).

Reading and writing stream through the zip member in batches, so 50,000 images at 256 x 256 (9.8 GB)
never have to sit in memory at once; the files stay readable by ``np.load``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..data.folder import IMAGE_EXTENSIONS, read_rgb
from ..util.files import temp_beside
from ..errors import ARPGError

IMAGES_KEY = "arr_0"


class ImageSource:
    """A sized collection of uint8 RGB images that can be read in batches."""

    path: Path

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def read_all(self) -> np.ndarray:
        parts = list(self.batches(1024))
        return np.concatenate(parts) if parts else np.zeros((0, 0, 0, 3), np.uint8)


class NpzImages(ImageSource):
    """``arr_0`` (or ``key``) of an ``.npz``, read batch by batch straight from the zip member."""

    def __init__(self, path: str | os.PathLike, key: str = IMAGES_KEY):
        self.path, self.key = Path(path), key
        with self._open() as f:
            shape, dtype = _read_npy_header(f, self.path, key)
        if dtype.hasobject:
            raise ARPGError(f"refused {self.path}: {key} holds Python objects, not plain numbers (unsafe to load; "
                            "nothing in it was run)")
        if dtype != np.uint8:
            raise ARPGError(f"{self.path}: {key} has dtype {dtype}; expected uint8 images [N, H, W, 3]")
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
            raise ARPGError(f"{self.path}: {key} has shape {shape}; expected uint8 images [N, H, W, 3]")
        self.shape = shape

    def _open(self):
        z = zipfile.ZipFile(self.path)
        try:
            return _ClosingMember(z, z.open(f"{self.key}.npy"))
        except KeyError:
            z.close()
            raise ARPGError(f"{self.path} has no array {self.key!r}") from None

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        per_image = int(np.prod(self.shape[1:]))
        with self._open() as f:
            _read_npy_header(f, self.path, self.key)
            for start in range(0, len(self), batch_size):
                n = min(batch_size, len(self) - start)
                buf = f.read(n * per_image)
                if len(buf) != n * per_image:
                    raise ARPGError(f"{self.path}: {self.key} is truncated (image {start + len(buf) // per_image} "
                                    f"of {len(self)})")
                yield np.frombuffer(bytearray(buf), np.uint8).reshape(n, *self.shape[1:])  # writable copy


class _ClosingMember:
    def __init__(self, zf: zipfile.ZipFile, member):
        self.zf, self.member = zf, member

    def read(self, n: int = -1) -> bytes:
        return self.member.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.member.close()
        self.zf.close()


def _read_npy_header(f, path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
    except ValueError as e:
        raise ARPGError(f"{path}: {key} is not a valid .npy member ({e})") from None
    if fortran and len(shape) > 1:
        raise ARPGError(f"{path}: {key} is stored in Fortran order; re-save it with np.savez")
    return tuple(shape), dtype


class FolderImages(ImageSource):
    """All image files under a folder (recursively, sorted by path); every image must have the same size."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ARPGError(f"image folder not found: {self.path}")
        self.files = sorted(str(p) for p in self.path.rglob("*")
                            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not self.files:
            raise ARPGError(f"{self.path} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        first = np.asarray(read_rgb(self.files[0]))
        self.shape = (len(self.files), *first.shape)

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.files), batch_size):
            batch = []
            for f in self.files[start:start + batch_size]:
                im = np.asarray(read_rgb(f))
                if im.shape != self.shape[1:]:
                    raise ARPGError(f"{f} is {im.shape[1]}x{im.shape[0]} but the first image is "
                                    f"{self.shape[2]}x{self.shape[1]}; all images must have one size")
                batch.append(im)
            yield np.stack(batch)


def open_images(path: str | os.PathLike) -> ImageSource:
    """An ``.npz`` (``arr_0``) or a folder of images."""
    p = Path(path)
    if p.is_dir():
        return FolderImages(p)
    if not p.exists():
        raise ARPGError(f"not found: {p}")
    if not zipfile.is_zipfile(p):
        raise ARPGError(f"{p} is neither a folder of images nor an .npz file (corrupt or another format)")
    return NpzImages(p)


@dataclass
class Reference:
    """A reference set: images (for precision/recall, or FID when no statistics are stored) and/or stats."""

    path: Path
    images: ImageSource | None
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None

    @property
    def has_stats(self) -> bool:
        return self.mu is not None and self.sigma is not None


def load_reference(path: str | os.PathLike) -> Reference:
    """Read a reference ``.npz`` (``arr_0`` and/or ``mu`` + ``sigma``) or a folder of images."""
    p = Path(path)
    if p.is_dir():
        return Reference(p, FolderImages(p))
    if not p.exists():
        raise ARPGError(f"reference not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            mu = np.asarray(z["mu"], np.float64) if "mu" in keys else None
            sigma = np.asarray(z["sigma"], np.float64) if "sigma" in keys else None
    except ValueError as e:
        if "Object arrays" in str(e) or "allow_pickle" in str(e):
            raise ARPGError(f"refused {p}: it holds Python objects, not plain numbers (unsafe to load; nothing in "
                            "it was run)") from None
        raise ARPGError(f"{p} is not a readable .npz (corrupt or not an .npz file: {str(e)[:120]})") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise ARPGError(f"{p} is not a readable .npz (corrupt or not an .npz file: {str(e)[:120]})") from None
    if (mu is None) != (sigma is None):
        raise ARPGError(f"{p} has only one of 'mu' / 'sigma'; both are needed for stored statistics")
    images = NpzImages(p) if IMAGES_KEY in keys else None
    if images is None and mu is None:
        raise ARPGError(f"{p} has neither images ({IMAGES_KEY}) nor statistics (mu, sigma); keys: "
                        f"{', '.join(sorted(keys)) or 'none'}")
    return Reference(p, images, mu, sigma)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
class NpzWriter:
    """Stream ``num`` images of ``height x width`` into ``arr_0`` of a new ``.npz`` (atomically on close).

    ``extra`` arrays (e.g. ``{"arr_1": labels}``) are stored beside ``arr_0``. Use as a context manager;
    writing fewer or more than ``num`` images is an error and leaves no file behind.
    """

    def __init__(self, path: str | os.PathLike, num: int, height: int, width: int,
                 extra: dict[str, np.ndarray] | None = None):
        self.path, self.shape, self.extra = Path(path), (int(num), int(height), int(width), 3), extra or {}
        self.written = 0

    def write(self, images: np.ndarray) -> None:
        imgs = np.asarray(images)
        if imgs.dtype != np.uint8 or imgs.shape[1:] != self.shape[1:]:
            raise ARPGError(f"expected uint8 images [*, {self.shape[1]}, {self.shape[2]}, 3], got "
                            f"{imgs.dtype} {imgs.shape}")
        if self.written + len(imgs) > self.shape[0]:
            raise ARPGError(f"too many images: {self.written + len(imgs)} > {self.shape[0]}")
        self._zf_member.write(np.ascontiguousarray(imgs).tobytes())
        self.written += len(imgs)

    def __enter__(self) -> "NpzWriter":
        self._tmp = Path(temp_beside(self.path, ".partial"))
        self._zf = zipfile.ZipFile(self._tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._zf_member = self._zf.open(f"{IMAGES_KEY}.npy", "w", force_zip64=True)
        np.lib.format.write_array_header_1_0(
            self._zf_member, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                              "shape": self.shape})
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._zf_member.close()
            if exc_type is None:
                if self.written != self.shape[0]:
                    raise ARPGError(f"wrote {self.written} images but promised {self.shape[0]}")
                for key, arr in self.extra.items():
                    with self._zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
            self._zf.close()
            if exc_type is None:  # a crash before this line leaves any previous file intact
                with open(self._tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp.exists():
                self._tmp.unlink()


def write_npz(path: str | os.PathLike, images: np.ndarray | Iterable[np.ndarray], num: int | None = None,
              extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write the standard ``.npz`` from an array ``[N, H, W, 3]`` or an iterable of such batches.

    For an iterable, ``num`` (the total) is required so that the header can be written first.
    """
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ARPGError(f"images must be uint8 [N, H, W, 3], got shape {images.shape}")
        batches: Iterable[np.ndarray] = [images]
        num = len(images)
        first = images
    else:
        if num is None:
            raise ARPGError("write_npz needs num= when images come in batches")
        it = iter(images)
        try:
            first = np.asarray(next(it))
        except StopIteration:
            raise ARPGError("no images to write") from None
        batches = _chain(first, it)
    with NpzWriter(path, num, first.shape[1], first.shape[2], extra) as w:
        for b in batches:
            w.write(b)
    return Path(path)


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def folder_to_npz(folder: str | os.PathLike, out: str | os.PathLike, batch_size: int = 256,
                  extra: dict[str, np.ndarray] | None = None) -> Path:
    """Pack every image of ``folder`` (sorted by path) into the standard ``.npz`` at ``out``."""
    src = FolderImages(folder)
    return write_npz(out, src.batches(batch_size), num=len(src), extra=extra)
