"""Layer factories that turn a model's ``form`` into layer classes, and the option-A shortcut.

    form   convolution          linear layer         activation
    cnn    nn.Conv2d            nn.Linear            nn.ReLU
    ann    slac.nn.Adder2d      slac.nn.AdderLinear  nn.ReLU
    bnn    slac.nn.BinaryConv2d slac.nn.BinaryLinear nn.Hardtanh

The binary layers take the sign of their input, so the BNN form uses hardtanh (BinaryNet, Hubara et al.
2016): a ReLU output is >= 0 and its sign would be constant. The first convolution and the head are
full precision in every form (built with ``nn.Conv2d`` / the head registry, not with these factories).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from slac.errors import ConfigError
from slac.nn import Adder2d, AdderLinear, BinaryConv2d, BinaryLinear

__all__ = ["FORMS", "PadShortcut", "act_layer", "check_form", "conv_layer", "conv_shortcut", "linear_layer"]

FORMS = ("cnn", "ann", "bnn")


def check_form(form: str) -> str:
    if form not in FORMS:
        raise ConfigError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    return form


def conv_layer(form: str, adder_backend: str = "auto") -> Callable[..., nn.Module]:
    """The 2-D convolution class of ``form``, called like ``nn.Conv2d(in, out, k, stride, padding, ...)``."""
    check_form(form)
    if form == "ann":
        return functools.partial(Adder2d, backend=adder_backend)
    return {"cnn": nn.Conv2d, "bnn": BinaryConv2d}[form]


def linear_layer(form: str, adder_backend: str = "auto") -> Callable[..., nn.Module]:
    """The fully connected layer class of ``form``, called like ``nn.Linear(in, out, bias=...)``."""
    check_form(form)
    if form == "ann":
        return functools.partial(AdderLinear, backend=adder_backend)
    return {"cnn": nn.Linear, "bnn": BinaryLinear}[form]


def act_layer(form: str) -> Callable[[], nn.Module]:
    """The activation of ``form``: ReLU for cnn and ann, hardtanh for bnn (see the module docstring)."""
    check_form(form)
    return nn.Hardtanh if form == "bnn" else functools.partial(nn.ReLU, inplace=True)


def conv_shortcut(
    conv: Callable[..., nn.Module], in_channels: int, out_channels: int, stride: int
) -> nn.Module | None:
    """Option-B shortcut (He et al. 2016; official AdderNet): 1x1 ``conv`` with ``stride``, then BN.
    None where the shape does not change (the identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        conv(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class PadShortcut(nn.Module):
    """Option-A shortcut of He et al. 2016 (CIFAR): subsample by ``stride``, zero-pad the new channels.

    No parameters and no operations to count.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"cannot pad {in_channels} channels down to {out_channels}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"
