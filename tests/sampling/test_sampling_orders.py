import pytest
import torch

from arpg import ARPGError
from arpg.sampling.orders import FIXED_ORDERS, fixed_order, is_permutation, make_orders


@pytest.mark.parametrize("grid", [1, 2, 3, 4, 5, 8, 16])
@pytest.mark.parametrize("name", FIXED_ORDERS)
def test_named_orders_are_permutations(name, grid):
    assert is_permutation(fixed_order(name, grid), grid * grid)


def test_orders_match_definitions_on_small_grids():
    assert fixed_order("raster", 3).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert fixed_order("alternate", 3).tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]
    assert fixed_order("spiral-in", 3).tolist() == [0, 1, 2, 5, 8, 7, 6, 3, 4]
    assert fixed_order("spiral-in", 4).tolist() == [0, 1, 2, 3, 7, 11, 15, 14, 13, 12, 8, 4, 5, 6, 10, 9]
    assert fixed_order("spiral-out", 3).tolist() == [4, 3, 6, 7, 8, 5, 2, 1, 0]
    # Z-curve on 4x4: quadrants TL, TR, BL, BR, each in Z shape.
    assert fixed_order("z-curve", 4).tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]


def test_random_orders_differ_per_sample_and_shared_is_shared():
    g = torch.Generator().manual_seed(0)
    r = make_orders("random", 4, 8, generator=g)
    assert all(is_permutation(row, 64) for row in r)
    assert len({tuple(row.tolist()) for row in r}) == 4
    s = make_orders("shared-random", 4, 8, generator=g)
    assert (s == s[0]).all() and is_permutation(s[0], 64)


def test_explicit_orders_validated():
    perm = torch.randperm(16)
    assert (make_orders(perm, 3, 4) == perm).all()
    per_row = torch.stack([torch.randperm(16) for _ in range(3)])
    assert (make_orders(per_row, 3, 4) == per_row).all()
    with pytest.raises(ARPGError, match="permutation"):
        make_orders(torch.tensor([0, 0] + list(range(2, 16))), 3, 4)
    with pytest.raises(ARPGError, match="permutation"):
        make_orders(torch.arange(15), 3, 4)
    with pytest.raises(ARPGError, match="unknown order"):
        make_orders("hilbert", 3, 4)
