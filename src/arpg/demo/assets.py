"""The shipped demo weights (a small tokenizer and ARPG trained on the bundled Animal-MNIST set).

Files live in ``arpg/weights/`` inside the package: ``demo_vq.safetensors``, ``demo_arpg.safetensors`` and
``demo_card.json`` (the model card: configs, data split, commands, wall time, losses, quality figures,
and the sampling recipe the demo uses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ARPGError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class DemoPaths:
    tokenizer: Path
    model: Path
    card: Path

    def exist(self) -> bool:
        return self.tokenizer.exists() and self.model.exists()


def demo_paths(check: bool = True) -> DemoPaths:
    paths = DemoPaths(WEIGHTS_DIR / "demo_vq.safetensors", WEIGHTS_DIR / "demo_arpg.safetensors",
                      WEIGHTS_DIR / "demo_card.json")
    if check and not paths.exist():
        raise ARPGError(f"the shipped demo weights are missing from {WEIGHTS_DIR}; pass --model/--tokenizer "
                        "or rebuild them with `arpg demo --retrain`")
    return paths


def demo_card() -> dict[str, Any]:
    p = demo_paths(check=False).card
    return json.loads(p.read_text()) if p.exists() else {}
