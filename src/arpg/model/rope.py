"""2D rotary position embeddings (LlamaGen / ARPG layout).

Per head, the ``head_dim`` channels form ``head_dim/2`` rotary pairs of adjacent elements
``(x[2k], x[2k+1])``. The first half of the pairs rotates by the cell's row, the second half by its
column, with frequencies ``base^(-2k/(head_dim/2))``. Row 0 of the table is the class token's slot and is
all zeros (cos = sin = 0): the published weights were trained that way, so the class token's rotated q
and k are exactly zero and only its value carries the label. Models trained from scratch may use the
identity rotation there instead (``ARPGConfig.class_rope = "identity"``).

Tables are indexed by ``cell + 1`` (``0`` = class token), see :func:`position_index`.
"""

from __future__ import annotations

import torch

#: RoPE of the class token: all zeros (published) or the identity rotation.
CLASS_ROPE_MODES = ("zero", "identity")


def build_rope_table(grid_size: int, head_dim: int, base: float = 10000.0, class_slot: str = "zero",
                     scale: float = 1.0) -> torch.Tensor:
    """Return a float32 table ``[1 + grid_size**2, head_dim // 2, 2]`` of (cos, sin).

    Row 0 (the class token) is all zeros for ``class_slot="zero"`` (published) or the identity rotation
    (cos 1, sin 0) for ``"identity"``. ``scale`` multiplies the positions: ``0.5`` puts a 2g x 2g grid at
    the half-integer positions of the g x g grid a model was trained on (position interpolation).
    """
    if head_dim % 4:
        raise ValueError(f"head_dim must be a multiple of 4 for 2D RoPE, got {head_dim}")
    if class_slot not in CLASS_ROPE_MODES:
        raise ValueError(f"class_slot must be one of {CLASS_ROPE_MODES}, got {class_slot!r}")
    half = head_dim // 2  # rotary pairs
    quarter = half // 2  # pairs per axis
    freqs = base ** (-torch.arange(quarter, dtype=torch.float64) * 2.0 / half)
    idx = torch.arange(grid_size, dtype=torch.float64) * scale
    axis = torch.outer(idx, freqs)  # [grid, quarter]
    rows = axis[:, None, :].expand(grid_size, grid_size, quarter)
    cols = axis[None, :, :].expand(grid_size, grid_size, quarter)
    angles = torch.cat([rows, cols], dim=-1).reshape(grid_size * grid_size, half)
    table = torch.stack([angles.cos(), angles.sin()], dim=-1).float()
    slot = torch.zeros(1, half, 2)
    if class_slot == "identity":
        slot[..., 0] = 1.0
    return torch.cat([slot, table], dim=0)


def position_index(cells: torch.Tensor) -> torch.Tensor:
    """Map grid cells (``-1`` for the class token) to rows of the RoPE table."""
    return cells + 1


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, T, H, D] by ``rope`` [B, T, D/2, 2] (or [T, D/2, 2]).

    Computed in float32 and cast back to ``x``'s dtype, so bf16 autocast keeps accurate angles. On CPU and
    CUDA each pair is turned as one complex product: the same products and sums as the real-valued formula
    (``(a + ib)(c + is) = (ac - bs) + i(bc + as)``, equal bit for bit), in one kernel instead of seven
    (about 4-7x faster eager at decoding sizes on a CPU). Inductor runs the complex product as an eager
    kernel inside a compiled graph; other devices use the real formula.
    """
    if rope.dim() == 3:
        rope = rope.unsqueeze(0)
    rope = rope.unsqueeze(2).float()  # broadcast over heads
    xf = x.float()
    if xf.device.type not in ("cpu", "cuda"):
        return real_rope(xf, rope).to(x.dtype)
    pairs = xf.unflatten(-1, (-1, 2))
    # Complex numbers built with torch.complex, not complex views: no stride or offset rules to meet (a chunk of
    # a fused projection), and a compiled graph that folds constants into the graph (compile="frozen") cannot
    # take complex views of them.
    turned = torch.complex(pairs[..., 0], pairs[..., 1]) * torch.complex(rope[..., 0], rope[..., 1])
    return torch.view_as_real(turned).flatten(-2).to(x.dtype)


def real_rope(xf: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """The real-valued rotation of float32 ``xf`` [..., D] by ``rope`` [..., D/2, 2] (broadcasting)."""
    pairs = xf.unflatten(-1, (-1, 2))
    cos, sin = rope[..., 0], rope[..., 1]
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1).flatten(-2)
