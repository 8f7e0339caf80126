import pytest
import torch

from arpg.model.rope import apply_rope, build_rope_table


def test_class_slot_rotates_to_exact_zero():
    table = build_rope_table(16, 64)
    assert table.shape == (257, 32, 2)
    x = torch.randn(3, 1, 4, 64)
    assert torch.equal(apply_rope(x, table[:1]), torch.zeros_like(x))


def test_identity_class_slot_leaves_vectors_unchanged():
    zero, ident = build_rope_table(8, 16), build_rope_table(8, 16, class_slot="identity")
    assert torch.equal(zero[1:], ident[1:])
    x = torch.randn(2, 1, 3, 16)
    assert torch.equal(apply_rope(x, ident[:1]), x)


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
    # A batch of random (q, k) pairs: for a single pair the score change under a different displacement
    # is a continuous random variable that falls below 1e-3 about 1 time in 2000.
    n = 64
    q, k = torch.randn(n, 1, 1, 16, dtype=torch.float64), torch.randn(n, 1, 1, 16, dtype=torch.float64)

    def score(a, b):
        ra = table[1 + a[0] * g + a[1]][None].double()
        rb = table[1 + b[0] * g + b[1]][None].double()
        return (apply_rope(q, ra) * apply_rope(k, rb)).sum(dim=(1, 2, 3))

    # apply_rope rotates in float32 with a float32 table, so equal-displacement scores agree to float32
    # rounding relative to |q||k| (observed <= 1.2e-7 |q||k| over 2e5 pairs).
    tol = 1e-6 * q.flatten(1).norm(dim=1) * k.flatten(1).norm(dim=1)
    base = score((1, 2), (4, 6))
    assert ((score((2, 1), (5, 5)) - base).abs() < tol).all()  # same displacement (3, 4), different cells
    assert ((score((0, 0), (3, 4)) - base).abs() < tol).all()
    changed = (score((0, 0), (4, 3)) - base).abs() > 1e-3  # a different displacement changes it
    assert changed.float().mean() > 0.5, changed.float().mean()


def test_bf16_input_keeps_dtype_and_matches_fp32():
    table = build_rope_table(4, 8)
    x = torch.randn(2, 5, 3, 8)
    rope = table[torch.randint(0, 17, (2, 5))]
    out = apply_rope(x.bfloat16(), rope)
    assert out.dtype == torch.bfloat16
    # Error bound per rotary pair (x0, x1), bf16 unit roundoff u = 2^-8: input rounding moves the rotated
    # pair by at most u |(x0, x1)|, output rounding by at most u |(x0, x1)| more, so <= 2^-7 |(x0, x1)|
    # (observed up to 0.98 of that). Checked against twice the bound; the former fixed atol of 3e-2
    # failed about 1 run in 20000 (on a large entry of x).
    err = (out.float() - apply_rope(x, rope)).reshape(2, 5, 3, 4, 2).abs().amax(-1)
    pair_norm = x.reshape(2, 5, 3, 4, 2).norm(dim=-1)
    assert (err <= 2 ** -6 * pair_norm + 1e-6).all(), (err / pair_norm).max()


def _rope_case(gen: torch.Generator):
    B, T, H, D = 3, int(torch.randint(1, 12, (), generator=gen)), 4, 32
    table = build_rope_table(8, D)
    rope = table[torch.randint(0, 65, (B, T), generator=gen)]
    qkv = torch.randn(B, T, 3 * H * D, generator=gen) * 3
    return qkv[..., H * D:2 * H * D].view(B, T, H, D), rope  # a strided view, as the fused q|k|v gives


def test_complex_rotation_matches_the_real_formula_on_views_and_in_bf16():
    from arpg.model.rope import real_rope

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    for _ in range(5):
        x, rope = _rope_case(gen)
        expect = real_rope(x.float(), rope.unsqueeze(2))
        got = apply_rope(x, rope)
        assert got.shape == x.shape and got.dtype == x.dtype
        assert torch.allclose(got, expect, rtol=0, atol=4e-6)  # the same sums, at most an ulp apart
        xb = x.to(torch.bfloat16)
        got_b = apply_rope(xb, rope)
        assert got_b.dtype == torch.bfloat16
        assert torch.allclose(got_b.float(), real_rope(xb.float(), rope.unsqueeze(2)), rtol=1e-2, atol=1e-2)


def test_complex_rotation_has_the_real_formulas_gradient():
    from arpg.model.rope import real_rope

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    x, rope = _rope_case(gen)
    a = x.detach().clone().requires_grad_(True)
    b = x.detach().clone().requires_grad_(True)
    w = torch.randn(x.shape, generator=gen)
    (apply_rope(a, rope) * w).sum().backward()
    (real_rope(b, rope.unsqueeze(2)) * w).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=4e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_of_a_strided_input_equals_that_of_its_contiguous_copy(dtype):
    """A chunk of a fused q|k|v output cannot be viewed as complex pairs as it is: the result must not change."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    B, T, H, D = 3, 5, 4, 16
    table = build_rope_table(4, D)
    rope = table[torch.randint(0, 17, (B, T), generator=gen)]
    x = torch.randn(B, T, 3 * H * D, generator=gen).to(dtype)[..., H * D:2 * H * D].reshape(B, T, H, D)
    assert not x.is_contiguous()
    assert torch.equal(apply_rope(x, rope), apply_rope(x.contiguous(), rope))
