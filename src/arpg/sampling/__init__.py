"""Sampling: step schedules, guidance, generation orders and the decode loop."""

from .sampler import generate
from .guidance import filter_logits, guidance_weight, sample_tokens
from .orders import ORDERS, fixed_order, make_orders
from .schedules import SCHEDULES, step_counts

__all__ = ["generate", "filter_logits", "guidance_weight", "sample_tokens", "ORDERS", "fixed_order",
           "make_orders", "SCHEDULES", "step_counts"]
