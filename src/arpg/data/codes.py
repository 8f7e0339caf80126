"""Extracted code sets on disk, and the data set that reads them.

Layout of a code folder::

    DIR/index.json           what is in the folder (see :class:`CodeIndex`)
    DIR/codes-00000.npy      uint16 (int32 if vocab > 65536) [count, num_crops, grid*grid], raster order
    DIR/labels-00000.npy     int64 [count]
    DIR/conditions-00000.npy ControlARPG sets only: uint8 [count, num_crops, C, S, S] condition maps, one per
                             crop; binary kinds (canny, layout) packed 8 pixels per byte: [..., S, ceil(S/8)]
    DIR/text-00000.npy       caption sets only: float16 [count, L, D] prompt features (left-padded)
    DIR/text_mask-00000.npy  caption sets only: bool [count, L], True where a prompt has a real token
    ...                      a few large shards; read through numpy memory maps, never loaded whole

``index.json`` holds ``num_samples``, ``grid_size``, ``vocab_size``, ``num_crops``, ``crop_mode``,
``image_size``, ``class_names`` (label ``i`` = ``class_names[i]``), the list of shards with their counts and,
for sets extracted with ``--condition``, ``condition``: ``{"kind", "channels", "side", "stride", "packed"}``;
for caption sets (``--captions``), ``text``: ``{"dim", "length", "encoder"}`` (their labels are all 0).

Which crop a sample gives is a pure function of ``(seed, epoch, index)`` (a counter-based hash): random
from epoch to epoch, but identical in every worker and every rank, and again after a resume.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ARPGError
from ..util.files import atomic_write, load_npy
from .conditions import BINARY_KINDS, condition_stride, pack_maps, to_condition_tensor, unpack_maps

INDEX_NAME = "index.json"
FORMAT = "arpg-codes"
VERSION = 1

# ------------------------------------------------------------------------------------------------
# Counter-based hashing: reproducible randomness keyed by integers (no generator state to carry).
# ------------------------------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (a bijection on uint64 with good avalanche)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def hash64(*keys: Any) -> np.ndarray:
    """Hash integer keys (scalars or broadcastable arrays) into uniformly distributed uint64 values."""
    with np.errstate(over="ignore"):
        h = np.full((), 0x243F6A8885A308D3, dtype=np.uint64)
        for k in keys:
            k = np.asarray(k).astype(np.int64).astype(np.uint64)
            h = _mix64(h ^ _mix64(k + _GOLDEN))
        return h


def hash_uniform(*keys: Any) -> np.ndarray:
    """Floats in ``[0, 1)`` (53 bits) from :func:`hash64` of ``keys``."""
    return (hash64(*keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


STREAM_CROP = 1  # hash stream ids keep the different uses independent
STREAM_ORDER = 2
STREAM_DROP = 3
STREAM_CONDITION_DROP = 4
STREAM_CAPTION_DROP = 5


# ------------------------------------------------------------------------------------------------
# Index
# ------------------------------------------------------------------------------------------------
@dataclass
class CodeIndex:
    """Contents of ``index.json``."""

    num_samples: int
    grid_size: int
    vocab_size: int
    num_crops: int
    class_names: list[str]
    shards: list[dict[str, Any]]  # [{"codes": file, "labels": file, "count": n}, ...]
    crop_mode: str = "single"
    image_size: int | None = None
    source: str | None = None
    tokenizer: str | None = None
    skipped: int = 0
    condition: dict[str, Any] | None = None  # {"kind", "channels", "side", "stride", "packed"} of stored maps
    text: dict[str, Any] | None = None  # {"dim", "length", "encoder"} of stored prompt features
    format: str = FORMAT
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_cells(self) -> int:
        return self.grid_size * self.grid_size

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def read(cls, root: str | os.PathLike) -> "CodeIndex":
        path = Path(root) / INDEX_NAME
        if not path.exists():
            hint = " (extraction unfinished? run arpg extract-codes again to complete it)" \
                if any(Path(root).glob("chunk-*.json")) else ""
            raise ARPGError(f"{root} is not a code folder: {INDEX_NAME} not found{hint}")
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ARPGError(f"cannot read {path}: {e}") from None
        if d.get("format") != FORMAT:
            raise ARPGError(f"{path} is not an ARPG code index (format {d.get('format')!r})")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def write(self, root: str | os.PathLike) -> None:
        text = self.to_json()
        atomic_write(Path(root) / INDEX_NAME, lambda tmp: Path(tmp).write_text(text))


def code_dtype(vocab_size: int) -> np.dtype:
    """Smallest dtype holding codes ``0..vocab_size-1`` (uint16 up to 65536)."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.int32)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Atomically write one ``.npy`` file (temp file + rename)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save(str) would append '.npy' to the temp name
            np.save(f, array)

    atomic_write(path, write)


