"""The official AdderNet formulation, kept only as a baseline for benchmarks (docs/DESIGN.md, "The
official AdderNet code").

It unfolds the input to X_col (K, B*L) and materializes the whole (C_out, K, B*L) difference W - X_col
in the forward and again in the backward, which is what makes the official layer slow and memory hungry.
Its backward also applies the adaptive learning-rate scaling to the weight gradient inside autograd, as
the official code does (the project instead scales after backward: see ``slac.nn.grad_scaling``).
Training code should use ``slac.functional.adder2d``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["official_adder2d"]


class _OfficialAdder(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_col: Tensor, w_col: Tensor, eta: float) -> Tensor:
        # x_col (K, B*L), w_col (O, K) -> (O, B*L), through a (O, K, B*L) temporary
        ctx.save_for_backward(x_col, w_col)
        ctx.eta = eta
        return -(w_col.unsqueeze(2) - x_col.unsqueeze(0)).abs().sum(1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x_col, w_col = ctx.saved_tensors
        diff = x_col.unsqueeze(0) - w_col.unsqueeze(2)  # (O, K, B*L)
        grad_w = (diff * grad.unsqueeze(1)).sum(2)
        grad_w = ctx.eta * math.sqrt(grad_w.numel()) * grad_w / grad_w.norm().clamp_min(1e-12)
        grad_x = (-diff).clamp_(-1, 1).mul_(grad.unsqueeze(1)).sum(0)
        return grad_x, grad_w, None


def official_adder2d(
    input: Tensor, weight: Tensor, stride: int = 1, padding: int = 0, eta: float = 0.2
) -> Tensor:
    """Adder convolution the official way (groups 1, dilation 1, square stride and padding)."""
    b, _, h, w = input.shape
    o, _, kh, kw = weight.shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    x_col = F.unfold(input, (kh, kw), padding=padding, stride=stride)  # (B, K, L)
    x_col = x_col.permute(1, 2, 0).reshape(x_col.shape[1], -1)  # (K, L*B)
    out = _OfficialAdder.apply(x_col, weight.reshape(o, -1), eta)  # (O, L*B)
    return out.view(o, ho, wo, b).permute(3, 0, 1, 2).contiguous()
