"""ARPG: autoregressive image generation with randomized parallel decoding (arXiv 2503.10568)."""

from .config import ARPGConfig, get_preset, preset_names
from .errors import ARPGError, CheckpointError
from .model import ARPG, random_orders

__version__ = "0.1.0"

__all__ = [
    "ARPG",
    "ARPGConfig",
    "ARPGError",
    "CheckpointError",
    "get_preset",
    "preset_names",
    "random_orders",
    "__version__",
]
