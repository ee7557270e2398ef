"""Turning an existing CNN into an AdderNet: ``convert_to_adder``, in the style of
``nn.SyncBatchNorm.convert_sync_batchnorm``.

    model = torchvision.models.resnet18(num_classes=10)
    model = slac.convert_to_adder(model)      # every Conv2d but the first becomes an Adder2d

AdderNet's layout (Chen et al. 2020, and every network of the SLAC paper) keeps the first convolution and
the classifier full precision, and puts a BatchNorm after every adder layer: adder outputs are large
negative numbers (-sum |x - w|) whose scale only a normalization brings back. The converted layers have
the geometry, dtype and device of the layers they replace, and fresh weights drawn N(0, 1) as AdderNet's
(a convolution's weights mean nothing to an L1 distance); train them with ``scale_adder_grads``.
"""

from __future__ import annotations

import warnings

from torch import nn

from slac.errors import SlacError
from slac.nn.adder import Adder2d, AdderLinear

__all__ = ["UnconvertibleLayerError", "convert_to_adder"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_OTHER_CONVS = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class UnconvertibleLayerError(SlacError, ValueError):
    """A layer with no adder form: a transposed or non-2-D convolution, a padding mode other than zeros."""


def _unconvertible(module: nn.Module) -> str | None:
    if isinstance(module, _OTHER_CONVS):
        return f"{type(module).__name__} has no adder form (only Conv2d and Linear do)"
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode {module.padding_mode!r} (adder layers pad with zeros only)"
    return None


def convert_to_adder(
    module: nn.Module,
    *,
    keep_first: bool = True,
    keep_classifier: bool = True,
    linear: bool = False,
    unsupported: str = "error",
    backend: str = "auto",
    warn_unnormalized: bool = True,
) -> nn.Module:
    """Replace the ``nn.Conv2d`` layers of ``module`` (and with ``linear=True`` its ``nn.Linear`` layers)
    by ``Adder2d`` (``AdderLinear``) layers of the same geometry, dtype and device; returns the module.

    - ``keep_first``: the first Conv2d (in registration order) stays a convolution.
    - ``keep_classifier``: the classifier stays full precision: the last ``nn.Linear``, or, in a model with
      no Linear layer, the last Conv2d (a 1x1 convolution head, as in the official AdderNet ResNets).
    - ``unsupported``: what to do with convolutions that have no adder form (transposed, 1-D and 3-D
      convolutions, reflect/replicate/circular padding): ``"error"`` (an ``UnconvertibleLayerError`` naming
      each of them) or ``"keep"`` (leave them as they are).
    - ``warn_unnormalized``: warn, naming them, about adder layers that are not followed by a normalization
      layer (the next module registered beside them in their parent); ANNs do not train without one.

    Layers are replaced in their parents, so ``module`` itself is returned (or its replacement, when it is a
    single Conv2d/Linear). Weights are drawn anew N(0, 1); biases are kept as parameters of the new layer
    (zeroed) when the old layer had one. A layer registered at several places is replaced once.
    """
    if unsupported not in ("error", "keep"):
        raise ValueError(f"unsupported must be 'error' or 'keep', got {unsupported!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert_to_adder takes an nn.Module, got {type(module).__name__}")
    named = list(module.named_modules(remove_duplicate=True))
    bad = [(name or "<root>", why) for name, m in named if (why := _unconvertible(m)) is not None]
    if bad and unsupported == "error":
        listed = "; ".join(f"{name}: {why}" for name, why in bad)
        raise UnconvertibleLayerError(
            f"convert_to_adder: {listed}. Pass unsupported='keep' to leave them as they are"
        )
    convs = [m for _, m in named if isinstance(m, nn.Conv2d) and _unconvertible(m) is None]
    linears = [m for _, m in named if type(m) is nn.Linear]
    keep: set[int] = set()
    if keep_first and convs:
        keep.add(id(convs[0]))
    if keep_classifier:
        classifier = linears[-1] if linears else (convs[-1] if convs else None)
        if classifier is not None:
            keep.add(id(classifier))

    replaced: dict[int, nn.Module] = {}

    def replacement(child: nn.Module) -> nn.Module | None:
        if id(child) in keep or _unconvertible(child) is not None:
            return None
        if id(child) in replaced:
            return replaced[id(child)]
        if isinstance(child, nn.Conv2d):
            new: nn.Module = Adder2d(
                child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                child.dilation, child.groups, bias=child.bias is not None, backend=backend,
                device=child.weight.device, dtype=child.weight.dtype,
            )  # fmt: skip
        elif linear and type(child) is nn.Linear:
            new = AdderLinear(
                child.in_features, child.out_features, bias=child.bias is not None, backend=backend,
                device=child.weight.device, dtype=child.weight.dtype,
            )  # fmt: skip
        else:
            return None
        new.train(child.training)
        replaced[id(child)] = new
        return new

    unnormalized: list[str] = []

    def convert(parent: nn.Module, prefix: str) -> None:
        children = list(parent.named_children())
        for index, (name, child) in enumerate(children):
            new = replacement(child)
            if new is None:
                convert(child, f"{prefix}{name}.")
                continue
            setattr(parent, name, new)
            following = children[index + 1][1] if index + 1 < len(children) else None
            if isinstance(new, Adder2d) and not isinstance(following, _NORMS):
                unnormalized.append(f"{prefix}{name}")

    root = replacement(module)
    if root is not None:
        module = root
        unnormalized.append("<root>")
    else:
        convert(module, "")
    if warn_unnormalized and unnormalized:
        warnings.warn(
            f"convert_to_adder: {len(unnormalized)} adder layer(s) with no normalization layer right after "
            f"them: {', '.join(unnormalized[:8])}{' ...' if len(unnormalized) > 8 else ''}. Adder outputs "
            "(-sum |x - w|) are large negative numbers; an AdderNet does not train without a BatchNorm after "
            "each adder layer (pass warn_unnormalized=False if the model normalizes them otherwise)",
            stacklevel=2,
        )
    return module
