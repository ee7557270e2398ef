"""The adder operator: backends (reference, cpu), their registration with torch.library, and selection.

``torch.ops.slac.adder2d`` / ``torch.ops.slac.adder_linear`` are the registered ops; most code calls
``slac.functional.adder2d`` / ``adder_linear``, which validate arguments and resolve ``backend="auto"``.
"""

from slac.ops import library
from slac.ops.backends import BACKENDS, available_backends, resolve_backend

__all__ = ["BACKENDS", "available_backends", "library", "resolve_backend"]
