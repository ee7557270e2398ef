"""The model registry: ``register_model``, ``create_model``, ``list_models``, ``model_cfg`` (timm style)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from slac.errors import ConfigError

__all__ = ["ModelCfg", "create_model", "list_models", "model_cfg", "register_model"]


@dataclass(frozen=True)
class ModelCfg:
    """What a registered model expects by default.

    input_size: (C, H, W) of the dataset it was designed for; num_classes: its default class count;
    dataset: that dataset's name (a key of ``slac.analysis.DATASETS``); fixed_input_size: the model
    flattens its last feature map (LeNet++, VGG-small), so its ``img_size`` argument must match the input.
    """

    input_size: tuple[int, int, int]
    num_classes: int
    dataset: str
    fixed_input_size: bool = False


_MODELS: dict[str, Callable[..., nn.Module]] = {}
_CFGS: dict[str, ModelCfg] = {}


def register_model(
    *, input_size: tuple[int, int, int], num_classes: int, dataset: str, fixed_input_size: bool = False
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a variant function ``fn(**kwargs) -> model`` under its own name."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        _MODELS[name] = fn
        _CFGS[name] = ModelCfg(tuple(input_size), num_classes, dataset, fixed_input_size)
        return fn

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern``, sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatchcase(name, pattern))


def _lookup(name: str) -> str:
    if not isinstance(name, str) or name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return name


def model_cfg(name: str) -> ModelCfg:
    """The default input size, class count and dataset of the registered model ``name``."""
    return _CFGS[_lookup(name)]


def create_model(
    name: str,
    *,
    form: str = "ann",
    num_classes: int | None = None,
    head: str = "linear",
    head_options: dict | None = None,
    **kwargs,
) -> nn.Module:
    """Build the registered model ``name`` (see ``list_models()``).

    Args:
        name: "lenet", "vgg_small", "resnet20", "resnet32", "resnet18", "resnet50", "resnet50_v1".
        form: "cnn" (convolutions), "ann" (adder layers), or "bnn" (binary weights and activations).
        num_classes: classes of the head; None takes the model's default (``model_cfg(name)``).
        head: a name of ``slac.heads.list_heads()`` ("linear", "lsoftmax", "lgm", "mom", "sl", "slac").
        head_options: keyword arguments of the head.
        **kwargs: architecture overrides of the model's class (e.g. ``shortcut="identity"``,
            ``logit_norm=False``, ``feature_dim=2``, ``img_size=8``, ``adder_backend="reference"``).
    """
    fn = _MODELS[_lookup(name)]
    if num_classes is None:
        num_classes = _CFGS[name].num_classes
    return fn(form=form, num_classes=num_classes, head=head, head_options=head_options, **kwargs)
