"""Code extraction: images -> crops -> VQ codes, written as a code folder (see :mod:`arpg.data.codes`).

The image list (a class-folder tree, or the bundled Animal-MNIST split) is cut into chunks of
``shard_size`` images; chunk ``c`` becomes shard ``c`` and is the unit of work and of resumption:

* under torchrun, rank ``r`` of ``W`` extracts the chunks ``c`` with ``c % W == r`` (disjoint slices);
* a chunk is finished when its ``chunk-XXXXX.json`` exists (written last, atomically, after its two
  ``.npy`` files), so an interrupted run restarted with the same command skips finished chunks;
* an image that cannot be read or cropped is skipped, counted, listed in ``skipped.txt`` and reported
  at the end -- never fatal;
* when every chunk is done, rank 0 writes ``index.json`` (what :class:`~arpg.data.codes.CodeDataset` reads).

The settings of the extraction (source, image size, crops, tokenizer) are kept in ``extract.json``;
restarting into the same folder with different settings is refused.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..errors import ARPGError
from ..util.distributed import barrier, init_distributed, shutdown
from ..util.files import atomic_write
from ..vq import load_tokenizer
from . import animal_mnist as am
from .captions import ReadCaptioned, read_captions, save_prompt_features, text_info
from .codes import CodeIndex, code_dtype, condition_info, condition_shard_name, save_npy, shard_names, text_shard_names
from .conditions import BINARY_KINDS, condition_stride, make_condition, pack_maps
from .crops import CROP_MODES, make_crops, to_model_input
from .folder import read_rgb, scan_image_folder

BUNDLED = "animal-mnist"
SETTINGS_NAME = "extract.json"
SKIPPED_NAME = "skipped.txt"


@dataclass
class ExtractConfig:
    """Settings of one extraction (``arpg extract-codes --help`` documents each)."""

    data: str  # a class-folder root, or "animal-mnist"
    out: str
    tokenizer: str
    image_size: int | None = None  # default: see default_image_size (never an upsampling of the data)
    crops: str = "ten"  # ten | flip | single
    batch_size: int = 32  # images read per batch, and crops per encoder call
    shard_size: int = 20_000  # images per shard / resumable chunk
    split: str = "train"  # animal-mnist split
    workers: int | None = None  # image-decoding worker processes (folders only); default min(4, CPUs)
    device: str = "auto"
    progress: bool = True
    condition: str | None = None  # ControlARPG: also store this kind of condition map per crop (canny | layout)
    captions: bool = False  # data is a caption set (metadata.jsonl folder or WebDataset shards): store prompt features
    text_encoder: str = "google/flan-t5-xl"  # what encodes the captions (a Hub name or a local folder)
    text_len: int = 120  # prompt slots kept per caption


@dataclass
class ExtractSummary:
    num_samples: int
    skipped: int
    shards: int
    chunks_done_before: int
    index: CodeIndex | None


# ------------------------------------------------------------------------------------------------
# Image sources
# ------------------------------------------------------------------------------------------------
class CropSource(torch.utils.data.Dataset):
    """Item ``i`` -> ``(crops float [K, C, S, S] or None, label, i, reason, maps uint8 [K, 1, M, M] or None)``;
    failures never raise. ``maps`` are the crops' condition maps when ``condition`` (a kind) is set."""

    def __init__(self, names: list[str], labels: list[int], load: Callable[[int], Image.Image], size: int,
                 crops: str, channels: int):
        self.names, self.labels, self.load = names, labels, load
        self.size, self.crops, self.channels = size, crops, channels
        self.condition: str | None = None
        self.grid = 0
        self.captions: list[str] | None = None  # caption sets: one per item
        self.pre_skipped: list[str] = []  # caption-set samples skipped while reading the set

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        try:
            crops = make_crops(self.load(i), self.size, self.crops)
            maps = None if self.condition is None else \
                np.stack([make_condition(self.condition, c, self.grid) for c in crops])
            return to_model_input(crops, self.channels), self.labels[i], i, "", maps
        except Exception as e:  # unreadable / truncated / degenerate images are skipped, not fatal
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            return None, self.labels[i], i, why, None


