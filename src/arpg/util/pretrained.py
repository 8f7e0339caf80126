"""``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for the models, in the layout of the Hugging
Face ecosystem: a folder (or Hub repository) with ``config.json``, ``model.safetensors`` and a ``README.md``
model card.

``config.json`` holds ``{"model_type": ..., "config": {...}, "sampling": {...} | null, "library": "arpg"}``
(and ``"text_encoder"``: the prompt encoder a text model names);
the weights file also carries the config in its metadata, so it loads on its own with ``arpg.load_model``
/ ``arpg.load_tokenizer`` too. A class opts in with :class:`PretrainedMixin` and four class attributes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from .files import atomic_write, atomic_write_text
from .hub import HUB_HINT, HubError, looks_like_repo, resolve_folder
from .state import load_state_strict, savable_state
from .version import __version__

#: Where the package's own weights live (the demo models); a model may name a prompt encoder found here.
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


class PretrainedMixin:
    """Adds the pretrained-folder methods. Subclasses set :attr:`model_type`, :attr:`config_class` (a
    dataclass with ``from_dict`` / ``to_dict`` / ``to_json``), :attr:`metadata_key` (the safetensors
    metadata key of the config), :attr:`pipeline_tag`, and implement :meth:`card_facts`."""

    model_type: str
    config_class: type
    metadata_key: str
    pipeline_tag: str

    # -- writing -----------------------------------------------------------------------------------
    def card_facts(self) -> dict[str, Any]:
        """``{"architecture": ..., "parameters": ...}`` and whatever else the card should state."""
        raise NotImplementedError

    def save_pretrained(self, folder: str | os.PathLike, card: Mapping[str, Any] | None = None,
                        license: str = "mit", write_weights: bool = True) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the ``README.md`` model card into ``folder``.

        ``card``: facts known about the weights (``training_data``, ``training_command``, ``quality``,
        ``notes``, ...) that go into the card beside the architecture and the recommended settings.
        ``write_weights=False`` rewrites only the config and the card (the weights file is already there)."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise CheckpointError(f"{folder} is a file; save_pretrained writes a folder")
        folder.mkdir(parents=True, exist_ok=True)
        sampling = _sampling_dict(getattr(self, "sampling", None))
        config = {"model_type": self.model_type, "library": "arpg", "arpg_version": __version__,
                  "config": self.config.to_dict(), "sampling": sampling}
        sd = savable_state(self)
        meta = {self.metadata_key: self.config.to_json(), "format": "arpg"}
        if sampling is not None:
            meta["sampling"] = json.dumps(sampling)
        text_encoder = getattr(self, "text_encoder", None)  # text models: what makes their prompt features
        if isinstance(text_encoder, str) and text_encoder:
            config["text_encoder"] = meta["text_encoder"] = text_encoder
        if write_weights:
            atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(sd, tmp, metadata=meta))
        elif not (folder / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"{folder / WEIGHTS_FILE} is missing (write_weights=False keeps an existing one)")
        atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        facts = {**self.card_facts(), **dict(card or {})}
        atomic_write_text(folder / CARD_FILE, model_card(self.model_type, self.pipeline_tag, license, facts, sampling))
        return folder

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    card: Mapping[str, Any] | None = None, license: str = "mit",
                    commit_message: str = "Upload with arpg") -> str:
        """``save_pretrained`` into a temporary folder and upload it to Hub repository ``repo_id`` (created if
        missing); returns the commit URL. Needs ``huggingface_hub`` and a token (``huggingface-cli login``)."""
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise HubError(f"push_to_hub needs huggingface_hub: {HUB_HINT}") from None
        api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, card=card, license=license)
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
        return str(getattr(info, "commit_url", info))

    # -- reading -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, *, revision: str | None = None,
                        device: str | torch.device = "cpu"):
        """Load a folder written by :meth:`save_pretrained`, or Hub repository ``OWNER/REPO`` holding one (its
        files come through the Hugging Face cache); returns the model in eval mode."""
        folder = resolve_folder(source, (CONFIG_FILE, WEIGHTS_FILE), (CARD_FILE,), revision=revision)
        try:
            stored = json.loads((folder / CONFIG_FILE).read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{folder / CONFIG_FILE} is not readable JSON ({e})") from None
        if not isinstance(stored, dict) or stored.get("model_type") != cls.model_type:
            got = stored.get("model_type") if isinstance(stored, dict) else None
            raise CheckpointError(f"{folder} holds a {got!r} model, not {cls.model_type!r}")
        model = cls.empty(cls.config_class.from_dict(stored["config"]), device)
        try:
            with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own types for damaged files
            raise CheckpointError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file "
                                  f"({' '.join(str(e).split())[:160]})") from None
        load_state_strict(model, sd, folder / WEIGHTS_FILE)
        if stored.get("sampling") is not None:
            model.sampling = dict(stored["sampling"])
        if isinstance(stored.get("text_encoder"), str):
            model.text_encoder = stored["text_encoder"]
        return model.to(device).eval()

    @classmethod
    def empty(cls, config, device: str | torch.device = "cpu"):
        """A model of ``config`` with uninitialised weights (built on the meta device: no random init)."""
        with torch.device("meta"):
            model = cls(config)
        return model.to_empty(device=device)


def is_pretrained_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def names_pretrained(source: str | os.PathLike) -> bool:
    """Whether ``source`` is a saved folder or a Hub repository ``OWNER/REPO`` (read with ``from_pretrained``)
    rather than one weights file, a published name or an ``hf://`` file address."""
    return is_pretrained_folder(source) or looks_like_repo(str(source))


def _sampling_dict(settings: Any) -> dict[str, Any] | None:
    if settings is None:
        return None
    return dict(settings) if isinstance(settings, Mapping) else settings.to_dict()


def model_card(model_type: str, pipeline_tag: str, license: str, facts: Mapping[str, Any],
               sampling: Mapping[str, Any] | None) -> str:
    """The ``README.md`` of a saved model: YAML front matter (license, pipeline tag, library, tags) and the
    facts, one section each; absent facts are said to be unknown rather than left out silently."""
    def block(value: Any) -> str:
        if isinstance(value, (dict, list)):
            return "```json\n" + json.dumps(value, indent=2) + "\n```"
        text = str(value)
        return f"```\n{text}\n```" if "\n" in text else text

    lines = ["---", f"license: {license}", f"pipeline_tag: {pipeline_tag}", "library_name: arpg",
             "tags:", "- arpg", "- image-generation" if model_type == "arpg" else "- vq-tokenizer",
             "---", "", f"# {facts.get('name', model_type)}", ""]
    lines += [facts.get("summary", "Weights saved with [arpg](https://arxiv.org/abs/2503.10568) "
                                   "(randomized parallel decoding)."), ""]
    for title, key in (("Architecture", "architecture"), ("Parameters", "parameters"),
                       ("Training data", "training_data"), ("Training command", "training_command"),
                       ("Measured quality", "quality"), ("Notes", "notes")):
        lines += [f"## {title}", "", block(facts[key]) if key in facts else "Not recorded.", ""]
    if model_type == "arpg":
        lines += ["## Recommended sampling settings", "",
                  block(sampling) if sampling else "None stored: `arpg.generate` uses the pinned recipe of the "
                  "architecture, or 64 steps without guidance.", ""]
    lines += ["## Use", "", "```python", "import arpg",
              f"model = arpg.{'ARPG' if model_type == 'arpg' else 'VQTokenizer'}.from_pretrained(\"PATH_OR_OWNER/REPO\")",
              "```", ""]
    return "\n".join(lines)
