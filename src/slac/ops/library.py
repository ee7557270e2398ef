"""The adder operator registered with ``torch.library``: ``torch.ops.slac.adder2d`` and ``adder_linear``.

Each op takes a concrete backend name (``functional`` resolves ``"auto"`` before calling) and dispatches
to that backend's module. The gradients are ops of their own, so that ``torch.compile`` and AOTAutograd
trace forward and backward through fake (meta) kernels without running them, and ``opcheck`` can test the
registration. Under autocast the ops run in float32: long sums of |a - b| lose precision in half types.

An empty batch (N = 0) never reaches a backend: its output and input gradient are empty and its weight
gradient, a sum over no images, is zero, as for ``nn.Conv2d``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slac.ops.backends import get_backend
from slac.ops.geometry import output_size

__all__ = ["adder2d", "adder_linear"]


def _empty(*tensors: Tensor) -> bool:
    return any(t.numel() == 0 for t in tensors)


# --- convolution ---------------------------------------------------------------------------------------


@torch.library.custom_op("slac::adder2d", mutates_args=())
def adder2d(
    input: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    backend: str,
) -> Tensor:
    """Y[b, o, p] = -sum_{c,i,j} |X[b, c, p*s - pad + (i,j)*d] - W[o, c, i, j]| (zero padding)."""
    if _empty(input):
        return input.new_zeros(
            input.shape[0], weight.shape[0], *output_size(input, weight, stride, padding, dilation)
        )
    return get_backend(backend).adder2d_forward(input, weight, stride, padding, dilation, groups)


@adder2d.register_fake
def _(input, weight, stride, padding, dilation, groups, backend):
    return input.new_empty(
        input.shape[0], weight.shape[0], *output_size(input, weight, stride, padding, dilation)
    )


@torch.library.custom_op("slac::adder2d_grad_input", mutates_args=())
def adder2d_grad_input(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    backend: str,
) -> Tensor:
    """dX = col2im(sum_o G * clamp(W - X, -1, 1)): AdderNet's HardTanh-clipped input gradient."""
    if _empty(input, grad):
        return torch.zeros_like(input, memory_format=torch.contiguous_format)
    return get_backend(backend).adder2d_grad_input(grad, input, weight, stride, padding, dilation, groups)


@adder2d_grad_input.register_fake
def _(grad, input, weight, stride, padding, dilation, groups, backend):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.custom_op("slac::adder2d_grad_weight", mutates_args=())
def adder2d_grad_weight(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    backend: str,
) -> Tensor:
    """dW = sum G * (X - W): AdderNet's full-precision weight gradient (not its sign)."""
    if _empty(input, grad):
        return torch.zeros_like(weight, memory_format=torch.contiguous_format)
    return get_backend(backend).adder2d_grad_weight(grad, input, weight, stride, padding, dilation, groups)


@adder2d_grad_weight.register_fake
def _(grad, input, weight, stride, padding, dilation, groups, backend):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


def _adder2d_setup_context(ctx, inputs, output):
    input, weight, stride, padding, dilation, groups, backend = inputs
    ctx.save_for_backward(input, weight)
    ctx.conv = (stride, padding, dilation, groups, backend)


def _adder2d_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    grad = grad.contiguous()
    grad_input = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_input = adder2d_grad_input(grad, input, weight, *ctx.conv)
    if ctx.needs_input_grad[1]:
        grad_weight = adder2d_grad_weight(grad, input, weight, *ctx.conv)
    return grad_input, grad_weight, None, None, None, None, None


adder2d.register_autograd(_adder2d_backward, setup_context=_adder2d_setup_context)


# --- linear ----------------------------------------------------------------------------------------------


@torch.library.custom_op("slac::adder_linear", mutates_args=())
def adder_linear(input: Tensor, weight: Tensor, backend: str) -> Tensor:
    """(N, K), (O, K) -> (N, O): y[n, o] = -sum_k |x[n, k] - w[o, k]|."""
    if _empty(input):
        return input.new_zeros(input.shape[0], weight.shape[0])
    return get_backend(backend).linear_forward(input, weight)


@adder_linear.register_fake
def _(input, weight, backend):
    return input.new_empty(input.shape[0], weight.shape[0])


@torch.library.custom_op("slac::adder_linear_grad_input", mutates_args=())
def adder_linear_grad_input(grad: Tensor, input: Tensor, weight: Tensor, backend: str) -> Tensor:
    if _empty(input, grad):
        return torch.zeros_like(input, memory_format=torch.contiguous_format)
    return get_backend(backend).linear_grad_input(grad, input, weight)


@adder_linear_grad_input.register_fake
def _(grad, input, weight, backend):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.custom_op("slac::adder_linear_grad_weight", mutates_args=())
def adder_linear_grad_weight(grad: Tensor, input: Tensor, weight: Tensor, backend: str) -> Tensor:
    if _empty(input, grad):
        return torch.zeros_like(weight, memory_format=torch.contiguous_format)
    return get_backend(backend).linear_grad_weight(grad, input, weight)


@adder_linear_grad_weight.register_fake
def _(grad, input, weight, backend):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


def _linear_setup_context(ctx, inputs, output):
    input, weight, backend = inputs
    ctx.save_for_backward(input, weight)
    ctx.backend = backend


def _linear_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    grad = grad.contiguous()
    grad_input = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_input = adder_linear_grad_input(grad, input, weight, ctx.backend)
    if ctx.needs_input_grad[1]:
        grad_weight = adder_linear_grad_weight(grad, input, weight, ctx.backend)
    return grad_input, grad_weight, None


adder_linear.register_autograd(_linear_backward, setup_context=_linear_setup_context)

for _op in ("slac::adder2d", "slac::adder_linear"):
    for _device_type in ("cpu", "cuda"):
        torch.library.register_autocast(_op, _device_type, torch.float32)
