"""Turning an existing CNN into an AdderNet: ``convert_to_adder``, in the style of
``nn.SyncBatchNorm.convert_sync_batchnorm``.

    model = torchvision.models.resnet18(num_classes=10)
    model = slac.convert_to_adder(model)      # every Conv2d but the first becomes an Adder2d

AdderNet's layout (Chen et al. 2020, and every network of the SLAC paper) keeps the first convolution and
the classifier full precision, and puts a BatchNorm after every adder layer: adder outputs are large
negative numbers (-sum |x - w|) whose scale only a normalization brings back. The converted layers have
the geometry, dtype, device, memory format and ``requires_grad`` of the layers they replace, and fresh
weights drawn N(0, 1) as AdderNet's (a convolution's weights mean nothing to an L1 distance); train them
with ``scale_adder_grads``.

Rather than return a model that computes something else, the conversion refuses what it cannot rewrite:
TorchScript modules (their compiled code calls the old layers), a DistributedDataParallel wrapper (it
synchronizes the old parameters), lazy layers not yet initialized (their shape is unknown), and, unless told
to keep them, layers whose computation an adder layer would drop.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize

from slac.errors import ConfigError, SlacError
from slac.nn.adder import Adder2d, AdderLayer, AdderLinear
from slac.ops.backends import BACKENDS

__all__ = ["UnconvertibleLayerError", "convert_to_adder"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_OTHER_CONVS = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Not descended into: a ScriptModule's code cannot be changed, and MultiheadAttention reads its out_proj's
# weight directly instead of calling it, so an AdderLinear there would be used as a matrix.
_OPAQUE = (torch.jit.ScriptModule, nn.MultiheadAttention)
# Modules whose eval-mode fast path (torch._transformer_encoder_layer_fwd) reads their Linear children's
# weights as matrices: their Linears have no faithful adder form.
_FAST_PATH = (nn.TransformerEncoderLayer,)


class UnconvertibleLayerError(SlacError, ValueError):
    """What ``convert_to_adder`` cannot convert faithfully: a layer with no adder form (a transposed or
    non-2-D convolution, a padding mode other than zeros, a forward, parametrization, hook or tied weight
    that the adder layer would drop), a lazy layer not yet initialized, a TorchScript module, a
    DistributedDataParallel wrapper."""


_Position = tuple[nn.Module, str, str, nn.Module]  # (parent, attribute name, dotted path, module)


def _positions(parent: nn.Module, prefix: str = "") -> Iterator[_Position]:
    """Every place a submodule is registered, in registration order, a module registered at several places
    once per place (``named_modules`` and ``named_children`` list it once)."""
    for name, child in parent._modules.items():
        if child is None:
            continue
        yield parent, name, f"{prefix}{name}", child
        if not isinstance(child, _OPAQUE):
            yield from _positions(child, f"{prefix}{name}.")


def _holds_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _refusal(path: str, module: nn.Module) -> str | None:
    """Why the model holding ``module`` at ``path`` cannot be converted at all (whatever ``unsupported``)."""
    if isinstance(module, torch.jit.ScriptModule) and (path == "<root>" or _holds_parameters(module)):
        return (
            f"{path} is a TorchScript module ({type(module).__name__}, from torch.jit.script or "
            "torch.jit.trace), whose compiled code cannot be rewritten to call adder layers: convert the "
            "eager module, then script or trace the result"
        )
    if isinstance(module, nn.parallel.DistributedDataParallel):
        return (
            f"{path} is a DistributedDataParallel wrapper, which synchronizes the gradients of the "
            "parameters it was given: convert the module before wrapping it"
        )
    return None


def _dropped(layer: nn.Module, owners: dict[int, list[str]], converting: set[str]) -> str | None:
    """Why the adder form of ``layer`` (a Conv2d or Linear to be converted) would compute something else
    than the model asks for, or None. ``owners``: each parameter's places ("path.name"); ``converting``: the
    paths of the layers being converted."""
    base = nn.Conv2d if isinstance(layer, nn.Conv2d) else nn.Linear
    kind = type(layer)
    if base is nn.Conv2d and layer.padding_mode != "zeros":
        return f"padding_mode {layer.padding_mode!r} (adder layers pad with zeros only)"
    if kind.forward is not base.forward or (
        base is nn.Conv2d and kind._conv_forward is not nn.Conv2d._conv_forward
    ):
        name = kind.__name__ if kind.__name__ != base.__name__ else f"{kind.__module__}.{kind.__qualname__}"
        return f"{name} computes its own forward, which an adder layer would drop"
    if parametrize.is_parametrized(layer):
        listed = ", ".join(
            f"{name} ({', '.join(type(p).__name__ for p in chain)})"
            for name, chain in layer.parametrizations.items()
        )
        return (
            f"parametrized {listed}, which an adder layer would drop; remove the parametrization with "
            "torch.nn.utils.parametrize.remove_parametrizations first"
        )
    hooks = [
        hook
        for table in ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
        for hook in getattr(layer, table, {}).values()
    ]
    if hooks:
        names = ", ".join(sorted({getattr(h, "__name__", type(h).__name__) for h in hooks}))
        return f"forward or backward hooks ({names}), which an adder layer would not carry; remove them first"
    for name, parameter in layer.named_parameters(recurse=False):
        others = [path for path in owners[id(parameter)] if path.rpartition(".")[0] not in converting]
        if others:
            return f"its {name} is tied to {others[0]}, which stays as it is; an adder layer would untie them"
    return None


def _unsupported(
    positions: list[_Position], everywhere: list[tuple[str, nn.Module]], targets: dict[int, nn.Module]
) -> dict[int, str]:
    """The modules with no faithful adder form, by id, with the reason: the other convolutions, and the
    ``targets`` (the layers to be converted) that ``_dropped`` or a fast-path parent rules out."""
    bad = {id(m): f"{type(m).__name__} has no adder form (only Conv2d and Linear do)"
           for _, m in everywhere if isinstance(m, _OTHER_CONVS)}  # fmt: skip
    for parent, _, _, child in positions:
        if isinstance(parent, _FAST_PATH) and id(child) in targets:
            bad[id(child)] = (
                f"{type(parent).__name__}'s inference fast path multiplies by its weight instead of calling "
                "it; an adder layer there would be used as a matrix"
            )
    owners: dict[int, list[str]] = {}  # every place a parameter is registered: "layer path.name"
    for path, m in everywhere:
        for name, parameter in m.named_parameters(recurse=False):
            owners.setdefault(id(parameter), []).append(f"{path}.{name}")
    while True:  # a layer left as it is keeps the layers tied to it as they are too
        converting = {path for path, m in everywhere if id(m) in targets and id(m) not in bad}
        dropped = {
            i: why for i, m in targets.items() if i not in bad and (why := _dropped(m, owners, converting))
        }
        if not dropped:
            return bad
        bad.update(dropped)


def _adder_form(layer: nn.Module, backend: str, new_parameters: dict[int, nn.Parameter]) -> AdderLayer:
    """An adder layer with ``layer``'s geometry, dtype, device, memory format, requires_grad and mode; a
    parameter ``layer`` shares with a layer converted before shares that layer's new parameter."""
    weight = layer.weight
    if isinstance(layer, nn.Conv2d):
        new: AdderLayer = Adder2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
            layer.dilation, layer.groups, bias=layer.bias is not None, backend=backend,
            device=weight.device, dtype=weight.dtype,
        )  # fmt: skip
    else:
        new = AdderLinear(
            layer.in_features, layer.out_features, bias=layer.bias is not None, backend=backend,
            device=weight.device, dtype=weight.dtype,
        )  # fmt: skip
    for name in ("weight", "bias"):
        old = layer._parameters.get(name)
        if old is None:
            continue
        if id(old) not in new_parameters:
            fresh = getattr(new, name).detach()
            if (
                old.dim() == 4
                and not old.is_contiguous()
                and old.is_contiguous(memory_format=torch.channels_last)
            ):
                fresh = fresh.contiguous(memory_format=torch.channels_last)
            new_parameters[id(old)] = nn.Parameter(fresh, requires_grad=old.requires_grad)
        setattr(new, name, new_parameters[id(old)])
    new.train(layer.training)
    return new


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

    - ``keep_first``: the first Conv2d (in registration order; an Adder2d there counts as it) stays a
      convolution.
    - ``keep_classifier``: the classifier stays full precision: the last ``nn.Linear`` (a subclass such as
      ``nn.LazyLinear`` included) or ``AdderLinear``, or, in a model with neither, the last Conv2d (a 1x1
      convolution head, as in the official AdderNet ResNets).
    - ``unsupported``: what to do with the layers that have no faithful adder form: transposed, 1-D and 3-D
      convolutions, reflect/replicate/circular padding, and Conv2d/Linear layers that would be converted
      but whose computation the adder layer would drop: a subclass that overrides ``forward`` (a
      ``BinaryConv2d``, timm's ``Conv2dSame``, a QAT convolution; subclasses that keep nn.Conv2d's
      computation convert), a parametrized weight (``parametrizations.weight_norm``), forward or backward
      hooks (the old ``weight_norm`` and ``spectral_norm``, pruning), a weight tied to a layer that is not
      converted, the Linears of an ``nn.TransformerEncoderLayer`` (its eval fast path multiplies by their
      weights). ``"error"`` (an ``UnconvertibleLayerError`` naming each of them) or ``"keep"`` (leave them
      as they are). The first convolution and the classifier stay as they are either way.
    - ``warn_unnormalized``: warn, naming them, about adder layers that are not followed by a normalization
      layer (the next module registered beside them in their parent); ANNs do not train without one.

    Always refused with an ``UnconvertibleLayerError``, whatever ``unsupported``: a TorchScript module
    (``torch.jit.script``/``trace``; convert the eager module, then script it), nested ones included unless
    they hold no parameters (a scripted activation is left as it is); a ``DistributedDataParallel``
    wrapper (convert, then wrap); a lazy layer (``nn.LazyConv2d``, ``nn.LazyLinear``) to be converted whose
    parameters are not initialized yet (run one forward pass first). ``nn.DataParallel`` converts.

    Layers are replaced in their parents, so ``module`` itself is returned (or its replacement, when it is a
    single Conv2d/Linear that neither ``keep_first`` nor ``keep_classifier`` keeps). A layer registered at
    several places is one layer: it is kept or converted everywhere, into one adder layer; parameters shared
    between converted layers are shared by the new layers. Weights are drawn anew N(0, 1); biases are kept
    as parameters of the new layer (zeroed) when the old layer had one; each new parameter has the
    ``requires_grad`` (frozen stays frozen) and memory format of the old one; build the optimizer after
    converting. Converting a converted model again with the same arguments changes nothing; a call that
    converts nothing in a model with no adder layer warns, saying why. An invalid argument value raises a
    ``ConfigError`` (a ValueError).
    """
    for name, value in (
        ("keep_first", keep_first), ("keep_classifier", keep_classifier), ("linear", linear),
        ("warn_unnormalized", warn_unnormalized),
    ):  # fmt: skip
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    if unsupported not in ("error", "keep"):
        raise ConfigError(f"unsupported must be 'error' or 'keep', got {unsupported!r}")
    if backend != "auto" and backend not in BACKENDS:
        raise ConfigError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert_to_adder takes an nn.Module, got {type(module).__name__}")
    if (why := _refusal("<root>", module)) is not None:
        raise UnconvertibleLayerError(f"convert_to_adder: {why}")
    positions: list[_Position] = list(_positions(module))
    if refused := [why for _, _, path, m in positions if (why := _refusal(path, m)) is not None]:
        raise UnconvertibleLayerError(f"convert_to_adder: {'; '.join(refused)}")

    everywhere = [("<root>", module)] + [(path, m) for _, _, path, m in positions]
    paths: dict[int, str] = {}  # each module's first path, in registration order
    for path, m in everywhere:
        paths.setdefault(id(m), path)
    layers2d = [m for _, m in everywhere if isinstance(m, (nn.Conv2d, Adder2d))]
    classifiers = [m for _, m in everywhere if isinstance(m, (nn.Linear, AdderLinear))] or layers2d
    keep: dict[int, nn.Module] = {}
    if keep_first and layers2d:
        keep[id(layers2d[0])] = layers2d[0]
    if keep_classifier and classifiers:
        keep[id(classifiers[-1])] = classifiers[-1]
    candidates = {
        id(m): m for _, m in everywhere if isinstance(m, nn.Conv2d) or (linear and isinstance(m, nn.Linear))
    }
    targets = {i: m for i, m in candidates.items() if i not in keep}
    if lazy := [
        paths[i]
        for i, m in targets.items()
        if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()
    ]:
        raise UnconvertibleLayerError(
            f"convert_to_adder: {', '.join(lazy)}: lazy layer(s) with uninitialized parameters, whose shape "
            "is not known yet: run one forward pass of the model on an example batch, then convert it"
        )
    bad = _unsupported(positions, everywhere, targets)
    if bad and unsupported == "error":
        order = {i: index for index, i in enumerate(paths)}
        listed = "; ".join(f"{paths[i]}: {bad[i]}" for i in sorted(bad, key=order.__getitem__))
        raise UnconvertibleLayerError(
            f"convert_to_adder: {listed}. Pass unsupported='keep' to leave them as they are"
        )
    new_parameters: dict[int, nn.Parameter] = {}
    replaced = {i: _adder_form(m, backend, new_parameters) for i, m in targets.items() if i not in bad}

    unnormalized: dict[tuple[int, str], str] = {}
    if id(module) in replaced:
        module = replaced[id(module)]
        unnormalized[(0, "")] = "<root>"
    for parent, name, path, child in positions:
        if id(child) not in replaced:
            continue
        setattr(parent, name, replaced[id(child)])
        siblings = list(parent._modules.values())
        index = list(parent._modules).index(name)
        following = siblings[index + 1] if index + 1 < len(siblings) else None
        if isinstance(replaced[id(child)], Adder2d) and not isinstance(following, _NORMS):
            unnormalized.setdefault((id(parent), name), path)
    if warn_unnormalized and unnormalized:
        named = list(unnormalized.values())
        warnings.warn(
            f"convert_to_adder: {len(named)} adder layer(s) with no normalization layer right after "
            f"them: {', '.join(named[:8])}{' ...' if len(named) > 8 else ''}. Adder outputs "
            "(-sum |x - w|) are large negative numbers; an AdderNet does not train without a BatchNorm after "
            "each adder layer (pass warn_unnormalized=False if the model normalizes them otherwise)",
            stacklevel=2,
        )
    if not replaced and not any(isinstance(m, AdderLayer) for m in module.modules()):
        why = _why_nothing(everywhere, list(candidates), keep, paths, linear)
        warnings.warn(f"convert_to_adder: no layer was converted: {why}", stacklevel=2)
    return module


def _why_nothing(
    everywhere: list[tuple[str, nn.Module]],
    candidates: list[int],
    keep: dict[int, nn.Module],
    paths: dict[int, str],
    linear: bool,
) -> str:
    """Why a call converted nothing, for its warning; ``candidates``: the Conv2d (and Linear) layers."""
    if not candidates:
        if not linear and any(isinstance(m, nn.Linear) for _, m in everywhere):
            return "the model has no nn.Conv2d layer (linear=True converts its nn.Linear layers)"
        return f"the model has no nn.Conv2d{' or nn.Linear' if linear else ''} layer"
    kept = [paths[i] for i in candidates if i in keep]
    left = [paths[i] for i in candidates if i not in keep]
    reasons = []
    if kept:
        reasons.append(
            "AdderNet's layout keeps the first convolution and the classifier full precision "
            f"({', '.join(kept)}; keep_first=False and keep_classifier=False convert them)"
        )
    if left:
        reasons.append(f"unsupported='keep' left {', '.join(left)} as they are")
    return "; ".join(reasons)
