"""The shipped demo weights (a small tokenizer and ARPG trained on the bundled Animal-MNIST set).

They live in ``arpg/weights/`` inside the package, laid out as ``save_pretrained`` writes them, so
``arpg.ARPG.from_pretrained(demo_paths().model)`` (or ``arpg.load_model`` on the folder) loads them:
``demo-arpg/`` and ``demo-vq/`` each hold ``config.json``, ``model.safetensors`` and a ``README.md`` model
card; ``demo_card.json`` is the full record (configs, data split, commands, wall time, losses, quality
figures, the recipe sweeps); ``demo_classifier.safetensors`` is the classifier of the quality figures.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ARPGError
from ..util.pretrained import SHIPPED_WEIGHTS, is_pretrained_folder
from ..vq import load_tokenizer
from ..model.weights import load_model

WEIGHTS_DIR = SHIPPED_WEIGHTS


@dataclass(frozen=True)
class DemoPaths:
    tokenizer: Path
    model: Path
    card: Path

    def exist(self) -> bool:
        return is_pretrained_folder(self.tokenizer) and is_pretrained_folder(self.model)


def demo_paths(check: bool = True) -> DemoPaths:
    paths = DemoPaths(WEIGHTS_DIR / "demo-vq", WEIGHTS_DIR / "demo-arpg", WEIGHTS_DIR / "demo_card.json")
    if check and not paths.exist():
        raise ARPGError(f"the shipped demo weights are missing from {WEIGHTS_DIR}; pass --model/--tokenizer "
                        "or rebuild them with `arpg demo --retrain`")
    return paths


def demo_card() -> dict[str, Any]:
    p = demo_paths(check=False).card
    return json.loads(p.read_text()) if p.exists() else {}


def card_facts(card: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model-card facts of the shipped ARPG and tokenizer, from the full record ``card``."""
    data = (f"{card.get('summary', {}).get('data', 'Animal-MNIST')}; split: "
            f"{json.dumps(card.get('data_split', {}))}")
    commands = card.get("commands", [])
    quality = card.get("quality", {})
    arpg = {"name": "ARPG demo model (Animal-MNIST, 8x8 codes)", "training_data": data,
            "training_command": "\n".join(commands) if commands else "see demo_card.json",
            "quality": {k: quality[k] for k in ("classifier_heldout_accuracy", "frechet_floor_train_vs_heldout",
                                                "tokenizer_reconstructions", "recipe") if k in quality}
            or "see demo_card.json",
            "notes": f"Shipped weights: {card.get('shipped_weights', 'EMA weights')}. Wall time "
                     f"{json.dumps(card.get('wall_time_s', {}))} s on {card.get('machine', '2 CPU cores')}. The "
                     "full record, with every sweep, is demo_card.json beside this folder."}
    vq = {"name": "VQ demo tokenizer (Animal-MNIST, 4x downsampling, 256 codes)", "training_data": data,
          "training_command": commands[0] if commands else "see demo_card.json",
          "quality": card.get("final_tokenizer_log", "see demo_card.json")}
    return arpg, vq


def write_demo_folders(model, tokenizer, card: dict[str, Any], *, write_weights: bool = True) -> DemoPaths:
    """Lay the demo ``model`` (with its recommended settings) and ``tokenizer`` out as pretrained folders in
    :data:`WEIGHTS_DIR`, with model cards made from ``card``."""
    paths = demo_paths(check=False)
    arpg_facts, vq_facts = card_facts(card)
    model.save_pretrained(paths.model, card=arpg_facts, write_weights=write_weights)
    tokenizer.save_pretrained(paths.tokenizer, card=vq_facts, write_weights=write_weights)
    return paths


def has_control_weights(kind: str) -> bool:
    return is_pretrained_folder(WEIGHTS_DIR / f"demo-control-{kind}")


def control_model_path(kind: str) -> Path:
    """The shipped ControlARPG demo weights for condition ``kind`` (the demo model fine-tuned with its maps)."""
    path = WEIGHTS_DIR / f"demo-control-{kind}"
    if not is_pretrained_folder(path):
        raise ARPGError(f"no shipped ControlARPG demo weights for {kind!r} maps in {WEIGHTS_DIR}; pass --model")
    return path