def open_source(cfg: ExtractConfig, channels: int) -> tuple[CropSource, list[str], str]:
    """The image source for ``cfg.data``, its class names and a description for the index."""
    if cfg.captions:  # one caption per image; labels are all 0
        cs = read_captions(cfg.data)
        files = [p for p, offset, _ in cs.sources if offset < 0]
        size = cfg.image_size or (default_image_size(files) if files else PAPER_IMAGE_SIZE)
        src = CropSource(cs.names, [0] * len(cs), ReadCaptioned(cs.sources), size, cfg.crops, channels)
        src.captions, src.pre_skipped = cs.captions, cs.skipped
        return src, ["text"], cs.description
    if cfg.data == BUNDLED:
        images, labels = am.load_split(cfg.split)
        size = cfg.image_size or am.DEMO_IMAGE_SIZE
        pixels = am.padded(images, am.DEMO_IMAGE_SIZE)[..., 0]  # the demo's exact 32x32 framing
        names = [f"{cfg.split}/{i}" for i in range(len(labels))]
        src = CropSource(names, [int(y) for y in labels], _ReadArray(pixels), size, cfg.crops, channels)
        return src, list(am.CLASS_NAMES), f"{BUNDLED}:{cfg.split}"
    samples, classes = scan_image_folder(cfg.data)
    paths = [p for p, _ in samples]
    size = cfg.image_size or default_image_size(paths)
    src = CropSource(paths, [y for _, y in samples], _ReadFile(paths), size, cfg.crops, channels)
    return src, classes, str(Path(cfg.data).resolve())


#: The paper's training resolution: the default crop size for image folders whose images are at least this big.
PAPER_IMAGE_SIZE = 256


def default_image_size(paths: list[str], probe: int = 32) -> int:
    """The crop size when ``--image-size`` is not given: 256 (the paper's), or the images' own size when
    they are smaller -- the median short side of up to ``probe`` evenly spread images -- so small images
    are never silently upsampled."""
    sides = []
    for p in paths[:: max(1, len(paths) // probe)][:probe]:
        try:
            with Image.open(p) as im:
                sides.append(min(im.size))
        except (OSError, ValueError):
            continue  # unreadable files are skipped (and reported) by the extraction itself
    if not sides:
        return PAPER_IMAGE_SIZE
    return min(PAPER_IMAGE_SIZE, int(np.median(sides)))


def default_workers() -> int:
    """Image-decoding workers: 4, or fewer on a machine with fewer CPUs."""
    return max(0, min(4, (os.cpu_count() or 1)))


class _ReadFile:
    """Picklable loader for DataLoader workers: item -> RGB image from a file."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __call__(self, i: int) -> Image.Image:
        return read_rgb(self.paths[i])


class _ReadArray:
    """Picklable loader: item -> grayscale image from a uint8 array [N, H, W]."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.pixels[i], "L")


def _collate(batch):
    return batch  # keep failures (None) for the caller to count


# ------------------------------------------------------------------------------------------------
# Chunks
# ------------------------------------------------------------------------------------------------
def chunk_json(out: Path, c: int) -> Path:
    return out / f"chunk-{c:05d}.json"


def chunk_done(out: Path, c: int, condition: str | None = None, captions: bool = False) -> bool:
    names = shard_names(c) + ((condition_shard_name(c),) if condition else ()) + (text_shard_names(c) if captions else ())
    return chunk_json(out, c).exists() and all((out / name).exists() for name in names)


def _encode_chunk(tok, src: CropSource, items: range, cfg: ExtractConfig, device: torch.device, n_cells: int,
                  vocab: int, bar: tqdm) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]], np.ndarray | None,
                                                  list[int]]:
    K = CROP_MODES[cfg.crops]
    codes = np.empty((len(items), K, n_cells), dtype=code_dtype(vocab))
    maps = None
    labels = np.empty(len(items), dtype=np.int64)
    skipped: list[tuple[str, str]] = []
    kept: list[int] = []  # the items whose codes were written, in order
    sub = torch.utils.data.Subset(src, list(items))
    workers = 0 if cfg.data == BUNDLED else (default_workers() if cfg.workers is None else cfg.workers)
    loader = torch.utils.data.DataLoader(sub, batch_size=cfg.batch_size, num_workers=workers,
                                         collate_fn=_collate, shuffle=False)
    n = 0
    for batch in loader:
        good = [b for b in batch if b[0] is not None]
        skipped += [(src.names[b[2]], b[3]) for b in batch if b[0] is None]
        if good:
            x = torch.stack([b[0] for b in good]).flatten(0, 1)
            with torch.inference_mode():  # at most batch_size crops per encoder call (bounded memory)
                parts = [tok.encode(part.to(device)).cpu() for part in x.split(cfg.batch_size)]
            c = torch.cat(parts).reshape(len(good), K, -1).numpy()
            if c.shape[-1] != n_cells:
                raise ARPGError(f"the tokenizer gave {c.shape[-1]} codes per crop, expected {n_cells}")
            codes[n:n + len(good)] = c
            labels[n:n + len(good)] = [b[1] for b in good]
            kept += [b[2] for b in good]
            if src.condition is not None:
                m = np.stack([b[4] for b in good])
                if maps is None:
                    maps = np.empty((len(items),) + m.shape[1:], dtype=np.uint8)
                maps[n:n + len(good)] = m
            n += len(good)
        bar.update(len(batch))
    return codes[:n], labels[:n], skipped, None if maps is None else maps[:n], kept


