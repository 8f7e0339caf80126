"""Resolution expansion: every method keeps its known cells; the interpolated view shares the weights and
puts the big grid at fractional positions of the model's grid."""

import numpy as np
import pytest
import torch

from arpg import ARPGError
from arpg.editing.expand import EXPAND_METHODS, expand_image, interpolated_view
from arpg.editing.images import _encode
from arpg.model.rope import build_rope_table


def _image(size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_interpolated_view_shares_weights_and_interpolates_positions(editing_model):
    model = editing_model
    view = interpolated_view(model, 8)
    assert view.head.weight is model.head.weight and view.config.grid_size == 8 and model.config.grid_size == 4
    assert model.rope.shape[0] == 1 + 16 and view.rope.shape[0] == 1 + 64  # the model's own table is untouched
    # Big-grid cell (2r, 2c) sits exactly at the model's cell (r, c).
    for r, c in [(0, 0), (1, 3), (3, 2)]:
        assert torch.allclose(view.rope[1 + (2 * r) * 8 + 2 * c], model.rope[1 + r * 4 + c], atol=1e-6)
    half = build_rope_table(4, model.config.head_dim, scale=1.0)
    assert not torch.allclose(view.rope[1 + 1], half[1 + 1])  # (0, 1) of the big grid is at (0, 0.5)


@pytest.mark.parametrize("method", EXPAND_METHODS)
def test_expansion_keeps_every_known_cell(editing_model, editing_tok, method):
    model, tok = editing_model, editing_tok
    img = _image(16)
    r = expand_image(model, tok, img, label=2, factor=2, num=2, method=method, generator=torch.Generator().manual_seed(3))
    codes, known = r["codes"], r["known"]
    assert codes.shape == (2, 8, 8) and r["images"].shape == (2, 32, 32, 3)
    if method == "source-lattice":
        want = _encode(tok, img)[0]  # the source's own codes on the stride-2 lattice
        assert torch.equal(codes[:, ::2, ::2], want.expand(2, -1, -1))
    else:
        want = _encode(tok, r["upsampled"])[0]
        assert torch.equal(codes[:, known], want[known].expand(2, -1))
    assert known.float().mean() == (0.5 if method == "dense" else 0.25)


def test_same_generator_same_expansion(editing_model, editing_tok):
    model, tok = editing_model, editing_tok
    a = expand_image(model, tok, _image(16), label=1, generator=torch.Generator().manual_seed(5))["codes"]
    b = expand_image(model, tok, _image(16), label=1, generator=torch.Generator().manual_seed(5))["codes"]
    assert torch.equal(a, b)


def test_one_context_methods_need_a_source_of_the_models_grid(editing_model, editing_tok):
    model, tok = editing_model, editing_tok
    with pytest.raises(ARPGError, match="needs a source of the model's grid"):
        expand_image(model, tok, _image(8), label=1, method="dense")
    expand_image(model, tok, _image(16)[:, :16], label=1, method="windows")  # windows take any size
    with pytest.raises(ARPGError, match="method must be one of"):
        expand_image(model, tok, _image(16), label=1, method="bogus")
