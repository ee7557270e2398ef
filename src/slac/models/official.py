"""Checkpoints of the official AdderNet code (huawei-noah/AdderNet) in slac's models.

    model = load_official_addernet("ResNet20-AdderNet.pth", model="resnet20")   # CIFAR-10, "91.8%"
    model = load_official_addernet("ResNet50-AdderNet.pth", model="resnet50")   # ImageNet, "74.9%"
    slac eval --official ResNet20-AdderNet.pth --model resnet20 --data_root ~/data/cifar-10

The official networks and slac's ANN forms have the same layers in the same places (verified against the
official code: outputs, both gradients and the structure of ResNet-20 agree; docs/DESIGN.md, "The official
AdderNet code"); only the names differ, so a state dict maps one-to-one:

    official                                  slac (form "ann", head "linear", logit_norm)
    module.<key>                              <key>            (test.py saves through DataParallel)
    <layer>.adder     (O, C, k, k)            <layer>.weight   (every adder layer)
    fc.weight         (K, F, 1, 1)            head.linear.weight (K, F): the classifier is a 1x1 conv
    fc.bias           (K,)                    head.linear.bias (ResNet-50 only; ResNet-20's fc has none)
    bn2.*                                     logit_norm.*     (the BatchNorm of the logits)

The official evaluation normalizes CIFAR-10 with mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994,
0.2010) (its test.py), not the per-channel standard deviation slac's CIFAR-10 loader uses; ImageNet with
the usual torchvision statistics. ``OFFICIAL_NORMALIZATION`` holds them for ``slac eval --official``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slac.errors import CheckpointError, ConfigError

__all__ = [
    "OFFICIAL_MODELS",
    "OFFICIAL_NORMALIZATION",
    "load_official_addernet",
    "official_to_slac",
    "to_official_state_dict",
]

# slac model: the official classifier's bias, the dataset its released checkpoint was trained on, and the
# top-1 the official README gives for that checkpoint
OFFICIAL_MODELS: dict[str, dict[str, Any]] = {
    "resnet20": {"head_bias": False, "dataset": "cifar10", "published_top1": 91.8},
    "resnet50": {"head_bias": True, "dataset": "imagenet", "published_top1": 74.9},
}
OFFICIAL_NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _state_dict_of(source: str | Path | Mapping[str, Any], map_location: Any) -> dict[str, Tensor]:
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        try:
            source = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # a truncated file, or not a torch checkpoint at all
            raise CheckpointError(f"{path}: cannot read it as a torch checkpoint ({error})") from None
    if isinstance(source, Mapping) and "state_dict" in source and isinstance(source["state_dict"], Mapping):
        source = source["state_dict"]
    if not isinstance(source, Mapping) or not all(isinstance(v, Tensor) for v in source.values()):
        raise CheckpointError(
            "an official AdderNet checkpoint is a state dict: a mapping of names to tensors"
        )
    return dict(source)


def official_to_slac(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The keys and shapes of an official AdderNet state dict renamed to slac's (table above)."""
    converted = {}
    for key, value in state_dict.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name.endswith(".adder"):
            name = name[: -len(".adder")] + ".weight"
        elif name == "fc.weight":
            name, value = "head.linear.weight", value.reshape(value.shape[0], -1)
        elif name == "fc.bias":
            name = "head.linear.bias"
        elif re.fullmatch(r"bn2\.(weight|bias|running_mean|running_var|num_batches_tracked)", name):
            name = "logit_norm" + name[len("bn2") :]
        converted[name] = value
    return converted


def to_official_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of a slac ANN with the official classifier (``load_official_addernet``'s model) in the
    official layout, which the official resnet20.py/resnet50.py load: the inverse of ``official_to_slac``."""
    from slac.nn import AdderLayer

    adders = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, AdderLayer)}
    official = {}
    for key, value in model.state_dict().items():
        if key in adders:
            key = key[: -len("weight")] + "adder"
        elif key == "head.linear.weight":
            key, value = "fc.weight", value[:, :, None, None]
        elif key == "head.linear.bias":
            key = "fc.bias"
        elif key.startswith("logit_norm."):
            key = "bn2." + key[len("logit_norm.") :]
        official[key] = value
    return official


def load_official_addernet(
    source: str | Path | Mapping[str, Any],
    model: str = "resnet20",
    *,
    map_location: Any = "cpu",
    **model_options: Any,
) -> nn.Module:
    """slac's ``model`` in ANN form with the official classifier (a linear head, bias as the official one,
    then the logits' BatchNorm), holding the weights of the official AdderNet checkpoint ``source`` (a file
    written by the official code, with or without DataParallel's ``module.`` prefix, or its state dict).

    The number of classes is read from the checkpoint. Raises ``CheckpointError`` naming every missing or
    unexpected key and every shape that differs. ``model_options`` go to ``slac.models.create_model``
    (``adder_backend``, for instance).
    """
    from slac.models import create_model

    if model not in OFFICIAL_MODELS:
        raise ConfigError(
            f"model: the official AdderNet code has {', '.join(OFFICIAL_MODELS)}, not {model!r}"
        )
    state = official_to_slac(_state_dict_of(source, map_location))
    if "head.linear.weight" not in state:
        raise CheckpointError("not an official AdderNet checkpoint: it has no classifier 'fc.weight'")
    num_classes = state["head.linear.weight"].shape[0]
    net = create_model(
        model,
        form="ann",
        num_classes=num_classes,
        head="linear",
        head_options={"bias": OFFICIAL_MODELS[model]["head_bias"]},
        logit_norm=True,
        **model_options,
    )
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)}, model {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes)):
            if items:
                parts.append(
                    f"{title} ({len(items)}): {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                )
        raise CheckpointError(
            f"the checkpoint does not fit slac's {model} ANN ({num_classes} classes), named in slac's terms; "
            + "; ".join(parts)
        )
    net.load_state_dict(state)
    return net
