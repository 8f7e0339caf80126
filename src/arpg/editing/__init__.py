"""Zero-shot editing: inpainting, outpainting to any canvas, class editing and resolution expansion.

Every task reduces to "which cells are known": known cells are prefilled into Pass 1 at their true
positions, and only the unknown ones are decoded (see :func:`arpg.generate`'s ``known_mask``).
"""

from .canvas import fill_canvas, inpaint, plan_windows
from .expand import EXPAND_METHODS, expand_image, interpolated_view
from .images import edit_image, inpaint_image, outpaint_image
from .masks import box_mask, cell_mask, load_mask

__all__ = ["EXPAND_METHODS", "fill_canvas", "inpaint", "plan_windows", "edit_image", "expand_image",
           "interpolated_view", "inpaint_image", "outpaint_image", "box_mask", "cell_mask", "load_mask"]
