"""The VQ tokenizer: images <-> grids of integer codes (LlamaGen VQ-16 and small trainable variants)::

    from arpg.vq import VQTokenizer, load_tokenizer
    from arpg.util.images import from_uint8, to_uint8

    tok = load_tokenizer("vq_ds16_c2i.pt")            # LlamaGen VQ-16
    codes = tok.encode(from_uint8(pil_images))        # [B, 256] for 256x256 images
    pixels = to_uint8(tok.decode(codes))              # uint8 [B, 256, 256, 3]
"""

from .config import VQ_PRESETS, VQConfig, get_vq_preset, vq_preset_names
from ..util.images import from_uint8, to_uint8
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
