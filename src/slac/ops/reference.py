"""Reference adder operator in plain PyTorch: the oracle every fast backend is tested against.

It follows the official AdderNet formulation (docs/DESIGN.md, "The official AdderNet code"): unfold the
input into columns, broadcast |X - W| over (columns, C_out, K) and reduce over K. Unlike the official code,
which materializes the whole (C_out, K, B*L) difference at once (1.2-2.4 GB per ResNet-20 layer at batch
256 in float32), the columns are processed in chunks, so that one temporary never holds more than
``max(MAX_TEMPORARY_ELEMENTS, C_out*K)`` elements (64 MiB in float32). A handful of such temporaries are
alive at once (the difference, its absolute value or clamp, the product with the gradient), so peak extra
memory is about four times that bound, plus the unfolded input itself.

Gradients are the AdderNet ones, written as explicit formulas rather than obtained from autograd:

    Y[n, o]     = -sum_k |X[n, k] - W[o, k]|
    dL/dW[o, k] =  sum_n G[n, o] * (X[n, k] - W[o, k])           full precision, not sign()
    dL/dX[n, k] =  sum_o G[n, o] * HT(W[o, k] - X[n, k])         HT(z) = clamp(z, -1, 1)

The weight gradient is evaluated by broadcasting, not by the GEMM identity the fast backends use, so
that a test comparing the two checks the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from slac.ops.geometry import output_size

MAX_TEMPORARY_ELEMENTS = 1 << 24
"""Upper bound on the elements of one broadcast temporary (unless a single row, C_out*K, is larger)."""


def _chunk_rows(out_features: int, in_features: int) -> int:
    return max(1, MAX_TEMPORARY_ELEMENTS // max(1, out_features * in_features))


# --- matrix form: columns (N, K) against filters (O, K) -------------------------------------------


def linear_forward(x: Tensor, weight: Tensor) -> Tensor:
    """(N, K), (O, K) -> (N, O): ``-sum_k |x[n, k] - w[o, k]|``."""
    out = x.new_empty(x.shape[0], weight.shape[0])
    step = _chunk_rows(*weight.shape)
    for start in range(0, x.shape[0], step):
        xs = x[start : start + step]
        out[start : start + step] = -(xs[:, None, :] - weight[None]).abs().sum(-1)  # (n, O, K) -> (n, O)
    return out


def linear_grad_input(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """(N, O), (N, K), (O, K) -> (N, K): ``sum_o g[n, o] * clamp(w[o, k] - x[n, k], -1, 1)``."""
    out = torch.empty_like(x)
    step = _chunk_rows(*weight.shape)
    for start in range(0, x.shape[0], step):
        xs, gs = x[start : start + step], grad[start : start + step]
        ht = (weight[None] - xs[:, None, :]).clamp_(-1, 1)  # (n, O, K)
        out[start : start + step] = (gs[:, :, None] * ht).sum(1)
    return out


def linear_grad_weight(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """(N, O), (N, K), (O, K) -> (O, K): ``sum_n g[n, o] * (x[n, k] - w[o, k])``."""
    out = torch.zeros_like(weight)
    step = _chunk_rows(*weight.shape)
    for start in range(0, x.shape[0], step):
        xs, gs = x[start : start + step], grad[start : start + step]
        out += (gs[:, :, None] * (xs[:, None, :] - weight[None])).sum(0)  # (n, O, K) -> (O, K)
    return out


# --- convolution form -------------------------------------------------------------------------------


def _unfold_groups(input: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    """Input (B, C, H, W) -> columns (G, B*L, K_g), K_g = C/G * kh * kw, ordered like weight[o].flatten()."""
    b = input.shape[0]
    kernel = weight.shape[-2:]
    cols = F.unfold(input, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C*kh*kw, L)
    k_per_group = cols.shape[1] // groups
    cols = cols.view(b, groups, k_per_group, -1).permute(1, 0, 3, 2)  # (G, B, L, K_g)
    return cols.reshape(groups, -1, k_per_group)


def _grad_columns(grad: Tensor, groups: int) -> Tensor:
    """grad (B, O, Ho, Wo) -> (G, B*L, O_g)."""
    b, o = grad.shape[:2]
    return grad.reshape(b, groups, o // groups, -1).permute(1, 0, 3, 2).reshape(groups, -1, o // groups)


def adder2d_forward(input: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    """(B, C, H, W), (O, C/G, kh, kw) -> (B, O, Ho, Wo)."""
    b, o = input.shape[0], weight.shape[0]
    ho, wo = output_size(input, weight, stride, padding, dilation)
    cols = _unfold_groups(input, weight, stride, padding, dilation, groups)  # (G, N, K_g)
    w = weight.reshape(groups, o // groups, -1)  # (G, O_g, K_g)
    out = torch.stack([linear_forward(cols[g], w[g]) for g in range(groups)])  # (G, N, O_g)
    return out.view(groups, b, ho * wo, o // groups).permute(1, 0, 3, 2).reshape(b, o, ho, wo)


def adder2d_grad_input(
    grad: Tensor, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int
) -> Tensor:
    b, o = input.shape[0], weight.shape[0]
    cols = _unfold_groups(input, weight, stride, padding, dilation, groups)  # (G, B*L, K_g)
    w = weight.reshape(groups, o // groups, -1)
    g = _grad_columns(grad, groups)
    dcols = torch.stack([linear_grad_input(g[i], cols[i], w[i]) for i in range(groups)])  # (G, B*L, K_g)
    positions, k_per_group = grad.shape[2] * grad.shape[3], cols.shape[-1]
    dcols = dcols.view(groups, b, positions, k_per_group).permute(1, 0, 3, 2)  # (B, G, K_g, L)
    return F.fold(
        dcols.reshape(b, groups * k_per_group, positions),
        input.shape[-2:],
        weight.shape[-2:],
        dilation=dilation,
        padding=padding,
        stride=stride,
    )


def adder2d_grad_weight(
    grad: Tensor, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int
) -> Tensor:
    o = weight.shape[0]
    cols = _unfold_groups(input, weight, stride, padding, dilation, groups)
    w = weight.reshape(groups, o // groups, -1)
    g = _grad_columns(grad, groups)
    dw = torch.stack([linear_grad_weight(g[i], cols[i], w[i]) for i in range(groups)])
    return dw.reshape(weight.shape)
