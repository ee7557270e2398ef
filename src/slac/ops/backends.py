"""The adder backends: which implementations exist, where they run, and how ``backend="auto"`` chooses.

A backend is a module with six functions, the forward and both gradients of the convolution and of the
linear form (see ``reference.py`` for their contracts). ``auto`` resolves to the fastest backend that is
available for the tensors' device; ``resolve_backend`` and ``slac backends`` show the choice.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType

import torch

from slac.errors import ConfigError, DeviceError, MissingDependencyError

__all__ = [
    "BACKENDS",
    "AdderBackend",
    "available_backends",
    "check_backend",
    "get_backend",
    "resolve_backend",
]


_AVAILABLE: dict[str, bool] = {}
_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True)
class AdderBackend:
    name: str
    module: str  # module that implements the six functions
    device_types: tuple[str, ...]  # device types it accepts
    requires: tuple[str, ...] = ()  # importable packages it needs
    native_half: bool = False  # reads float16/bfloat16 itself (else they are cast to float32 first)
    interpreted: tuple[str, ...] = ()  # device types it reaches only through an interpreter (slow)
    description: str = ""

    def is_available(self) -> bool:
        # looked up once: resolve_backend runs inside torch.compile'd code, which cannot trace imports
        if self.name not in _AVAILABLE:
            _AVAILABLE[self.name] = all(importlib.util.find_spec(pkg) is not None for pkg in self.requires)
        return _AVAILABLE[self.name]

    @functools.cached_property
    def impl(self) -> ModuleType:
        return importlib.import_module(self.module)


BACKENDS: dict[str, AdderBackend] = {
    b.name: b
    for b in (
        AdderBackend(
            "reference",
            "slac.ops.reference",
            ("cpu", "cuda", "meta"),
            description="plain PyTorch, official formulation in bounded chunks (the oracle)",
        ),
        AdderBackend(
            "cpu",
            "slac.ops.cpu",
            ("cpu",),
            requires=("numba",),
            description="numba register-blocked micro-kernels (min and clamp forms), multithreaded",
        ),
        AdderBackend(
            "triton",
            "slac.ops.triton_kernels",
            # CPU tensors only through Triton's interpreter (TRITON_INTERPRET=1): slow, for tests
            ("cuda", "cpu") if _TRITON_INTERPRET else ("cuda",),
            requires=("triton",),
            interpreted=("cpu",) if _TRITON_INTERPRET else (),
            native_half=True,
            description="Triton implicit-GEMM kernels (float32 accumulation)",
        ),
    )
}

for _backend in BACKENDS.values():
    _backend.is_available()

# Order of preference for backend="auto" per device type.
_AUTO_ORDER: dict[str, tuple[str, ...]] = {"cpu": ("cpu", "reference"), "cuda": ("triton", "reference")}


def available_backends(device_type: str | None = None, interpreted: bool = True) -> list[str]:
    """Names of the backends that are installed (and accept ``device_type``, when given).

    ``interpreted=False`` leaves out a backend that reaches ``device_type`` only through an interpreter
    (Triton's kernels on CPU tensors under TRITON_INTERPRET=1).
    """
    return [
        name
        for name, b in BACKENDS.items()
        if b.is_available()
        and (device_type is None or device_type in b.device_types)
        and (interpreted or device_type not in b.interpreted)
    ]


def check_backend(backend: str) -> str:
    """``backend`` when it is "auto" or a known backend's name; a ``ConfigError`` listing them otherwise."""
    if backend != "auto" and backend not in BACKENDS:
        raise ConfigError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    return backend


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The concrete backend that ``backend`` means for tensors on ``device``; raises if it cannot run."""
    device_type = torch.device(device).type
    if backend == "auto":
        for name in _AUTO_ORDER.get(device_type, ("reference",)):
            if name in BACKENDS and BACKENDS[name].is_available():
                return name
        raise DeviceError(f"no adder backend is available for device type {device_type!r}")
    spec = BACKENDS[check_backend(backend)]
    if device_type not in spec.device_types:
        raise ConfigError(
            f"adder backend {backend!r} runs on {list(spec.device_types)} tensors, "
            f"got {device_type} tensors; use backend='auto' or one of {available_backends(device_type)}"
        )
    if not spec.is_available():
        raise MissingDependencyError(
            f"adder backend {backend!r} needs {list(spec.requires)}, which is not installed "
            f"(pip install {' '.join(spec.requires)})"
        )
    return backend


def get_backend(name: str) -> ModuleType:
    """The implementing module of a concrete backend name (no 'auto')."""
    return BACKENDS[name].impl
