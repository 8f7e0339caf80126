"""Sampling: step schedules, guidance, generation orders and the decode loop."""

from .sampler import generate, resolve_sampling
from ..speedups.int8 import quantize_int8
from .steps import compile_report
from .settings import SamplingConfig
from .recipes import Recipe, get_recipe, recipe_names, recommended_sampling
from .guidance import filter_logits, guidance_weight, sample_tokens
from .orders import ORDERS, fixed_order, make_orders
from .schedules import SCHEDULES, step_counts

__all__ = ["generate", "resolve_sampling", "quantize_int8", "compile_report", "SamplingConfig", "Recipe", "get_recipe", "recipe_names",
           "recommended_sampling", "filter_logits", "guidance_weight", "sample_tokens", "ORDERS", "fixed_order",
           "make_orders", "SCHEDULES", "step_counts"]
