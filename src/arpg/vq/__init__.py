"""The VQ tokenizer (LlamaGen VQ-16 and small trainable variants); see :mod:`arpg.tokenizer`."""

from .config import VQ_PRESETS, VQConfig, get_vq_preset, vq_preset_names
from .images import from_uint8, to_uint8
from .io import infer_vq_config, load_tokenizer, save_tokenizer
from .model import VQOutput, VQTokenizer

__all__ = [
    "VQ_PRESETS",
    "VQConfig",
    "VQOutput",
    "VQTokenizer",
    "from_uint8",
    "get_vq_preset",
    "infer_vq_config",
    "load_tokenizer",
    "save_tokenizer",
    "to_uint8",
    "vq_preset_names",
]
