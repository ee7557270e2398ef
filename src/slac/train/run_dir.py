"""Run directories: what a folder holds, and changing one without ever losing a record.

A run directory (``out_dir/name``) holds what ``slac train`` writes (``slac.train.records`` lists it):
config.yaml, metrics.csv, summary.json, checkpoints/, tensorboard/. The rules:

- Nothing on disk changes until every check that can be made before training has passed (the recipe, the
  data, the model against the data, a resumed run's checkpoint against its recipe and data): ``Trainer``
  makes them all when it is built, and writes only in ``fit()``.
- A run replaced with ``overwrite`` is moved aside (one rename, ``.<name>.replaced-<time>`` beside it) when
  the new run starts, and deleted only once the new run has written its first checkpoint; if the new run
  fails before that, the old one is moved back.
- A folder that is not a slac run (it holds files a run does not write, or no slac recipe) is never
  deleted, moved or written into.
- A run that stopped before its first checkpoint (a failed start: a config.yaml and nothing a later run
  would need) is started again in place.
- A resumed run changes its directory only when it writes its first checkpoint: config.yaml then takes
  the resumed recipe, and summary.json (which describes the finished state that checkpoint replaces) goes.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from slac.errors import CheckpointError, ConfigError
from slac.train.config import RESUME_OVERRIDABLE, TrainConfig, save_config, saved_config

__all__ = ["RUN_FILES", "RunDirectory", "inspect_run_dir"]

RUN_FILES = frozenset({"config.yaml", "metrics.csv", "summary.json", "checkpoints", "tensorboard"})
RECORDS = ("metrics.csv", "summary.json")  # what a run that trained at least one epoch or finished has


@dataclass(frozen=True)
class Contents:
    """What a folder holds, as far as runs are concerned.

    kind: "absent", "empty", "failed start" (a slac recipe and no record or checkpoint), "run", or
    "not a run" (``why`` says what makes it one)."""

    kind: str
    why: str = ""
    checkpoints: tuple[str, ...] = ()


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")  # an atomic write cut short


def inspect_run_dir(path: Path) -> Contents:
    """What ``path`` holds (see ``Contents``); reads, never writes."""
    if not path.exists():
        return Contents("absent")
    if not path.is_dir():
        return Contents("not a run", "it is a file")
    entries = sorted(entry.name for entry in path.iterdir() if not _is_temporary(entry.name))
    if not entries:
        return Contents("empty")
    others = [name for name in entries if name not in RUN_FILES]
    if others:
        listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        return Contents("not a run", f"it holds {listed}, which a run does not write")
    config = path / "config.yaml"
    if not config.is_file():
        return Contents("not a run", "it has no config.yaml")
    try:
        saved_config(yaml.safe_load(config.read_text()), str(config))
    except (ConfigError, yaml.YAMLError, UnicodeDecodeError) as error:
        return Contents("not a run", f"its config.yaml is not a slac recipe ({error})")
    checkpoint_dir = path / "checkpoints"
    checkpoints: tuple[str, ...] = ()
    if checkpoint_dir.is_dir():
        names = sorted(entry.name for entry in checkpoint_dir.iterdir() if not _is_temporary(entry.name))
        foreign = [name for name in names if not name.endswith(".pt")]
        if foreign:
            return Contents("not a run", f"its checkpoints/ holds {', '.join(foreign[:5])}")
        checkpoints = tuple(names)
    if not checkpoints and not any((path / name).exists() for name in RECORDS):
        return Contents("failed start")
    return Contents("run", checkpoints=checkpoints)


def _describe(path: Path, contents: Contents) -> str:
    if (path / "summary.json").is_file():
        return "a finished run"
    if contents.checkpoints:
        return "a run with checkpoints"
    return "a run's records"


def _check_creatable(path: Path) -> None:
    """``path`` can be made: its nearest existing ancestor is a folder this process may write into."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FileExistsError(
            f"{path} cannot be made: {ancestor} is a file, not a folder; choose another out_dir"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"{path} cannot be made: {ancestor} is not writable; choose another out_dir")


