"""Shapes shared by the adder backends: the convolution's output size, and the linear form as a 1x1
convolution (so that a backend that implements the convolution gets ``adder_linear`` for free)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

__all__ = ["linear_as_conv", "output_size"]


def output_size(
    input: Tensor, weight: Tensor, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]
) -> tuple[int, int]:
    """(Ho, Wo) of input (B, C, H, W) and weight (O, C/G, kh, kw), as conv2d: (H + 2p - d(k-1) - 1)//s + 1."""
    ho, wo = (
        (input.shape[2 + d] + 2 * padding[d] - dilation[d] * (weight.shape[2 + d] - 1) - 1) // stride[d] + 1
        for d in range(2)
    )
    return ho, wo


def linear_as_conv(forward: Callable[..., Tensor], grad_input: Callable[..., Tensor]):
    """``linear_forward(x, w)`` and ``linear_grad_input(g, x, w)`` from a backend's convolution functions:
    (N, K) runs as an (N, K, 1, 1) image through a 1x1 adder convolution."""

    def linear_forward(x: Tensor, weight: Tensor) -> Tensor:
        """(N, K), (O, K) -> (N, O)."""
        return forward(x[:, :, None, None], weight[:, :, None, None], (1, 1), (0, 0), (1, 1), 1)[:, :, 0, 0]

    def linear_grad_input(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        """(N, O), (N, K), (O, K) -> (N, K)."""
        return grad_input(
            grad[:, :, None, None], x[:, :, None, None], weight[:, :, None, None], (1, 1), (0, 0), (1, 1), 1
        )[:, :, 0, 0]

    return linear_forward, linear_grad_input
