"""Caption data: images with one caption each, in the two layouts text-to-image sets ship in.

* **An image folder with ``metadata.jsonl``** (the Hugging Face imagefolder convention): one JSON object per
  line with ``file_name`` (relative to the folder) and ``text``.
* **WebDataset tar shards** (how LAION, DataComp and BLIP3o are shipped): members grouped by key (the name
  up to the first dot), an image (``.jpg``, ``.png``, ``.webp``, ...) and a caption (``.txt``, or ``.json``
  with a ``caption`` or ``text`` field). Shards are indexed once with Python's ``tarfile`` (member offsets, no
  image decoded) and images are then read by offset, so extraction can split the set into resumable chunks
  as it does image folders; the ``webdataset`` package is not needed for that.

What is skipped, counted and reported (never fatal): a key without an image or without a caption, an empty
caption, a caption file that is not UTF-8 or not JSON. A folder line that is not JSON, lacks ``file_name`` /
``text`` or names a missing file is refused in one line naming the line, because it means the metadata is
wrong rather than one sample being bad. Unreadable image bytes are skipped by the extraction like any
unreadable image.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ARPGError
from ..util.files import load_npy, read_jsonl
from .codes import save_npy, text_shard_names
from .folder import IMAGE_EXTENSIONS, read_rgb

METADATA = "metadata.jsonl"
CAPTION_KEYS = ("caption", "text")


@dataclass
class CaptionSet:
    """Where each image is (a file path, or a tar shard and member offset) and its caption."""

    sources: list[tuple[str, int, int]]  # (path, offset, size); offset -1 = a plain file
    captions: list[str]
    names: list[str]  # how the extraction's report names each image (a path, or shard/member)
    skipped: list[str] = field(default_factory=list)  # "name: why", for the extraction's report
    description: str = ""

    def __len__(self) -> int:
        return len(self.captions)


def is_caption_source(path: str | os.PathLike) -> bool:
    """True for a folder holding ``metadata.jsonl``, a ``.tar`` shard, or a folder of ``.tar`` shards."""
    p = Path(path)
    return (p.is_dir() and ((p / METADATA).is_file() or any(p.glob("*.tar")))) or (p.is_file() and p.suffix == ".tar")


def read_caption_folder(root: str | os.PathLike) -> CaptionSet:
    """Images and captions of a folder with ``metadata.jsonl``."""
    root = Path(root)
    meta = root / METADATA
    if not meta.is_file():
        raise ARPGError(f"{root} has no {METADATA} (one JSON object per line: file_name, text)")
    sources, captions, skipped = [], [], []
    for n, row in read_jsonl(meta, "caption metadata"):
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) or "text" not in row:
            raise ARPGError(f"{meta}:{n} needs a file_name and a text")
        path = root / row["file_name"]
        if not path.is_file():
            raise ARPGError(f"{meta}:{n} names {row['file_name']}, which is not in {root}")
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            skipped.append(f"{row['file_name']}: empty caption")
            continue
        sources.append((str(path), -1, 0))
        captions.append(text.strip())
    if not captions:
        raise ARPGError(f"{meta} lists no image with a caption")
    return CaptionSet(sources, captions, [p for p, _, _ in sources], skipped, str(root.resolve()))


def _caption_of(name: str, data: bytes) -> str:
    text = data.decode("utf-8")
    if name.endswith(".json"):
        obj = json.loads(text)
        text = next((obj[k] for k in CAPTION_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), str)), "")
    return text.strip()


def read_webdataset(shards: str | os.PathLike | list) -> CaptionSet:
    """Images and captions of WebDataset tar shards (a ``.tar`` file, a folder of them, or a list)."""
    if isinstance(shards, (str, os.PathLike)):
        p = Path(shards)
        paths = sorted(p.glob("*.tar")) if p.is_dir() else [p]
    else:
        paths = [Path(s) for s in shards]
    if not paths:
        raise ARPGError(f"no .tar shards in {shards}")
    sources, captions, names, skipped = [], [], [], []
    for shard in paths:
        try:
            tar = tarfile.open(shard)
        except (OSError, tarfile.TarError) as e:
            raise ARPGError(f"{shard} is not a readable tar shard ({type(e).__name__})") from None
        groups: dict[str, dict[str, tarfile.TarInfo]] = {}
        with tar:
            try:
                members = tar.getmembers()
            except (tarfile.TarError, OSError, EOFError) as e:  # a truncated shard: keep what was read
                skipped.append(f"{shard.name}: truncated after {len(tar.members)} members ({type(e).__name__})")
                members = tar.members
            for m in members:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                key, _, ext = base.partition(".")
                groups.setdefault(m.name[:len(m.name) - len(base)] + key, {})["." + ext.lower()] = m
            for key, parts in groups.items():
                image = next((parts[e] for e in parts if e in IMAGE_EXTENSIONS), None)
                cap = parts.get(".txt") or parts.get(".json")
                if image is None or cap is None:
                    skipped.append(f"{shard.name}/{key}: {'no image' if image is None else 'no caption'}")
                    continue
                try:
                    text = _caption_of(cap.name, tar.extractfile(cap).read())
                except (UnicodeDecodeError, json.JSONDecodeError, OSError, tarfile.TarError) as e:
                    skipped.append(f"{shard.name}/{key}: unreadable caption ({type(e).__name__})")
                    continue
                if not text:
                    skipped.append(f"{shard.name}/{key}: empty caption")
                    continue
                sources.append((str(shard), image.offset_data, image.size))
                captions.append(text)
                names.append(f"{shard.name}/{image.name}")
    if not captions:
        raise ARPGError(f"the shards hold no image with a caption ({len(skipped)} skipped)")
    return CaptionSet(sources, captions, names, skipped, ",".join(str(p.resolve()) for p in paths))


def read_captions(source: str | os.PathLike) -> CaptionSet:
    """A caption folder (``metadata.jsonl``) or WebDataset shards, by what ``source`` holds."""
    p = Path(source)
    if p.is_dir() and (p / METADATA).is_file():
        return read_caption_folder(p)
    if is_caption_source(p):
        return read_webdataset(p)
    raise ARPGError(f"{source} is neither a folder with {METADATA} nor WebDataset .tar shards")


class ReadCaptioned:
    """Picklable loader for extraction workers: item -> RGB image, from a file or from its tar shard's bytes."""

    def __init__(self, sources: list[tuple[str, int, int]]):
        self.sources = sources

    def __call__(self, i: int) -> Image.Image:
        path, offset, size = self.sources[i]
        if offset < 0:
            return read_rgb(path)
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")


def save_prompt_features(out: Path, c: int, encoder, captions: list[str], batch: int) -> None:
    """Chunk ``c``'s prompt features (float16) and masks, encoded ``batch`` captions at a time."""
    parts = [encoder.encode(captions[i:i + batch]) for i in range(0, len(captions), batch)]
    feats = np.concatenate([f.cpu().numpy() for f, _ in parts]) if parts else \
        np.zeros((0, encoder.length, encoder.dim), dtype=np.float32)
    mask = np.concatenate([m.cpu().numpy() for _, m in parts]) if parts else np.zeros((0, encoder.length), bool)
    names = text_shard_names(c)
    save_npy(out / names[0], feats.astype(np.float16))
    save_npy(out / names[1], mask.astype(bool))


def text_info(out: Path, shards: list[dict[str, Any]], text: dict[str, Any]) -> dict[str, Any]:
    """The index's description of the stored prompt features (their width read from the first shard)."""
    dim = int(load_npy(out / shards[0]["text"], "prompt feature shard", mmap=True).shape[-1]) if shards else 0
    return {"dim": dim, "length": int(text["length"]), "encoder": str(text["encoder"])}