def load_pair(model_path: str | None, tokenizer_path: str | None, device: torch.device):
    """The ARPG model and tokenizer to use: the given files, or the shipped demo weights."""
    if model_path is None or tokenizer_path is None:
        shipped = demo_paths()
        model_path = model_path or str(shipped.model)
        tokenizer_path = tokenizer_path or str(shipped.tokenizer)
    model = load_model(model_path, device=device)
    tok = load_tokenizer(tokenizer_path, device=device)
    if tok.codebook_size != model.config.vocab_size:
        raise ARPGError(f"tokenizer codebook ({tok.codebook_size}) does not match the model's vocabulary "
                        f"({model.config.vocab_size}): they were not trained together")
    return model, tok


# ------------------------------------------------------------------------------------- text-to-image demo

@dataclass(frozen=True)
class T2IPaths:
    model: Path
    tokenizer: Path
    text: Path
    card: Path

    def exist(self) -> bool:
        from ..text.words import is_word_encoder

        return is_pretrained_folder(self.model) and is_pretrained_folder(self.tokenizer) and is_word_encoder(self.text)


#: The shipped text-to-image demo: model, tokenizer, word-level prompt encoder and the full record.
T2I_PATHS = T2IPaths(WEIGHTS_DIR / "demo-t2i", WEIGHTS_DIR / "demo-t2i-vq", WEIGHTS_DIR / "demo-t2i-text",
                     WEIGHTS_DIR / "t2i_card.json")


def t2i_card() -> dict[str, Any]:
    return json.loads(T2I_PATHS.card.read_text()) if T2I_PATHS.card.exists() else {}


def write_t2i_folders(model, tokenizer, encoder, encoder_card: str) -> T2IPaths:
    """Lay the text-to-image demo out in :data:`WEIGHTS_DIR` (cards made from ``t2i_card.json``)."""
    card = t2i_card()
    data = ("Animal-MNIST scenes: one or two tinted silhouettes on a 64x64 black canvas with captions from a small "
            f"grammar (arpg.demo.scenes); held-out (colour, animal) pairs: {card.get('heldout_pairs', 'see t2i_card.json')}")
    commands = "\n".join(card.get("commands", [])) or "python -m arpg.demo.t2i_retrain WORK --install"
    # Stored as float16 to keep the shipped demo under 15 MB (loading copies the values into float32
    # parameters); the judge's figures are measured on these rounded weights.
    model = copy.deepcopy(model).to(torch.float16)
    model.save_pretrained(T2I_PATHS.model, card={
        "name": "ARPG text-to-image demo model (Animal-MNIST scenes, 8x8 codes)", "training_data": data,
        "training_command": commands, "quality": card.get("judge_table", "see t2i_card.json"),
        "notes": f"Wall time {json.dumps(card.get('wall_time_s', {}))} s on {card.get('machine', '2 CPU cores')}. "
                 "Prompt encoder: demo-t2i-text beside this folder. Weights stored as float16, loaded as float32. "
                 "The full record is t2i_card.json."})
    tokenizer.save_pretrained(T2I_PATHS.tokenizer, card={
        "name": "VQ tokenizer of the text-to-image demo (64 px RGB scenes, 8x downsampling, 512 codes)",
        "training_data": data, "training_command": commands,
        "quality": card.get("final_tokenizer_log", "see t2i_card.json")})
    encoder.save(T2I_PATHS.text, card=encoder_card)
    return T2I_PATHS


def load_t2i(device: torch.device | str = "cpu", model_path: str | None = None, tokenizer_path: str | None = None):
    """(model, tokenizer): the given files, or the shipped text-to-image demo (its model names its prompt
    encoder ``demo-t2i-text``, which :func:`arpg.sampling.text_folder.text_encoder_for` finds in the package's
    weights folder when no folder of that name is in the working directory)."""
    if (model_path is None or tokenizer_path is None) and not T2I_PATHS.exist():
        raise ARPGError(f"the shipped text-to-image demo weights are missing from {WEIGHTS_DIR}; pass --model and "
                        "--tokenizer, or rebuild them with `python -m arpg.demo.t2i_retrain WORK --install`")
    model = load_model(model_path or T2I_PATHS.model, device=device)
    tok = load_tokenizer(tokenizer_path or T2I_PATHS.tokenizer, device=device)
    if tok.codebook_size != model.config.vocab_size:
        raise ARPGError(f"tokenizer codebook ({tok.codebook_size}) does not match the model's vocabulary "
                        f"({model.config.vocab_size}): they were not trained together")
    return model, tok