def _settings(cfg: ExtractConfig, tok, source: str, num_items: int, size: int) -> dict[str, Any]:
    return {"source": source, "num_items": num_items, "image_size": size, "crop_mode": cfg.crops,
            "num_crops": CROP_MODES[cfg.crops], "shard_size": cfg.shard_size, "condition": cfg.condition,
            "text": {"encoder": cfg.text_encoder, "length": cfg.text_len} if cfg.captions else None,
            "tokenizer": {"path": str(Path(cfg.tokenizer).resolve()), "config": tok.config.to_dict()}}


def _check_settings(out: Path, now: dict[str, Any]) -> None:
    path = out / SETTINGS_NAME
    if not path.exists():
        return
    old = json.loads(path.read_text())
    diffs = [f"{k} {old.get(k)!r} (before) vs {now.get(k)!r} (now)" for k in sorted(set(old) | set(now))
             if k != "tokenizer" and old.get(k) != now.get(k)]
    if old.get("tokenizer", {}).get("config") != now["tokenizer"]["config"]:
        diffs.append("the tokenizer's config differs")
    if diffs:
        raise ARPGError(f"{out} holds codes extracted with other settings ({'; '.join(diffs)}); "
                        "use a new --out folder")


def chunks_for_rank(n_chunks: int, rank: int, world_size: int) -> list[int]:
    """The chunks rank ``rank`` extracts: every ``world_size``-th, starting at ``rank`` (disjoint, complete)."""
    return list(range(rank, n_chunks, world_size))


