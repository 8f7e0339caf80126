"""Weights by name: the published checkpoints, ``hf://`` addresses and Hugging Face Hub repositories.

:func:`resolve_file` turns what a user wrote into a local file path:

* an existing local path: itself;
* a published name -- ``ARPG-L``, ``ARPG-XL``, ``ARPG-XXL`` (``hp-l33/ARPG``: ``arpg_300m.pt``,
  ``arpg_700m.pt``, ``arpg_1b.pt``) and ``VQ-16`` (``FoundationVision/LlamaGen``: ``vq_ds16_c2i.pt``);
* ``hf://OWNER/REPO/PATH/IN/REPO`` (optionally ``@REVISION`` after the repo);
* ``OWNER/REPO`` (a folder written by ``save_pretrained``; :func:`resolve_folder`).

Downloads go through ``huggingface_hub.hf_hub_download`` (its cache, resumable downloads, ``HF_HUB_OFFLINE``
and ``HF_HUB_CACHE``), installed with ``pip install 'arpg[hub]'``. Nothing is downloaded at import time.
Before asking the network, one short connection attempt (:data:`CONNECT_TIMEOUT_S`) decides whether the
Hub is reachable; when it is not, only the local cache is used, so a machine without internet gets one
line saying which file is missing, from where, and how to fetch it -- never a traceback, never a hang.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ARPGError

#: name -> (repository, file) of the released checkpoints
PUBLISHED: dict[str, tuple[str, str]] = {
    "ARPG-L": ("hp-l33/ARPG", "arpg_300m.pt"),
    "ARPG-XL": ("hp-l33/ARPG", "arpg_700m.pt"),
    "ARPG-XXL": ("hp-l33/ARPG", "arpg_1b.pt"),
    "VQ-16": ("FoundationVision/LlamaGen", "vq_ds16_c2i.pt"),
}
#: seconds one connection attempt to the Hub may take before it counts as unreachable
CONNECT_TIMEOUT_S = 3.0
HUB_HINT = "pip install 'arpg[hub]'"


class HubError(ARPGError):
    """A file that could not be found locally or fetched from the Hub."""


def published_name(text: str) -> str | None:
    """The canonical published name ``text`` spells (case-insensitive), or None."""
    return {k.lower(): k for k in PUBLISHED}.get(str(text).strip().lower())


def parse_hf_address(text: str) -> tuple[str, str, str | None] | None:
    """``hf://owner/repo[@rev]/path`` -> ``(repo, path, revision)``; None for anything else."""
    if not str(text).startswith("hf://"):
        return None
    rest = str(text)[5:].strip("/")
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts[:3]):
        raise HubError(f"{text!r}: an hf:// address is hf://OWNER/REPO/PATH/IN/REPO")
    repo, revision = f"{parts[0]}/{parts[1]}", None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    return repo, "/".join(parts[2:]), revision


#: endings that make ``a/b.pt`` a (missing) local file rather than a Hub repository
FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt", ".npz", ".npy", ".json", ".png", ".jpg")


def looks_like_repo(text: str) -> bool:
    """``owner/repo`` that is not a local path (nor a missing weights file like ``runs/final.pt``)."""
    parts = str(text).split("/")
    # A missing "runs/final" under an existing local folder "runs" is a local path, not a repository.
    return (len(parts) == 2 and all(parts) and not Path(text).exists() and not Path(parts[0]).exists()
            and not str(text).startswith((".", "~")) and not str(text).lower().endswith(FILE_SUFFIXES))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(endpoint: str | None = None, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether one TCP connection to the Hub endpoint succeeds within ``timeout`` seconds."""
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def download(repo: str, filename: str, revision: str | None = None) -> Path:
    """One file of a Hub repository, from the local cache or (when reachable) the Hub."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise HubError(f"loading {repo}/{filename} from the Hugging Face Hub needs huggingface_hub: {HUB_HINT}; "
                       "or pass a local path") from None
    local_only = _offline() or not hub_reachable()
    try:
        # The cache folder is read from the environment at each call (huggingface_hub reads it once, at import).
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=local_only,
                                    etag_timeout=CONNECT_TIMEOUT_S, cache_dir=os.environ.get("HF_HUB_CACHE")))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if _offline() else "the Hub is not reachable from this machine"
        raise HubError(f"{filename} of {repo} is not in the local Hugging Face cache and {why}: on a machine with "
                       f"internet run `huggingface-cli download {repo} {filename}` (then copy the cache, or set "
                       f"HF_HUB_CACHE), or download https://huggingface.co/{repo}/resolve/main/{filename} and pass "
                       "its local path") from None
    except (EntryNotFoundError, RepositoryNotFoundError) as e:
        raise HubError(f"{repo} has no file {filename} on the Hub ({type(e).__name__})") from None
    except OSError as e:  # network trouble mid-download, a full disk
        raise HubError(f"could not fetch {filename} of {repo}: {' '.join(str(e).split())[:200]}") from None


def resolve_file(source: str | os.PathLike) -> Path:
    """A local path for a weights file given as a path, a published name or an ``hf://`` address."""
    path = Path(source)
    if path.exists():
        return path
    name = published_name(str(source))
    if name is not None:
        return download(*PUBLISHED[name])
    address = parse_hf_address(str(source))
    if address is not None:
        repo, filename, revision = address
        return download(repo, filename, revision)
    return path  # the loaders say "not found" for it


def resolve_folder(source: str | os.PathLike, files: tuple[str, ...], optional: tuple[str, ...] = (),
                   revision: str | None = None) -> Path:
    """A local folder holding ``files`` (and whichever of ``optional`` exist): ``source`` itself when it is a
    folder, else the snapshot of Hub repository ``source`` in the local cache."""
    path = Path(source)
    if path.is_dir():
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise HubError(f"{path} is not a saved model folder: it lacks {', '.join(missing)}")
        return path
    if not looks_like_repo(str(source)):
        raise HubError(f"not found: {source} (a folder written by save_pretrained, or a Hub repository OWNER/REPO)")
    folder = None
    for f in files:
        folder = download(str(source), f, revision).parent
    for f in optional:
        try:
            download(str(source), f, revision)
        except HubError:
            pass
    return folder
