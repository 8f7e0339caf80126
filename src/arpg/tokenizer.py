"""The VQ tokenizer: images ↔ grids of integer codes.

The implementation lives in :mod:`arpg.vq` (config, layers, quantiser, model, I/O); this module is the
stable import path::

    from arpg.tokenizer import VQTokenizer, load_tokenizer, from_uint8, to_uint8

    tok = load_tokenizer("vq_ds16_c2i.pt")            # LlamaGen VQ-16
    codes = tok.encode(from_uint8(pil_images))        # [B, 256] for 256x256 images
    pixels = to_uint8(tok.decode(codes))              # uint8 [B, 256, 256, 3]
"""

from . import vq as _vq
from .vq import *  # noqa: F401,F403  (the same public names as arpg.vq)

__all__ = list(_vq.__all__)
