"""ARPG: autoregressive image generation with randomized parallel decoding (arXiv 2503.10568)."""

from .model.config import ARPGConfig, get_preset, preset_names
from .errors import ARPGError, CheckpointError
from .model import ARPG, random_orders
from .model.weights import load_model, save_model
from .sampling import generate
from .speedups import fuse_projections
from .vq import VQConfig, VQTokenizer, load_tokenizer
from .util.version import __version__

__all__ = [
    "ARPG",
    "ARPGConfig",
    "ARPGError",
    "CheckpointError",
    "get_preset",
    "preset_names",
    "random_orders",
    "fuse_projections",
    "load_model",
    "save_model",
    "generate",
    "VQConfig",
    "VQTokenizer",
    "load_tokenizer",
    "__version__",
]