class RunDirectory:
    """One run directory through a run: checks first (``check_new``, ``check_resume``: read only), then
    the writes (``start``, ``first_checkpoint``, ``abandon``) that ``Trainer.fit`` makes."""

    def __init__(self, path: Path, log: Any = print) -> None:
        self.path = Path(path)
        self.log = log
        self.resuming = False
        self._replace = False  # an old run (or a failed start) moves aside when the new one starts
        self._aside: Path | None = None  # where it is while the new run has no checkpoint
        self._committed = False  # the run has written a checkpoint

    # ---------------------------------------------------------------------------------------- checks

    def check_new(self, overwrite: bool) -> None:
        """A new run may start in this directory (or an error that says why not and what to do)."""
        _check_creatable(self.path)
        contents = inspect_run_dir(self.path)
        if contents.kind == "not a run":
            raise FileExistsError(
                f"{self.path} exists and is not a slac run directory ({contents.why}); slac never deletes "
                "or writes into it: choose another name (--name) or out_dir"
            )
        if contents.kind == "run":
            if not overwrite:
                raise FileExistsError(
                    f"{self.path} already holds {_describe(self.path, contents)}; continue it with "
                    f"`slac train --resume {self.path}`, choose another name (--name), or replace it "
                    "(--overwrite; the old run is kept until the new one writes its first checkpoint)"
                )
            self._replace = True
        elif contents.kind == "failed start":
            self.log(
                f"note: {self.path} holds a run that stopped before its first checkpoint; starting it again"
            )
            self._replace = True
        for aside in sorted(self.path.parent.glob(f".{self.path.name}.replaced-*")):
            self.log(
                f"note: {aside} holds a run that an earlier --overwrite of {self.path} replaced, whose new "
                f"run stopped before its first checkpoint; move it back (mv {aside} {self.path}) or delete it"
            )

    def check_resume(self, checkpoint: Path | None = None) -> None:
        """The directory holds a run that can be resumed: from ``checkpoint`` (a file in it) when given,
        else from its checkpoints/last.pt."""
        self.resuming = True
        contents = inspect_run_dir(self.path)
        if contents.kind in ("absent", "empty"):
            raise CheckpointError(f"{self.path} holds no run to resume (no checkpoints/last.pt)")
        if contents.kind == "not a run":
            raise CheckpointError(f"{self.path} is not a slac run directory ({contents.why})")
        if checkpoint is None and "last.pt" not in contents.checkpoints:
            raise CheckpointError(
                f"{self.path} has no checkpoint to resume from: its run stopped before writing one. Start "
                f"it again with its recipe (slac train --config {self.path / 'config.yaml'}); the "
                "directory is reused"
            )

    def recipe_edits(self, checkpoint_config: dict[str, Any]) -> dict[str, Any]:
        """Keys whose value in the directory's config.yaml differs from the checkpoint's recipe: those a
        resumed run may change (returned, to apply), or an error naming the others."""
        path = self.path / "config.yaml"
        if not path.is_file():
            return {}
        try:
            on_disk = saved_config(yaml.safe_load(path.read_text()), str(path)).to_dict()
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path} is not valid YAML ({error}); restore it or delete it") from None
        saved = saved_config(checkpoint_config, "checkpoint config").to_dict()
        location = {"out_dir", "name"}  # where the directory is, not what the run computes
        edited = {
            key: on_disk[key] for key in on_disk if key not in location and on_disk[key] != saved.get(key)
        }
        refused = sorted(set(edited) - RESUME_OVERRIDABLE)
        if refused:
            changes = "; ".join(
                f"{key}: {edited[key]!r} (the checkpoint's: {saved.get(key)!r})" for key in refused
            )
            raise ConfigError(
                f"{path} differs from the recipe its checkpoint was trained with in {changes}. A resumed run "
                "keeps its recipe (only " + ", ".join(sorted(RESUME_OVERRIDABLE)) + " can change): restore "
                "config.yaml, or start a new run with the edited recipe (slac train --config "
                f"{path} --name NEW)"
            )
        return edited

    # ---------------------------------------------------------------------------------------- writes

    def start(self, config: TrainConfig) -> None:
        """A new run begins: the run it replaces moves aside, the directory holds the recipe."""
        if self.resuming:
            return  # the directory changes with the first checkpoint
        if self._replace and self.path.exists():
            aside = self.path.with_name(
                f".{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            )
            os.rename(self.path, aside)
            self._aside = aside
        self.path.mkdir(parents=True, exist_ok=True)
        save_config(config, self.path / "config.yaml")

    def first_checkpoint(self, config: TrainConfig) -> None:
        """The run has written its first checkpoint: the replaced run goes; a resumed run's directory takes
        its recipe and loses the summary of the state that checkpoint replaced."""
        if self._committed:
            return
        self._committed = True
        if self.resuming:
            save_config(config, self.path / "config.yaml")
            (self.path / "summary.json").unlink(missing_ok=True)
        if self._aside is not None:
            shutil.rmtree(self._aside)
            self._aside = None

    def abandon(self) -> None:
        """The new run failed before its first checkpoint: put back the run it replaced."""
        if self._committed or self._aside is None:
            return
        shutil.rmtree(self.path)  # holds only what this run wrote
        os.rename(self._aside, self.path)
        self.log(f"the run that was in {self.path} before is back")
        self._aside = None
