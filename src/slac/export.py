"""Deploying AdderNets: models with adder layers as standard operators (ONNX, ``torch.export``).

    from slac.export import export_onnx
    export_onnx(model, torch.randn(1, 3, 32, 32), "resnet20_ann.onnx")     # runs in onnxruntime

slac's adder layers are custom operators (``torch.ops.slac.adder2d``), which no runtime knows. For export
they are rewritten with standard operators, for inference only:

    patches  P = conv2d(x, E, stride, padding, dilation, groups=C)    E: one-hot kernels, P (N, C*kh*kw, L):
                                                                       the unfolded input, zeros where padded
    output   Y[n, o, l] = -sum_k |P[n, k, l] - W[o, k]|               a broadcast subtraction, Abs, ReduceSum

which is the official AdderNet formulation (a padded position contributes -|w|); the temporary is
N x O x K x L elements (2.4 M floats, 9.4 MB, per image in each 3x3 layer of ResNet-20). A BatchNorm that
follows an adder layer becomes a per-channel scale and shift (``ChannelAffine``, fold_batchnorm): an adder
output cannot absorb the scale into its weights the way a convolution does, since |s x - s w| = s |x - w|
only moves the scale.

The rewrite is done on the operators, not on the modules: ``decompositions()`` is a ``torch.export`` table
(``torch.export.export(model, args).run_decompositions(decompositions())`` leaves no slac operator), so
every way of calling the layers (padding "same", groups, bias, the functional form) exports as it runs.
``export_program`` folds and decomposes; ``export_onnx`` writes its program with ``torch.onnx.export``.
Both check the example (a tensor or a tuple of tensors; a batch of at least one image on the model's
device, in its dtype, that the model runs on) and the output file's folder before tracing. A model
without adder layers exports too (there is then nothing to fold or decompose).
Needs the ``export`` extra (onnx, onnxscript; onnxruntime to run the result).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slac.errors import ConfigError, MissingDependencyError, SlacError
from slac.files import check_output_file
from slac.nn.adder import Adder2d, AdderLinear

__all__ = [
    "ChannelAffine",
    "adder2d_standard",
    "adder_linear_standard",
    "decompositions",
    "export_onnx",
    "export_program",
    "fold_batchnorm",
]


def _patch_kernels(channels: int, kh: int, kw: int, like: Tensor) -> Tensor:
    """(C * kh * kw, 1, kh, kw) one-hot kernels: output channel c * kh * kw + i * kw + j picks input channel
    c at kernel offset (i, j), the order of ``weight[o].flatten()``."""
    eye = torch.eye(kh * kw, dtype=like.dtype, device=like.device).view(kh * kw, 1, kh, kw)
    return eye.repeat(channels, 1, 1, 1)


def adder2d_standard(
    input: Tensor, weight: Tensor, stride: Any, padding: Any, dilation: Any, groups: int
) -> Tensor:
    """``slac.functional.adder2d`` with standard operators only (conv2d, sub, abs, sum): for export."""
    batch, channels = input.shape[:2]
    out_channels, per_group, kh, kw = weight.shape
    patches = F.conv2d(
        input, _patch_kernels(channels, kh, kw, input), None, stride, padding, dilation, groups=channels
    )  # (N, C * kh * kw, Ho, Wo)
    ho, wo = patches.shape[-2:]
    k = per_group * kh * kw
    patches = patches.reshape(batch, groups, 1, k, ho * wo)  # (N, G, 1, K_g, L)
    w = weight.reshape(groups, out_channels // groups, k, 1)  # (G, O_g, K_g, 1)
    out = -(patches - w).abs().sum(3)  # (N, G, O_g, L)
    return out.reshape(batch, out_channels, ho, wo)


def adder_linear_standard(input: Tensor, weight: Tensor) -> Tensor:
    """``slac.functional.adder_linear`` with standard operators only: (*, K), (O, K) -> (*, O)."""
    return -(input.unsqueeze(-2) - weight).abs().sum(-1)


class ChannelAffine(nn.Module):
    """``y = scale[c] * x + shift[c]`` over the channel axis 1: an evaluation-mode BatchNorm, folded."""

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, input: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (input.dim() - 2)
        return input * self.scale.view(shape) + self.shift.view(shape)

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> ChannelAffine:
        if bn.running_mean is None:
            raise ConfigError("fold_batchnorm: a BatchNorm without running statistics cannot be folded")
        if bn.training:
            raise ConfigError(
                "fold_batchnorm: the BatchNorm is in training mode (it normalizes with batch statistics, "
                "which no scale and shift reproduce); call model.eval() first"
            )
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale + (bn.bias if bn.affine else 0)
        return cls(scale.detach().clone(), shift.detach().clone())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm registered right after an adder layer (in its parent) replaced, in place, by the
    per-channel scale and shift it computes in evaluation mode (``ChannelAffine``); returns ``model``."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"fold_batchnorm: folds an nn.Module, got {_type_name(model)}")
    for parent in model.modules():
        children = list(parent.named_children())
        for (_, previous), (name, child) in itertools.pairwise(children):
            if isinstance(previous, (Adder2d, AdderLinear)) and isinstance(
                child, nn.modules.batchnorm._BatchNorm
            ):
                setattr(parent, name, ChannelAffine.from_batchnorm(child))
    return model


def decompositions() -> dict[Any, Any]:
    """``torch.export`` decompositions of slac's operators into standard ones (for ``run_decompositions``)."""

    def adder2d(input, weight, stride, padding, dilation, groups, backend):
        return adder2d_standard(input, weight, stride, padding, dilation, groups)

    def adder_linear(input, weight, backend):
        return adder_linear_standard(input, weight)

    return {torch.ops.slac.adder2d.default: adder2d, torch.ops.slac.adder_linear.default: adder_linear}


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _example_args(model: nn.Module, example: Any) -> tuple[Any, ...]:
    """``example`` as the positional arguments ``torch.export`` takes, checked against ``model`` before
    tracing: a bad example otherwise fails inside torch._dynamo, in words about its internals."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"export: exports an nn.Module, got {_type_name(model)}")
    if isinstance(example, Tensor):
        args = (example,)
    elif isinstance(example, tuple) and example and isinstance(example[0], Tensor):
        args = example
    else:
        if isinstance(example, tuple):
            got = (
                f"a tuple whose first element is a {_type_name(example[0])}" if example else "an empty tuple"
            )
        else:
            got = f"a {_type_name(example)}"
        if isinstance(example, list):
            got += "; pass tuple(example)"
        elif type(example).__module__ == "numpy":
            got += "; pass torch.from_numpy(example)"
        raise ConfigError(f"export: the example must be a tensor or a tuple of tensors, got {got}")
    images = args[0]
    if images.dim() == 0 or images.shape[0] < 1:
        raise ConfigError(
            f"export: the example must be a batch of at least 1 image, got shape {tuple(images.shape)}"
        )
    tensors = [*model.parameters(), *model.buffers()]
    devices = {t.device for t in tensors}
    if len(devices) == 1 and images.device not in devices:
        (device,) = devices
        raise ConfigError(
            f"export: the example is on {images.device} and the model on {device}; "
            f"pass example.to('{device}')"
        )
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    if len(dtypes) == 1 and images.dtype not in dtypes:
        (dtype,) = dtypes
        raise ConfigError(
            f"export: the example is {images.dtype} and the model's parameters {dtype}; "
            f"pass example.to({dtype})"
        )
    return args


def export_program(model: nn.Module, example: Tensor | tuple[Tensor, ...], **kwargs: Any) -> Any:
    """``model`` in evaluation mode, BatchNorms after adder layers folded, as a ``torch.export`` program
    in which the adder operators are decomposed into standard ones (``decompositions()``); ``model``
    itself is left as it is. The batch axis is dynamic unless ``dynamic_shapes`` says otherwise;
    ``kwargs`` go to ``torch.export.export``. ``.module()`` of the result runs it in PyTorch.

    The example (a batch of at least one image, on the model's device and in its dtype) is checked, and
    the folded model run on it once, before tracing: a mistake is a ``ConfigError`` that names it."""
    args = _example_args(model, example)
    folded = fold_batchnorm(copy.deepcopy(model).eval())
    with torch.no_grad():
        try:
            folded(*args)
        except (RuntimeError, ValueError, TypeError) as error:
            if isinstance(error, SlacError | NotImplementedError):
                raise
            raise ConfigError(
                f"export: the model does not run on the example (shape {tuple(args[0].shape)}, "
                f"{args[0].dtype}): {error}"
            ) from error
    shapes = kwargs.setdefault(
        "dynamic_shapes", ({0: torch.export.Dim("batch")},) + (None,) * (len(args) - 1)
    )
    first = next(iter(shapes.values() if isinstance(shapes, dict) else shapes or ()), None)
    if isinstance(first, dict) and 0 in first and args[0].shape[0] == 1:
        # torch.export specializes an axis of size 1, even one declared dynamic: trace with the image twice
        args = (torch.cat([args[0], args[0]]), *args[1:])
    with torch.no_grad():
        return torch.export.export(folded, args, **kwargs).run_decompositions(decompositions())


def export_onnx(
    model: nn.Module, example: Tensor | tuple[Tensor, ...], path: str | Path, **kwargs: Any
) -> Path:
    """Write ``model`` as an ONNX file of standard operators (``export_program``, then
    ``torch.onnx.export``); ``kwargs`` go to ``torch.export.export`` (``dynamic_shapes``, ...).
    Returns the path."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"ONNX export needs onnx and onnxscript: pip install slac[export] ({error})"
        ) from None
    path = check_output_file(path, "export")
    torch.onnx.export(export_program(model, example, **kwargs), dynamo=True).save(str(path))
    return path