def shard_names(shard_id: int) -> tuple[str, str]:
    return f"codes-{shard_id:05d}.npy", f"labels-{shard_id:05d}.npy"


def text_shard_names(shard_id: int) -> tuple[str, str]:
    return f"text-{shard_id:05d}.npy", f"text_mask-{shard_id:05d}.npy"


def condition_shard_name(shard_id: int) -> str:
    return f"conditions-{shard_id:05d}.npy"


def condition_info(kind: str, image_size: int, grid: int, channels: int = 1) -> dict[str, Any]:
    """The index's description of stored condition maps of ``kind``."""
    from_kind = condition_stride(kind, image_size, grid)
    return {"kind": kind, "channels": channels, "side": grid * from_kind, "stride": from_kind,
            "packed": kind in BINARY_KINDS}


def stored_width(info: dict[str, Any]) -> int:
    """Bytes per map row on disk (maps of binary kinds are bit-packed)."""
    return -(-info["side"] // 8) if info.get("packed") else info["side"]


def write_code_set(root: str | os.PathLike, codes: np.ndarray, labels: np.ndarray, *, vocab_size: int,
                   class_names: Sequence[str], crop_mode: str | None = None, shard_size: int = 100_000,
                   conditions: np.ndarray | None = None, condition_kind: str | None = None, **meta: Any) -> CodeIndex:
    """Write codes ``[N, K, n]`` (or ``[N, n]`` for one crop) and labels ``[N]`` as a code folder; with
    ``conditions`` (uint8 ``[N, K, C, S, S]``) and their ``condition_kind``, a ControlARPG set.

    Used by tests and small data sets; ``arpg extract-codes`` writes the same layout shard by shard.
    """
    codes = np.asarray(codes)
    if codes.ndim == 2:
        codes = codes[:, None]
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    N, K, n = codes.shape
    grid = int(round(n ** 0.5))
    if grid * grid != n:
        raise ARPGError(f"codes must cover a square grid; got {n} cells per crop")
    if len(labels) != N:
        raise ARPGError(f"{N} code rows but {len(labels)} labels")
    if codes.size and (codes.min() < 0 or codes.max() >= vocab_size):
        raise ARPGError(f"codes must lie in 0..{vocab_size - 1}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ARPGError(f"labels must lie in 0..{len(class_names) - 1}")
    info = None
    if conditions is not None:
        conditions = np.asarray(conditions)
        if conditions.dtype != np.uint8 or conditions.ndim != 5 or conditions.shape[:2] != (N, K) or \
                conditions.shape[3] != conditions.shape[4]:
            raise ARPGError(f"conditions must be uint8 [{N}, {K}, C, S, S], got {conditions.dtype} {list(conditions.shape)}")
        side = conditions.shape[-1]
        if condition_kind is None or side % grid:
            raise ARPGError(f"conditions need their kind, and a side ({side}) that is a multiple of the grid ({grid})")
        info = {"kind": condition_kind, "channels": int(conditions.shape[2]), "side": side, "stride": side // grid,
                "packed": condition_kind in BINARY_KINDS}
        if info["packed"]:
            conditions = pack_maps(conditions)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for sid, start in enumerate(range(0, max(N, 1), shard_size)):
        c, y = codes[start:start + shard_size], labels[start:start + shard_size]
        cname, lname = shard_names(sid)
        save_npy(root / cname, c.astype(code_dtype(vocab_size)))
        save_npy(root / lname, y)
        shards.append({"codes": cname, "labels": lname, "count": int(len(y))})
        if conditions is not None:
            save_npy(root / condition_shard_name(sid), conditions[start:start + shard_size])
            shards[-1]["conditions"] = condition_shard_name(sid)
    mode = crop_mode or {1: "single", 2: "flip", 10: "ten"}.get(K, f"{K}-crop")
    index = CodeIndex(num_samples=int(N), grid_size=grid, vocab_size=int(vocab_size), num_crops=int(K),
                      class_names=list(class_names), shards=shards, crop_mode=mode, condition=info, **meta)
    index.write(root)
    return index


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
class CodeDataset(torch.utils.data.Dataset):
    """Codes and labels from a code folder, memory-mapped.

    ``dataset[i]`` returns ``(codes LongTensor [grid*grid] in raster order, label int)`` for one of
    sample ``i``'s crops, chosen by :meth:`crops_for` from ``(seed, epoch, i)``; call :meth:`set_epoch`
    to draw new crops. :meth:`get` reads whole batches at once (what the trainer uses).
    """

    def __init__(self, root: str | os.PathLike, seed: int = 0):
        self.root = Path(root)
        self.index = CodeIndex.read(self.root)
        self.seed = int(seed)
        self.epoch = 0
        self._codes: list[np.ndarray] = []
        self._conditions: list[np.ndarray] = []
        self._text: list[tuple[np.ndarray, np.ndarray]] = []
        cond, text = self.index.condition, self.index.text
        labels = []
        for s in self.index.shards:
            c = load_npy(self.root / s["codes"], "code shard", mmap=True)
            y = load_npy(self.root / s["labels"], "label shard", mmap=True)
            want = (s["count"], self.index.num_crops, self.index.n_cells)
            if tuple(c.shape) != want or len(y) != s["count"]:
                raise ARPGError(f"shard {s['codes']} of {self.root} has shape {list(c.shape)}, "
                                f"index.json says {list(want)}")
            if cond:
                if "conditions" not in s:
                    raise ARPGError(f"{self.root}/index.json lists condition maps but shard {s['codes']} has none")
                m = load_npy(self.root / s["conditions"], "condition shard", mmap=True)
                want_m = (s["count"], self.index.num_crops, cond["channels"], cond["side"], stored_width(cond))
                if tuple(m.shape) != want_m:
                    raise ARPGError(f"shard {s['conditions']} of {self.root} has shape {list(m.shape)}, "
                                    f"index.json says {list(want_m)}")
                self._conditions.append(m)
            if text:
                if "text" not in s:
                    raise ARPGError(f"{self.root}/index.json lists prompt features but shard {s['codes']} has none")
                f = load_npy(self.root / s["text"], "prompt feature shard", mmap=True)
                k = load_npy(self.root / s["text_mask"], "prompt mask shard", mmap=True)
                if tuple(f.shape) != (s["count"], text["length"], text["dim"]) or tuple(k.shape) != tuple(f.shape[:2]):
                    raise ARPGError(f"shard {s['text']} of {self.root} has shape {list(f.shape)}, index.json says "
                                    f"{[s['count'], text['length'], text['dim']]}")
                self._text.append((f, k))
            self._codes.append(c)
            labels.append(np.asarray(y, dtype=np.int64))
        self.labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        counts = [s["count"] for s in self.index.shards]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if self._starts[-1] != self.index.num_samples:
            raise ARPGError(f"{self.root}/index.json: shard counts sum to {self._starts[-1]}, "
                            f"not num_samples {self.index.num_samples}")
        if self.index.num_samples == 0:
            raise ARPGError(f"{self.root} holds no samples")

    def check_ranges(self, vocab_size: int, num_classes: int) -> None:
        """Refuse shards whose codes or labels fall outside the model's vocabulary / classes (one line naming
        the shard, the bad value and the range). Reads every shard once (memory-mapped, in slices)."""
        for s, codes, start, stop in zip(self.index.shards, self._codes, self._starts[:-1], self._starts[1:]):
            labels = self.labels[start:stop]
            if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
                bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
                raise ARPGError(f"shard {s['labels']} of {self.root} holds label {bad}, outside the model's "
                                f"classes 0..{num_classes - 1}")
            for i in range(0, len(codes), 4096):
                part = np.asarray(codes[i:i + 4096])
                lo, hi = int(part.min()), int(part.max())
                if lo < 0 or hi >= vocab_size:
                    raise ARPGError(f"shard {s['codes']} of {self.root} holds code {lo if lo < 0 else hi}, outside "
                                    f"the model's vocabulary 0..{vocab_size - 1}")

    def __len__(self) -> int:
        return self.index.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def crops_for(self, epoch: int | np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Crop number of each sample index for the given epoch(s): a hash of ``(seed, epoch, index)``."""
        K = self.index.num_crops
        if K == 1:
            return np.zeros(np.shape(indices), dtype=np.int64)
        return (hash64(self.seed, STREAM_CROP, epoch, indices) % np.uint64(K)).astype(np.int64)

    def get(self, indices: Sequence[int] | np.ndarray, crops: Sequence[int] | np.ndarray | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes LongTensor ``[B, grid*grid]`` and labels LongTensor ``[B]`` for sample ``indices``.

        ``crops`` picks each sample's crop (default: :meth:`crops_for` of the current epoch).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"sample index out of range 0..{len(self) - 1}")
        crop = self.crops_for(self.epoch, idx) if crops is None else np.asarray(crops, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), self.index.n_cells), dtype=np.int64)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard):
            rows = np.flatnonzero(shard == s)
            local = idx[rows] - self._starts[s]
            out[rows] = self._codes[s][local, crop[rows]]
        return torch.from_numpy(out), torch.from_numpy(self.labels[idx])

    def get_conditions(self, indices: Sequence[int] | np.ndarray, crops: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Condition maps float ``[B, C, S, S]`` in [0, 1] of the given samples and crops (ControlARPG sets)."""
        cond = self.index.condition
        if not cond:
            raise ARPGError(f"{self.root} holds no condition maps; extract them with arpg extract-codes --condition KIND")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        crop = np.asarray(crops, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), cond["channels"], cond["side"], stored_width(cond)), dtype=np.uint8)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard):
            rows = np.flatnonzero(shard == s)
            out[rows] = self._conditions[s][idx[rows] - self._starts[s], crop[rows]]
        return to_condition_tensor(unpack_maps(out, cond["side"]) if cond.get("packed") else out)

    def get_text(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt features float32 ``[B, L, D]`` and their mask bool ``[B, L]`` of the given samples (caption sets)."""
        text = self.index.text
        if not text:
            raise ARPGError(f"{self.root} holds no prompt features; extract a caption set with arpg extract-codes "
                            "--captions")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        feats = np.empty((len(idx), text["length"], text["dim"]), dtype=np.float32)
        mask = np.empty((len(idx), text["length"]), dtype=bool)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard):
            rows = np.flatnonzero(shard == s)
            f, k = self._text[s]
            feats[rows] = f[idx[rows] - self._starts[s]]
            mask[rows] = k[idx[rows] - self._starts[s]]
        return torch.from_numpy(feats), torch.from_numpy(mask)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        codes, labels = self.get([int(i)])
        return codes[0], int(labels[0])
