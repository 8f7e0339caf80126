import torch

from arpg.rope import apply_rope, build_rope_table


def test_class_slot_rotates_to_exact_zero():
    table = build_rope_table(16, 64)
    assert table.shape == (257, 32, 2)
    x = torch.randn(3, 1, 4, 64)
    assert torch.equal(apply_rope(x, table[:1]), torch.zeros_like(x))


def test_axis_layout_and_frequencies():
    table = build_rope_table(16, 64)
    cell = 3 * 16 + 5  # row 3, col 5
    angles = torch.atan2(table[1 + cell, :, 1], table[1 + cell, :, 0])
    freqs = 10000 ** (-torch.arange(16, dtype=torch.float64) * 2 / 32)
    expect = torch.cat([3 * freqs, 5 * freqs])
    wrapped = torch.atan2(torch.sin(expect), torch.cos(expect)).float()
    assert torch.allclose(angles, wrapped, atol=1e-5)


def test_dot_product_depends_only_on_displacement():
    g = 8
    table = build_rope_table(g, 16)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)

    def score(a, b):
        ra = table[1 + a[0] * g + a[1]][None].double()
        rb = table[1 + b[0] * g + b[1]][None].double()
        return (apply_rope(q, ra) * apply_rope(k, rb)).sum().item()

    base = score((1, 2), (4, 6))
    assert abs(score((2, 1), (5, 5)) - base) < 1e-5  # same displacement (3, 4), different cells
    assert abs(score((0, 0), (3, 4)) - base) < 1e-5
    assert abs(score((0, 0), (4, 3)) - base) > 1e-3  # a different displacement changes it


def test_bf16_input_keeps_dtype_and_matches_fp32():
    table = build_rope_table(4, 8)
    x = torch.randn(2, 5, 3, 8)
    rope = table[torch.randint(0, 17, (2, 5))]
    out = apply_rope(x.bfloat16(), rope)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), apply_rope(x, rope), atol=3e-2)
