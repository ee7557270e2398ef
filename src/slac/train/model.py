"""The model a run trains, and what the run records it as.

Two sources:

- the recipe's model from the zoo (``build_model``): ``model``, ``form``, ``head``, ``head_options`` and
  ``model_options`` of the recipe decide it;
- a model of one's own passed from Python (``fit(model, ...)``, ``Trainer(model=...)``). Any module that
  maps images to logits is trained with the cross-entropy (``UserModel``); with a ``head`` (a registered
  name or a ``slac.heads.Head``) the module maps images to the head's features and the head's loss trains
  both; a module with slac's contract (a zoo model: ``forward_features``, ``forward_head``, ``loss``) is
  trained as it is, with its own head.

A run records what ran, read from the model itself (``describe_user_model``): ``model: custom``; ``form``
``ann`` when the model has adder layers, ``bnn`` when it has binary ones, else ``cnn``; ``head`` the
registered name of the head that computes the logits (``Head.head_name``), or ``custom`` for the model's
own classifier. Recipe keys that cannot apply to a model of one's own (``model_options``, a ``form`` or
``head`` other than the model's, ``head_options`` beside a head object) are refused, not ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slac.errors import ConfigError, options_as_config_errors
from slac.heads import Head, create_head
from slac.heads.losses import HeadLoss
from slac.models import create_model, model_cfg
from slac.nn import AdderLayer, BinaryConv2d, BinaryLinear
from slac.train.config import CUSTOM, TrainConfig

__all__ = [
    "CUSTOM",
    "UserModel",
    "as_slac_model",
    "build_model",
    "describe_user_model",
    "has_slac_contract",
    "model_form",
]


def build_model(config: TrainConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The recipe's zoo model for images of ``image_shape`` (C, H, W) and ``num_classes`` classes."""
    cfg = model_cfg(config.model)
    options = dict(config.model_options)
    options.setdefault("in_chans", image_shape[0])
    options.setdefault("adder_backend", config.adder_backend)
    if cfg.fixed_input_size:
        options.setdefault("img_size", image_shape[1])
        if options["img_size"] != image_shape[1] or image_shape[1] != image_shape[2]:
            raise ConfigError(
                f"model_options.img_size: {config.model} flattens its last feature map, so it needs "
                f"img_size {image_shape[1]} for {config.dataset}'s {image_shape[1]}x{image_shape[2]} "
                f"images, got {options['img_size']}"
            )
    if options["in_chans"] != image_shape[0]:
        raise ConfigError(
            f"model_options.in_chans: {config.dataset} has {image_shape[0]} channels, "
            f"got {options['in_chans']}"
        )
    with options_as_config_errors("model_options/head_options"):
        return create_model(
            config.model,
            form=config.form,
            num_classes=num_classes,
            head=config.head,
            head_options=config.head_options,
            **options,
        )


class UserModel(nn.Module):
    """``module`` (images -> logits, or images -> features when ``head`` is given) in slac's model
    contract. Its state dict keys start with ``module.`` (and ``head.``)."""

    def __init__(self, module: nn.Module, head: Head | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(module).__name__}")
        if head is not None and not isinstance(head, Head):
            raise TypeError(f"head must be a slac.heads.Head (slac.create_head), got {type(head).__name__}")
        self.module = module
        self.head = head

    def forward_features(self, images: Tensor) -> Tensor:
        return self.module(images)

    def forward_head(self, features: Tensor, targets: Tensor | None = None) -> Tensor:
        return features if self.head is None else self.head(features, targets)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    def loss(self, features: Tensor, logits: Tensor, targets: Tensor) -> HeadLoss:
        if self.head is not None:
            return self.head.loss(features, logits, targets)
        if logits.dim() != 2:
            raise ValueError(
                f"the model must map images to logits of shape (N, classes), got {tuple(logits.shape)}; "
                "flatten its output, or give a slac head for its features"
            )
        return HeadLoss.combine({"classification": F.cross_entropy(logits, targets)}, {"classification": 1.0})


def has_slac_contract(model: nn.Module) -> bool:
    """Whether ``model`` has slac's model contract (a zoo model, a ``UserModel``)."""
    return all(callable(getattr(model, name, None)) for name in ("forward_features", "forward_head", "loss"))


