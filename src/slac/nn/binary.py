"""Binary layers for the BNN baselines of the paper's Tables 1 and 2: ``BinaryConv2d`` and ``BinaryLinear``.

Both the weights and the input activations are binarized, so that on binary hardware every
multiply-accumulate becomes an XNOR and a population count (XNOR-Net, Rastegari et al. 2016, the
paper's [16]; BinaryNet, Hubara/Courbariaux et al. 2016, its [4]):

    x_b = sign(x)                                  activations, in {-1, +1} (sign(0) = +1)
    w_b[o] = alpha_o * sign(w[o]),  alpha_o = mean |w[o]|   weights, one scale per output channel
    y = conv(x_b, w_b)  (or linear)

Gradients (straight-through estimators):

- activations: d sign(x)/dx := 1 where |x| <= 1, else 0 (BinaryNet's "cancel the gradient when the
  input is large"; the gradient of hardtanh). ``sign_ste`` is that autograd function.
- weights: d sign(w)/dw := 1 (identity STE: the gradient with respect to the binary weight is applied to
  the real-valued weight, as in XNOR-Net); the scale alpha_o = mean |w[o]| is differentiated exactly,
  so XNOR-Net's extra term (1/n) sign(w) * (sum over the filter) comes out of autograd.

Choice against DoReFa-Net (Zhou et al. 2016, the paper's BNN citation for Table 1): DoReFa's 1-bit
weights are E|w| * sign(w) with one scalar per layer, and its 1-bit activations are {0, 1} after a clip
to [0, 1], which is an AND/popcount, not an XNOR. The tables count XNORs, so both operands are {-1, +1}
here; the per-channel scale (XNOR-Net) is a strict generalisation of DoReFa's per-layer one, and either
is a per-output-channel constant that the BatchNorm after every binary layer absorbs at inference, so it
costs no multiplication in the operation counts (``slac.analysis.count_ops``).

Zero padding: the convolution pads the binarized input with zeros (as XNOR-Net implementations do), so
border taps contribute 0 rather than +-1.

The networks around these layers (``slac.models`` with ``form="bnn"``) use hardtanh as activation,
whose sign the next binary layer takes; the first convolution and the classifier stay full precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BinaryConv2d", "BinaryLinear", "SignSTE", "binarize_weight", "sign_ste"]


class SignSTE(torch.autograd.Function):
    """sign(x) in {-1, +1} forward; gradient passed unchanged where |x| <= 1 and zeroed elsewhere."""

    @staticmethod
    def forward(ctx, input: Tensor) -> Tensor:
        ctx.save_for_backward(input)
        return torch.where(input >= 0, 1.0, -1.0).to(input.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (input,) = ctx.saved_tensors
        return grad * (input.abs() <= 1).to(grad.dtype)


def sign_ste(input: Tensor) -> Tensor:
    """Binarize activations to {-1, +1} with the clipped straight-through estimator (BinaryNet)."""
    return SignSTE.apply(input)


def binarize_weight(weight: Tensor) -> Tensor:
    """alpha_o * sign(w[o]) with alpha_o = mean |w[o]| over all but the first dimension (XNOR-Net).

    The sign has an identity straight-through gradient; alpha is differentiated exactly.
    """
    alpha = weight.abs().mean(dim=tuple(range(1, weight.dim())), keepdim=True)  # (O, 1, ...)
    sign = torch.where(weight >= 0, 1.0, -1.0).to(weight.dtype)
    sign = weight + (sign - weight).detach()  # value sign(w), gradient d/dw = identity
    return alpha * sign


class BinaryConv2d(nn.Conv2d):
    """Convolution of sign(input) with binarized weights; arguments as ``nn.Conv2d`` (zero padding only).

    The real-valued weights are the trained parameters (latent weights); ``binary_weight()`` returns the
    weights the layer computes with.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(
                f"BinaryConv2d supports zero padding only, got padding_mode={self.padding_mode!r}"
            )

    def binary_weight(self) -> Tensor:
        return binarize_weight(self.weight)

    def forward(self, input: Tensor) -> Tensor:
        return F.conv2d(
            sign_ste(input),
            self.binary_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


class BinaryLinear(nn.Linear):
    """Linear layer on sign(input) with binarized weights; arguments as ``nn.Linear``."""

    def binary_weight(self) -> Tensor:
        return binarize_weight(self.weight)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(sign_ste(input), self.binary_weight(), self.bias)
