"""Speed-ups for sampling, each a module swap outside the network (:mod:`arpg.model` knows none of them).

* :mod:`.packing` -- :class:`~.packing.PackedLinear`: a bias-free Linear whose weight lives in oneDNN's
  blocked layout (CPU), swapped in by :func:`~.packing.pack_weights` and out by :func:`~.packing.unpack_weights`;
* :mod:`.fusion` -- one q|k|v matmul per Pass-1 attention and one w1|w3 matmul per FFN
  (:func:`~.fusion.fuse_projections` / :func:`~.fusion.unfuse_projections`);
* :mod:`.int8` -- int8 weight-only Linears on a copy of the model (:func:`~.int8.quantize_int8`).

Every swap keeps ``state_dict()`` keys and values exactly the published ones, is undone exactly, and refuses
in one line what it cannot do (a gradient, another dtype or device). :func:`arpg.generate` chooses among them
(:mod:`arpg.sampling.runtime`); they can also be applied by hand.
"""

from .fusion import fuse_projections, is_fused, unfuse_projections
from .int8 import is_int8, quantize_int8
from .packing import PackedLinear, is_packed, pack_weights, packing_available, unpack_weights

__all__ = ["PackedLinear", "pack_weights", "unpack_weights", "is_packed", "packing_available", "fuse_projections",
           "unfuse_projections", "is_fused", "quantize_int8", "is_int8"]
