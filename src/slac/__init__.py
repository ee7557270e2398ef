"""slac: Adder neural networks with Skew Laplace mixture classifiers.

Implements "Handling Long-tailed Feature Distribution in AdderNets" (Dong et al., NeurIPS 2021):
adder layers (negative L1 distance instead of a dot product) with fast CPU/GPU kernels, the Skew
Laplace mixture head with angle-based constraint (SLAC) and its baselines, the paper's models and
training recipes.

    import slac
    model = slac.create_model("resnet20", form="ann", head="slac", num_classes=10)
    head = slac.create_head("slac", in_features=64, num_classes=10)
    adder_net = slac.convert_to_adder(my_cnn)            # Conv2d -> Adder2d, AdderNet layout
    slac.nn.Adder2d, slac.nn.scale_adder_grads, slac.functional.adder2d, slac.errors.SlacError

The names are imported on first use, so ``import slac`` itself stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "convert_to_adder",
    "create_head",
    "create_model",
    "data",
    "errors",
    "export",
    "functional",
    "heads",
    "list_heads",
    "list_models",
    "models",
    "nn",
    "train",
]

_ATTRIBUTES = {
    "convert_to_adder": "slac.nn",
    "create_head": "slac.heads",
    "list_heads": "slac.heads",
    "create_model": "slac.models",
    "list_models": "slac.models",
}
_MODULES = {"data", "errors", "export", "functional", "heads", "models", "nn", "train"}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"slac.{name}")
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'slac' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