def as_slac_model(model: nn.Module, head: Head | None = None) -> nn.Module:
    """``model`` itself when it has slac's contract, else ``UserModel(model, head)``."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be an nn.Module, got {type(model).__name__}")
    if has_slac_contract(model):
        if head is not None:
            raise ConfigError(
                f"head: the model ({type(model).__name__}) has a head of its own "
                f"({type(getattr(model, 'head', None)).__name__}); give a head only with a model that "
                "maps images to features"
            )
        return model
    return UserModel(model, head)


def model_form(model: nn.Module) -> str:
    """ "ann" when ``model`` has adder layers, "bnn" when it has binary layers, else "cnn"."""
    modules = list(model.modules())
    if any(isinstance(m, AdderLayer) for m in modules):
        return "ann"
    if any(isinstance(m, BinaryConv2d | BinaryLinear) for m in modules):
        return "bnn"
    return "cnn"


def _feature_width(module: nn.Module, images: Tensor) -> int:
    """The width d of ``module``'s output (N, d) on ``images`` (``preflight.probe``)."""
    from slac.train.preflight import probe

    return int(probe(module, images, "model").shape[1])


def describe_user_model(
    config: TrainConfig,
    model: nn.Module,
    head: str | Head | None,
    image_shape: tuple[int, int, int],
    num_classes: int,
    explicit: set[str],
) -> tuple[nn.Module, TrainConfig]:
    """A model of one's own in slac's contract (with ``head`` built on its features when it is a name),
    and ``config`` recording what it is. ``explicit``: the recipe keys the caller set (the others have their
    defaults); those that cannot apply to this model are refused."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be an nn.Module, got {type(model).__name__}")
    head_options: dict[str, Any] = {}
    by_name = isinstance(head, str)
    if by_name:
        head_options = dict(config.head_options)
        parameter = next(model.parameters(), None)  # the head goes where the model's weights are
        device, dtype = (
            (parameter.device, parameter.dtype) if parameter is not None else ("cpu", torch.float32)
        )
        width = _feature_width(model, torch.zeros(2, *image_shape, device=device, dtype=dtype))
        with options_as_config_errors("head_options"):
            head = create_head(head, width, num_classes, **head_options).to(device, dtype)
    elif head is not None and not isinstance(head, Head):
        raise ConfigError(
            f"head must be a registered head's name (slac.heads.list_heads()) or a slac.heads.Head, got "
            f"{type(head).__name__}"
        )
    slac_model = as_slac_model(model, head)
    form = model_form(slac_model)
    own_head = getattr(slac_model, "head", None)
    head_name = (getattr(own_head, "head_name", None) or CUSTOM) if own_head is not None else CUSTOM
    if "model_options" in explicit:
        raise ConfigError("model_options: they configure a zoo model; this run trains the model passed")
    if "model" in explicit and config.model != CUSTOM:
        raise ConfigError(
            f"model: the recipe names {config.model!r}, but the model passed from Python replaces it; "
            "leave model out of the recipe"
        )
    if "form" in explicit and config.form != form:
        raise ConfigError(
            f"form: the model passed is a{'n' if form == 'ann' else ''} {form} (it has "
            + {"ann": "adder layers", "bnn": "binary layers", "cnn": "neither adder nor binary layers"}[form]
            + f"), so form {config.form!r} cannot apply; leave form out, or convert the model "
            "(slac.convert_to_adder)"
        )
    if "head" in explicit and config.head != head_name:
        raise ConfigError(
            f"head: the recipe names {config.head!r}, but the logits come from "
            + (f"a {head_name!r} head" if own_head is not None else "the model's own classifier")
            + "; pass the head with the model (fit(model, ..., head='slac'))"
        )
    if "head_options" in explicit and not by_name:
        raise ConfigError(
            "head_options: they configure a head built by name (head='slac'); "
            + ("give them to slac.create_head for the head object passed" if head is not None
               else "this model computes its logits with its own classifier")
        )  # fmt: skip
    if config.adder_backend != "auto":
        layers = [m for m in slac_model.modules() if isinstance(m, AdderLayer)]
        if not layers:
            raise ConfigError(
                f"adder_backend: {config.adder_backend!r} chooses the backend of adder layers, and the "
                "model passed has none"
            )
        for layer in layers:  # the recipe's backend for every adder layer, as build_model gives it
            layer.backend = config.adder_backend
    recorded = dataclasses.replace(
        config, model=CUSTOM, form=form, head=head_name, head_options=head_options, model_options={}
    )
    return slac_model, recorded