def extract_codes(cfg: ExtractConfig, tokenizer=None, dist_info=None, text_encoder=None) -> ExtractSummary:
    """Run (or resume) an extraction; joins torchrun's process group when launched by it.

    ``tokenizer`` may be given directly (any object with ``encode``, ``config.in_channels``,
    ``config.to_dict()``, ``downsample`` and ``codebook_size``); otherwise it is loaded from ``cfg.tokenizer``.
    ``dist_info`` (a :class:`~arpg.train.distributed.DistInfo`) overrides the rank / world size taken from
    torchrun's environment; the caller then owns the process group. ``text_encoder`` (caption sets): an
    :class:`arpg.text.TextEncoder` to use instead of loading ``cfg.text_encoder``.
    """
    if cfg.crops not in CROP_MODES:
        raise ARPGError(f"unknown crop mode {cfg.crops!r}; choose one of {', '.join(CROP_MODES)}")
    if cfg.batch_size < 1 or cfg.shard_size < 1:
        raise ARPGError("--batch-size and --shard-size must be >= 1")
    if cfg.workers is not None and cfg.workers < 0:
        raise ARPGError(f"--workers must be >= 0, got {cfg.workers}")
    if cfg.image_size is not None and cfg.image_size < 1:
        raise ARPGError(f"--image-size must be >= 1, got {cfg.image_size}")
    own_group = dist_info is None
    info = init_distributed(cfg.device) if own_group else dist_info
    try:
        tok = tokenizer
        if tok is None:
            tok = load_tokenizer(cfg.tokenizer, device=info.device)
        channels = int(tok.config.in_channels)
        src, classes, source = open_source(cfg, channels)
        if cfg.captions and text_encoder is None:
            from ..text import load_text_encoder
            text_encoder = load_text_encoder(cfg.text_encoder, cfg.text_len, device=info.device)
        size = src.size
        f = int(tok.downsample)
        if cfg.image_size is None:
            if size % f:  # the data's own size, rounded down to the token grid
                size = src.size = max(f, size // f * f)
            if info.is_main:
                print(f"arpg extract-codes: --image-size not given: cropping to {size} px (" +
                      ("the bundled set's size" if cfg.data == BUNDLED else
                       f"the paper's {PAPER_IMAGE_SIZE}" if size == PAPER_IMAGE_SIZE else
                       "the images' own short side, so they are not upsampled") + ")", flush=True)
        if size % f:
            raise ARPGError(f"--image-size {size} is not a multiple of the tokenizer's downsampling factor {f}")
        grid, vocab = size // f, int(tok.codebook_size)
        if cfg.condition is not None:
            condition_stride(cfg.condition, size, grid)  # checks the kind
            make_condition(cfg.condition, Image.new("L", (size, size)), grid)  # a missing OpenCV fails here, once
            src.condition, src.grid = cfg.condition, grid
        out = Path(cfg.out)
        settings = _settings(cfg, tok, source, len(src), size)
        _check_settings(out, settings)
        barrier(info)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if not (out / SETTINGS_NAME).exists():
                text = json.dumps(settings, indent=1)
                atomic_write(out / SETTINGS_NAME, lambda tmp: Path(tmp).write_text(text))
        barrier(info)

        n_chunks = max(1, math.ceil(len(src) / cfg.shard_size))
        mine = chunks_for_rank(n_chunks, info.rank, info.world_size)
        todo = [c for c in mine if not chunk_done(out, c, cfg.condition, cfg.captions)]

        def span(c: int) -> range:
            return range(c * cfg.shard_size, min(len(src), (c + 1) * cfg.shard_size))

        total = sum(len(span(c)) for c in mine)
        desc = "extract" if info.world_size == 1 else f"extract (rank 0 of {info.world_size})"
        bar = tqdm(total=total, initial=total - sum(len(span(c)) for c in todo), desc=desc, unit="img",
                   dynamic_ncols=True, disable=not (info.is_main and cfg.progress))
        if hasattr(tok, "eval"):
            tok.eval()
        for c in todo:
            codes, labels, skipped, maps, kept = _encode_chunk(tok, src, span(c), cfg, info.device, grid * grid,
                                                               vocab, bar)
            if cfg.captions:
                save_prompt_features(out, c, text_encoder, [src.captions[i] for i in kept], cfg.batch_size)
            cname, lname = shard_names(c)
            save_npy(out / cname, codes)
            save_npy(out / lname, labels)
            if cfg.condition is not None:
                if maps is None:  # every image of the chunk was skipped
                    maps = np.zeros((0, CROP_MODES[cfg.crops], 1, 1, 1), dtype=np.uint8)
                save_npy(out / condition_shard_name(c), pack_maps(maps) if cfg.condition in BINARY_KINDS else maps)
            meta = json.dumps({"chunk": c, "count": int(len(labels)), "items": len(span(c)), "skipped": skipped})
            atomic_write(chunk_json(out, c), lambda tmp: Path(tmp).write_text(meta))
        bar.close()
        barrier(info)
        index = None
        if info.is_main:
            index = _write_index(out, n_chunks, settings, grid, vocab, classes, src.pre_skipped)
        barrier(info)
        done_before = len(mine) - len(todo)
        if index is None:
            return ExtractSummary(0, 0, 0, done_before, None)
        return ExtractSummary(index.num_samples, index.skipped, len(index.shards), done_before, index)
    finally:
        if own_group:
            shutdown(info)


def _write_index(out: Path, n_chunks: int, settings: dict[str, Any], grid: int, vocab: int,
                 classes: list[str], pre_skipped: list[str] = ()) -> CodeIndex:
    kind = settings.get("condition")
    text = settings.get("text")
    missing = [c for c in range(n_chunks) if not chunk_done(out, c, kind, bool(text))]
    if missing:
        raise ARPGError(f"{len(missing)} chunk(s) of {out} are unfinished (first: {missing[0]}); run the same "
                        "command again to complete them")
    shards, skipped, total = [], [], 0
    for c in range(n_chunks):
        meta = json.loads(chunk_json(out, c).read_text())
        skipped += meta["skipped"]
        if meta["count"]:
            cname, lname = shard_names(c)
            shards.append({"codes": cname, "labels": lname, "count": meta["count"]})
            if kind:
                shards[-1]["conditions"] = condition_shard_name(c)
            if text:
                shards[-1]["text"], shards[-1]["text_mask"] = text_shard_names(c)
            total += meta["count"]
    skipped += [tuple(line.split(": ", 1)) if ": " in line else (line, "") for line in pre_skipped]
    report = "".join(f"{name}\t{why}\n" for name, why in skipped)
    atomic_write(out / SKIPPED_NAME, lambda tmp: Path(tmp).write_text(report))
    index = CodeIndex(num_samples=total, grid_size=grid, vocab_size=vocab, num_crops=settings["num_crops"],
                      class_names=classes, shards=shards, crop_mode=settings["crop_mode"],
                      image_size=settings["image_size"], source=settings["source"],
                      tokenizer=settings["tokenizer"]["path"], skipped=len(skipped),
                      condition=None if not kind else condition_info(kind, settings["image_size"], grid),
                      text=None if not text else text_info(out, shards, text))
    if total == 0:
        raise ARPGError(f"no image of {settings['source']} could be read ({len(skipped)} skipped; see "
                        f"{out / SKIPPED_NAME})")
    index.write(out)
    return index
