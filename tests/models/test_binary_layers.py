"""BNN layers: the sign with its clipped straight-through estimator and the XNOR-Net weight binarization."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slac.nn import BinaryConv2d, BinaryLinear, binarize_weight, sign_ste


def test_sign_ste_values_and_clipped_gradient():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    y = sign_ste(x)
    torch.testing.assert_close(y, torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))
    grad = torch.arange(1.0, 8.0)
    y.backward(grad)
    # passed where |x| <= 1 (the gradient of hardtanh), zero elsewhere
    torch.testing.assert_close(x.grad, grad * torch.tensor([0.0, 1, 1, 1, 1, 1, 0]))


def test_binarize_weight_value_and_gradient():
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    wb = binarize_weight(w)
    alpha = w.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(wb, alpha * torch.sign(w.detach()))
    g = torch.randn_like(w)
    wb.backward(g)
    # d/dw of alpha_o * sign(w) with the identity STE for the sign and alpha = mean |w_o| exact:
    # alpha_o * g + sign(w) / n * sum_j g_j sign(w_j)   (XNOR-Net, Sec. 3.1)
    sign = torch.sign(w.detach())
    n = w[0].numel()
    expected = alpha * g + sign / n * (g * sign).sum(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(w.grad, expected)


def test_binary_conv_matches_conv_of_binarized_operands_and_masks_input_gradient():
    layer = BinaryConv2d(3, 4, 3, padding=1, bias=False).double()
    x = (2 * torch.randn(2, 3, 5, 5, dtype=torch.float64)).requires_grad_()
    y = layer(x)
    expected = F.conv2d(torch.where(x >= 0, 1.0, -1.0).double(), binarize_weight(layer.weight), padding=1)
    torch.testing.assert_close(y, expected)
    y.sum().backward()
    assert (x.grad[x.detach().abs() > 1] == 0).all()
    assert x.grad[x.detach().abs() <= 1].abs().sum() > 0
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_binary_linear_matches_linear_of_binarized_operands():
    layer = BinaryLinear(6, 3).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    expected = F.linear(torch.where(x >= 0, 1.0, -1.0).double(), binarize_weight(layer.weight), layer.bias)
    torch.testing.assert_close(layer(x), expected)
