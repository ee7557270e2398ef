"""Files the commands write: checked before any work, so that a mistyped path costs nothing."""

from __future__ import annotations

import os
from pathlib import Path

from slac.errors import ConfigError

__all__ = ["check_output_file"]


def check_output_file(path: str | Path, what: str, suffix: str | None = None) -> Path:
    """``path`` as a file that can be written: not a directory, in a folder that exists (none is created:
    a mistyped folder would otherwise become a tree of new ones), with ``suffix`` when one is given.
    Called before any work, so that a mistake costs nothing."""
    path = Path(path).expanduser()
    if path.is_dir():
        example = f", e.g. {path / f'figure{suffix}'}" if suffix else ""
        raise ConfigError(f"{what}: {path} is a directory; give a file name in it{example}")
    if suffix is not None and path.suffix.lower() != suffix:
        raise ConfigError(f"{what}: {path} must end in {suffix} (the file is written in that format)")
    folder = path.parent
    if not folder.exists():
        raise ConfigError(f"{what}: the folder {folder} does not exist; create it first (mkdir -p {folder})")
    if not folder.is_dir():
        raise ConfigError(f"{what}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{what}: {path} cannot be written (permission denied)")
    return path
