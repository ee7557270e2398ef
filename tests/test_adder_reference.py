"""The reference backend against independent formulas: explicit loops, torch.cdist, the GEMM identity."""

import itertools

import pytest
import torch

from conftest import assert_close
from slac.ops import reference


def loops_adder2d(x, w, stride, padding, dilation, groups):
    """Y, and a function giving (dX, dW) for an upstream G, by explicit loops over every index."""
    b_, _, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    og = o_ // groups
    ho = (h_ + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w_ + 2 * padding - dilation * (kw - 1) - 1) // stride + 1

    def pixel(b, c, h, v):  # zero padding: a padded position reads 0
        return x[b, c, h, v] if 0 <= h < h_ and 0 <= v < w_ else torch.zeros((), dtype=x.dtype)

    taps = []  # (b, o, oh, ow, c, i, j, input position or None)
    for b, o, oh, ow in itertools.product(range(b_), range(o_), range(ho), range(wo)):
        g = o // og
        for cl, i, j in itertools.product(range(cg), range(kh), range(kw)):
            h, v = oh * stride - padding + i * dilation, ow * stride - padding + j * dilation
            taps.append((b, o, oh, ow, g * cg + cl, cl, i, j, h, v))
    y = torch.zeros(b_, o_, ho, wo, dtype=x.dtype)
    for b, o, oh, ow, c, cl, i, j, h, v in taps:
        y[b, o, oh, ow] -= (pixel(b, c, h, v) - w[o, cl, i, j]).abs()

    def grads(gy):
        dx, dw = torch.zeros_like(x), torch.zeros_like(w)
        for b, o, oh, ow, c, cl, i, j, h, v in taps:
            g = gy[b, o, oh, ow]
            dw[o, cl, i, j] += g * (pixel(b, c, h, v) - w[o, cl, i, j])
            if 0 <= h < h_ and 0 <= v < w_:
                dx[b, c, h, v] += g * (w[o, cl, i, j] - x[b, c, h, v]).clamp(-1, 1)
        return dx, dw

    return y, grads


@pytest.mark.parametrize(
    "stride,padding,dilation,groups,kernel",
    [(1, 0, 1, 1, 3), (1, 1, 1, 1, 3), (2, 1, 1, 2, 3), (1, 2, 2, 1, 3), (2, 0, 1, 2, 1), (1, 2, 1, 1, 5)],
    ids=lambda v: str(v),
)
def test_reference_matches_loops(stride, padding, dilation, groups, kernel):
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64) * 1.5  # wide enough that |w - x| > 1 often
    w = torch.randn(4, 4 // groups, kernel, kernel, dtype=torch.float64)
    conv = ((stride, stride), (padding, padding), (dilation, dilation), groups)
    y_loop, grads = loops_adder2d(x, w, stride, padding, dilation, groups)
    y = reference.adder2d_forward(x, w, *conv)
    assert_close(y, y_loop, w[0].numel(), "forward")
    gy = torch.randn_like(y)
    dx_loop, dw_loop = grads(gy)
    assert_close(reference.adder2d_grad_input(gy, x, w, *conv), dx_loop, w.numel(), "grad input")
    assert_close(reference.adder2d_grad_weight(gy, x, w, *conv), dw_loop, y.numel(), "grad weight")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_reference_forward_is_negative_cdist(dtype):
    x, w = torch.randn(37, 19, dtype=dtype), torch.randn(13, 19, dtype=dtype)
    assert_close(reference.linear_forward(x, w), -torch.cdist(x, w, p=1), 19)


def test_reference_conv_forward_is_negative_cdist_of_unfolded_patches():
    x, w = torch.randn(3, 5, 9, 7, dtype=torch.float64), torch.randn(6, 5, 3, 3, dtype=torch.float64)
    cols = torch.nn.functional.unfold(x, 3, padding=1, stride=2).transpose(1, 2)  # (B, L, K)
    expected = -torch.cdist(cols, w.flatten(1)[None].expand(3, -1, -1), p=1)  # (B, L, O)
    y = reference.adder2d_forward(x, w, (2, 2), (1, 1), (1, 1), 1)
    assert_close(y.flatten(2).transpose(1, 2), expected, 45)


def test_weight_gradient_is_the_gemm_identity():
    # dW = G^T X - W * colsum(G): the identity the fast backends compute, against the broadcast sum
    x, w, g = (
        torch.randn(50, 12, dtype=torch.float64),
        torch.randn(7, 12, dtype=torch.float64),
        torch.randn(50, 7, dtype=torch.float64),
    )
    assert_close(reference.linear_grad_weight(g, x, w), g.t() @ x - w * g.sum(0)[:, None], 50)


def test_input_gradient_is_clipped_by_hardtanh():
    # |w - x| > 1 everywhere: the input gradient is sum_o g * sign(w - x), not g * (w - x)
    x = torch.tensor([[0.0, 10.0]], dtype=torch.float64)
    w = torch.tensor([[3.0, -2.0], [-5.0, 4.0]], dtype=torch.float64)
    g = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    expected = torch.tensor([[1.0 * 1 + 2.0 * -1, 1.0 * -1 + 2.0 * -1]], dtype=torch.float64)
    assert torch.equal(reference.linear_grad_input(g, x, w), expected)
    # and inside [-1, 1] it is the plain difference
    x2 = torch.tensor([[0.25]], dtype=torch.float64)
    w2 = torch.tensor([[0.75]], dtype=torch.float64)
    assert reference.linear_grad_input(torch.ones(1, 1, dtype=torch.float64), x2, w2).item() == 0.5


def test_chunking_bounds_the_temporary_and_keeps_results(monkeypatch):
    x, w, g = torch.randn(100, 8), torch.randn(5, 8), torch.randn(100, 5)
    expected = (
        reference.linear_forward(x, w),
        reference.linear_grad_input(g, x, w),
        reference.linear_grad_weight(g, x, w),
    )
    monkeypatch.setattr(reference, "MAX_TEMPORARY_ELEMENTS", 5 * 8 * 3)  # chunks of 3 rows
    assert reference._chunk_rows(5, 8) == 3
    seen = []
    real_abs = torch.Tensor.abs

    def spy_abs(t):
        seen.append(t.numel())
        return real_abs(t)

    monkeypatch.setattr(torch.Tensor, "abs", spy_abs)
    chunked = (
        reference.linear_forward(x, w),
        reference.linear_grad_input(g, x, w),
        reference.linear_grad_weight(g, x, w),
    )
    assert seen and max(seen) <= 5 * 8 * 3
    for a, b in zip(chunked, expected, strict=True):
        assert_close(a, b, 100)
