"""Functional adder layers: ``adder2d`` and ``adder_linear``.

An adder layer replaces the dot product of a convolution (or linear layer) with a negative L1 distance
between each input patch and each filter (AdderNet, Chen et al. 2020; Eq. 1 of the SLAC paper):

    Y[b, o, h, w] = -sum_{c, i, j} |X[b, c, h*s - p + i*d, w*s - p + j*d] - W[o, c, i, j]|   (+ bias[o])

Zero padding takes part: a padded position contributes -|W[o, c, i, j]|. Training uses AdderNet's
gradients: the full-precision weight gradient sum G * (X - W) and the HardTanh-clipped input gradient
sum G * clamp(W - X, -1, 1). Layers built on these functions are in ``slac.nn``.

Backends: ``"auto"`` (the fastest available for the tensors' device; see ``slac.ops.resolve_backend``),
``"cpu"`` (numba kernels), ``"triton"`` (GPU kernels), ``"reference"`` (plain PyTorch, the oracle).
float32 and float64 are computed as they are. float16 and bfloat16 inputs are accumulated in float32
and the result is returned in the input dtype (the triton backend reads half inputs directly; the others
cast them to float32 first). Under autocast the layer runs in float32 and returns float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from slac.ops import library
from slac.ops.backends import BACKENDS, resolve_backend

__all__ = ["adder2d", "adder_linear"]

_HALF = (torch.float16, torch.bfloat16)


def _pair(value, name: str, minimum: int) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {tuple(value)}")
    return list(value)


def _string_padding(
    padding: str, kernel: tuple[int, int], stride: list[int], dilation: list[int]
) -> tuple[list[int], tuple[int, int, int, int]]:
    """``padding="valid"`` or ``"same"`` as nn.Conv2d reads them: the symmetric padding for the kernels and
    the extra zeros (left, right, top, bottom) to add to the input first. "same" pads d (k - 1) in all, half
    before, the odd one after (as conv2d does for even kernels)."""
    if padding == "valid":
        return [0, 0], (0, 0, 0, 0)
    if padding != "same":
        raise ValueError(f"padding must be an int, a pair of ints, 'valid' or 'same'; got {padding!r}")
    if stride != [1, 1]:
        raise ValueError(f"padding='same' needs stride 1 (as in nn.Conv2d), got stride {tuple(stride)}")
    total = [dilation[d] * (kernel[d] - 1) for d in range(2)]
    before = [t // 2 for t in total]
    after = [t - b for t, b in zip(total, before, strict=True)]
    extra = (0, after[1] - before[1], 0, after[0] - before[0])  # what symmetric padding leaves out
    return before, extra


def _check_tensor(name: str, t, ndims: tuple[int, ...]) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {expected}, got a {t.dim()}-D tensor of shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")


def _check_operands(input: Tensor, weight: Tensor, bias: Tensor | None, out_features: int) -> None:
    if weight.device != input.device:
        raise ValueError(f"input is on {input.device} but weight is on {weight.device}; move them together")
    if bias is not None:
        _check_tensor("bias", bias, (1,))
        if bias.shape[0] != out_features:
            raise ValueError(f"bias must have {out_features} elements (one per output), got {bias.shape[0]}")
        if bias.device != input.device:
            raise ValueError(f"input is on {input.device} but bias is on {bias.device}; move them together")
    if input.dtype != weight.dtype and not torch.is_autocast_enabled(input.device.type):
        raise TypeError(
            f"input ({input.dtype}) and weight ({weight.dtype}) must have the same dtype "
            "(or run under torch.autocast)"
        )


def _compute_dtype(input: Tensor, backend: str) -> torch.dtype | None:
    """The dtype to cast to before the op (half types, outside autocast, for backends that need it)."""
    if (
        input.dtype in _HALF
        and not BACKENDS[backend].native_half
        and not torch.is_autocast_enabled(input.device.type)
    ):
        return torch.float32
    return None


def adder2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """Adder convolution of ``input`` (B, C, H, W) or (C, H, W) with ``weight`` (O, C/groups, kh, kw).

    Returns (B, O, Ho, Wo) (or (O, Ho, Wo)), with Ho = (H + 2p - d (kh - 1) - 1) // s + 1 as in conv2d.
    ``padding`` may also be ``"valid"`` (none) or ``"same"`` (stride 1; output the input's size), as in
    conv2d; padding is always zeros, each padded position contributing -|w|.
    """
    _check_tensor("input", input, (3, 4))
    _check_tensor("weight", weight, (4,))
    stride_, dilation_ = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
    extra = (0, 0, 0, 0)
    if isinstance(padding, str):
        padding_, extra = _string_padding(padding, tuple(weight.shape[-2:]), stride_, dilation_)
    else:
        padding_ = _pair(padding, "padding", 0)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    if any(extra):  # "same" with an even dilated extent: the odd zero after, as conv2d
        input = F.pad(input, extra)
    channels, out_channels = input.shape[1], weight.shape[0]
    if channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels ({channels}) and the output channels "
            f"({out_channels})"
        )
    if weight.shape[1] * groups != channels:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} expects {weight.shape[1] * groups} input channels "
            f"with groups={groups}, but input has {channels} channels (shape {tuple(input.shape)})"
        )
    for d, axis in enumerate(("height", "width")):
        extent = dilation_[d] * (weight.shape[2 + d] - 1) + 1
        padded = input.shape[2 + d] + 2 * padding_[d]
        if extent > padded:
            raise ValueError(
                f"kernel {axis} with dilation ({extent}) is larger than the padded input {axis} ({padded})"
            )
    _check_operands(input, weight, bias, out_channels)
    name = resolve_backend(backend, input.device)

    cast = _compute_dtype(input, name)
    x, w = (input, weight) if cast is None else (input.to(cast), weight.to(cast))
    out = library.adder2d(x, w, stride_, padding_, dilation_, groups, name)
    if cast is not None:
        out = out.to(input.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out


def adder_linear(input: Tensor, weight: Tensor, bias: Tensor | None = None, backend: str = "auto") -> Tensor:
    """L1 form of a linear layer: ``y[..., o] = -sum_k |x[..., k] - w[o, k]|`` (+ bias[o]).

    ``input`` is (*, K) with any number of leading dimensions (at least one), ``weight`` is (O, K).
    """
    _check_tensor("input", input, tuple(range(1, 9)))
    _check_tensor("weight", weight, (2,))
    if input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"input has {input.shape[-1]} features (last dimension of {tuple(input.shape)}) but weight "
            f"of shape {tuple(weight.shape)} expects {weight.shape[1]}"
        )
    _check_operands(input, weight, bias, weight.shape[0])
    name = resolve_backend(backend, input.device)

    leading = input.shape[:-1]
    cast = _compute_dtype(input, name)
    x, w = input.reshape(-1, input.shape[-1]), weight
    if cast is not None:
        x, w = x.to(cast), w.to(cast)
    out = library.adder_linear(x, w, name)
    if cast is not None:
        out = out.to(input.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.reshape(*leading, weight.shape[0])
