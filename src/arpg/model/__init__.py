"""The ARPG network: its config and presets, 2D RoPE, the KV cache, the blocks of both passes, ControlARPG's
condition encoder, the :class:`ARPG` class with its teacher-forced loss, and loading / saving its weights."""

from .cache import KVCache
from .config import ARPG_PRESETS, ARPGConfig, get_preset, preset_names
from .transformer import ARPG, ATTENTION_MODES, count_parameters, random_orders
from .weights import infer_arpg_config, load_model, save_model, suggest_preset

__all__ = ["ARPG", "ARPGConfig", "ARPG_PRESETS", "ATTENTION_MODES", "KVCache", "count_parameters", "get_preset",
           "infer_arpg_config", "load_model", "preset_names", "random_orders", "save_model", "suggest_preset"]
