"""Adder layers: ``Adder2d`` and ``AdderLinear``, shaped like ``nn.Conv2d`` and ``nn.Linear``.

Their weights are initialized N(0, 1) as in the official AdderNet code (an adder layer's output scale
does not depend on the weight scale the way a convolution's does; every adder layer is followed by
BatchNorm in the paper's networks). Parameter names and shapes are those of ``nn.Conv2d``/``nn.Linear``,
so state dicts load across. Train them with ``slac.nn.scale_adder_grads`` between backward and the
optimizer step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from slac import functional
from slac.ops.backends import check_backend

__all__ = ["Adder2d", "AdderLayer", "AdderLinear"]


class AdderLayer(nn.Module):
    """Base class of the adder layers: marks the weights that adaptive learning-rate scaling acts on."""

    weight: Tensor
    bias: Tensor | None
    backend: str

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class Adder2d(AdderLayer):
    """2-D adder convolution: ``-sum |x_patch - w|`` per output channel and position.

    Arguments as ``nn.Conv2d``, padding an int, a pair, ``"same"`` or ``"valid"``, plus ``backend``
    ('auto', 'cpu', 'reference', ...). Only ``padding_mode="zeros"``: in AdderNet a padded position is a
    zero input and contributes -|w|; for another border, pad the input yourself (``F.pad(x, ..., mode=...)``)
    and pass ``padding=0``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels ({in_channels}) and out_channels ({out_channels})"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        if padding_mode != "zeros":
            raise ValueError(
                f"padding_mode {padding_mode!r}: adder layers pad with zeros only (a padded position "
                "contributes -|w|); pad the input with F.pad(x, ..., mode=...) and use padding=0"
            )
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be an int, a pair, 'same' or 'valid'; got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1 (as in nn.Conv2d), got stride {self.stride}")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = _pair(padding)
        if min(self.kernel_size) < 1:
            raise ValueError(f"kernel_size must be positive, got {self.kernel_size}")
        self.backend = check_backend(backend)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def forward(self, input: Tensor) -> Tensor:
        return functional.adder2d(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, self.backend
        )

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += (
                f", padding={self.padding!r}"
                if isinstance(self.padding, str)
                else f", padding={self.padding}"
            )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s


class AdderLinear(AdderLayer):
    """L1 form of a linear layer: ``y[..., o] = -sum_k |x[..., k] - w[o, k]|``. Arguments as ``nn.Linear``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        self.backend = check_backend(backend)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def forward(self, input: Tensor) -> Tensor:
        return functional.adder_linear(input, self.weight, self.bias, self.backend)

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s
