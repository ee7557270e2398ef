"""The project's exception types: errors in what a user asked for or gave, as opposed to failures.

Every exception here derives from ``SlacError``, and also from the built-in type a Python caller would
expect (``ConfigError`` is a ``ValueError``, ``CheckpointError`` a ``RuntimeError``, ...), so that
``except ValueError`` keeps working. The ``slac`` command prints a ``SlacError`` as one line and exits
with status 2; anything else (a CUDA out-of-memory, an NCCL failure, a bug) keeps its traceback and
exits with status 1.

    SlacError
    ├── ConfigError              a recipe key, flag or option that cannot be used (ValueError)
    ├── DataError                a dataset file that is incomplete or corrupt (ValueError)
    │   └── ChecksumError        a file whose MD5 differs from the published one
    ├── CheckpointError          a checkpoint that is missing, truncated or not slac's (RuntimeError)
    ├── RunError                 run directories that cannot give what was asked (ValueError)
    ├── MissingDependencyError   an optional package that is not installed (ImportError)
    ├── DeviceError              a device that is not there, or a backend that cannot run (RuntimeError)
    └── DivergenceError          a training loss that became NaN or infinite (FloatingPointError)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "CheckpointError",
    "ChecksumError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "DivergenceError",
    "MissingDependencyError",
    "RunError",
    "SlacError",
    "options_as_config_errors",
]


class SlacError(Exception):
    """Base of the errors in a user's request or inputs; the message says what is wrong and what to do."""


class ConfigError(SlacError, ValueError):
    """A recipe or flag that cannot be used: unknown key, wrong type, invalid value."""


class DataError(SlacError, ValueError):
    """A dataset file that is incomplete, corrupt or not the expected dataset."""


class ChecksumError(DataError):
    """A file's MD5 differs from the published one."""


class CheckpointError(SlacError, RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or not a slac checkpoint."""


class RunError(SlacError, ValueError):
    """Run directories that cannot give what was asked (no finished run, no 2-D features, no epochs)."""


class MissingDependencyError(SlacError, ImportError):
    """An optional package that the requested feature needs is not installed; the message names the extra."""


class DeviceError(SlacError, RuntimeError):
    """A device that was asked for is not visible, or an adder backend cannot run on the tensors' device."""


class DivergenceError(SlacError, FloatingPointError):
    """The training loss became NaN or infinite."""


@contextmanager
def options_as_config_errors(what: str) -> Iterator[None]:
    """A block that builds something from a user's options (``create_model(**options)``,
    ``create_head(**options)``): the ``TypeError`` of an unknown keyword or the ``ValueError`` of a bad
    value becomes a ``ConfigError`` that starts with ``what``; the project's own errors pass as they are."""
    try:
        yield
    except SlacError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{what}: {error}") from error
