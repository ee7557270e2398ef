"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only (no pickled classes), so it
loads with ``weights_only=True`` and a checkpoint from an untrusted source cannot run code. Writing goes
to a temporary file in the same directory, which is flushed to disk and then renamed over the target:
a crash or SIGKILL at any moment leaves either the old or the new checkpoint, never a torn one.

Keys: ``format`` (CHECKPOINT_FORMAT), ``config`` (the resolved recipe), ``model`` (the unwrapped
model's state dict), ``optimizer``, ``scheduler``, ``scaler`` (fp16 only), ``loader`` (position of the
training loader, inside an epoch when the run was interrupted), ``rng`` (torch, CUDA, NumPy and Python
generator states), ``epoch`` (completed epochs), ``step`` (optimizer steps), ``meters`` (the running
sums of the epoch in progress), ``history`` (one row per completed epoch), ``best`` (best test top-1
and its epoch), ``complete`` (the run reached its last epoch).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slac.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "get_rng_state",
    "isolated_rng",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "slac-checkpoint-1"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` with ``weights_only=True``.

    ``path`` may be a checkpoint file or a run directory (its ``checkpoints/last.pt`` is read).
    Raises ``CheckpointError`` naming the file for a missing, truncated or foreign file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist (pass a .pt file or a run directory with checkpoints/last.pt)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or corrupt zip archives
        first_line = next(iter(str(error).splitlines()), "")  # an empty file raises a bare EOFError
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {first_line}); "
            "the file is truncated or corrupt, or was not written by slac"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} is not a {CHECKPOINT_FORMAT} checkpoint (format {found!r}); "
            "slac eval and slac train --resume read checkpoints written by slac train"
        )
    return state


def get_rng_state() -> dict[str, Any]:
    """The global generators' states as weights_only-loadable values."""
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@contextmanager
def isolated_rng() -> Iterator[None]:
    """A block after which the global random generators (torch, CUDA, NumPy, Python) are as before it:
    reading labels through a Dataset's random transform, or the checks before a run, draw nothing that
    training would otherwise draw."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
