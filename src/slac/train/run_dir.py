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
  It resumes from last.pt, or from an explicitly named checkpoint that is not older than last.pt.
- A run being trained holds a lock (``.lock``, an flock released when its process ends however it ends):
  a second process neither replaces, restarts nor resumes it.
"""

from __future__ import annotations

import fcntl
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

RUN_FILES = frozenset({"config.yaml", "metrics.csv", "summary.json", "checkpoints", "tensorboard", ".lock"})
RECORDS = ("metrics.csv", "summary.json")  # what a run that trained at least one epoch or finished has
LOCK = ".lock"


@dataclass(frozen=True)
class Contents:
    """What a folder holds, as far as runs are concerned.

    kind: "absent", "empty", "failed start" (a slac recipe and no record or checkpoint), "run", or
    "not a run" (``why`` says what makes it one). ``others``: entries a run does not write (a run that
    holds some is "not a run": replacing it would delete them); ``checkpoints``: the files in
    checkpoints/; ``in_use``: a process training it holds its lock."""

    kind: str
    why: str = ""
    checkpoints: tuple[str, ...] = ()
    others: tuple[str, ...] = ()
    in_use: bool = False


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")  # an atomic write cut short


def _locked(path: Path) -> bool:
    """Whether a process holds the lock of the run directory ``path``."""
    lock = path / LOCK
    if not lock.is_file():
        return False
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def inspect_run_dir(path: Path) -> Contents:
    """What ``path`` holds (see ``Contents``); reads, never writes."""
    if not path.exists():
        return Contents("absent")
    if not path.is_dir():
        return Contents("not a run", "it is a file")
    entries = sorted(entry.name for entry in path.iterdir() if not _is_temporary(entry.name))
    if not entries:
        return Contents("empty")
    others = tuple(name for name in entries if name not in RUN_FILES)
    config = path / "config.yaml"
    if not config.is_file():
        held = f"; it holds {_listed(others)}" if others else ""
        return Contents("not a run", f"it has no config.yaml{held}", others=others)
    try:
        saved_config(yaml.safe_load(config.read_text()), str(config))
    except (ConfigError, yaml.YAMLError, UnicodeDecodeError) as error:
        return Contents("not a run", f"its config.yaml is not a slac recipe ({error})", others=others)
    checkpoint_dir = path / "checkpoints"
    checkpoints: tuple[str, ...] = ()
    if checkpoint_dir.is_dir():
        names = sorted(entry.name for entry in checkpoint_dir.iterdir() if not _is_temporary(entry.name))
        checkpoints = tuple(name for name in names if name.endswith(".pt"))
        others += tuple(f"checkpoints/{name}" for name in names if not name.endswith(".pt"))
    in_use = _locked(path)
    if others:
        why = f"it holds {_listed(others)}, which a run does not write"
        return Contents("not a run", why, checkpoints, others, in_use)
    if not checkpoints and not any((path / name).exists() for name in RECORDS):
        return Contents("failed start", in_use=in_use)
    return Contents("run", checkpoints=checkpoints, in_use=in_use)


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


def _in_use(path: Path) -> FileExistsError:
    return FileExistsError(
        f"{path} is being trained by another process (it holds the run's lock); wait for it to end, or stop "
        "it first"
    )


class RunDirectory:
    """One run directory through a run: checks first (``check_new``, ``check_resume``: read only), then
    the writes (``start``, ``first_checkpoint``, ``abandon``, ``finish``) that ``Trainer.fit`` makes."""

    def __init__(self, path: Path, log: Any = print) -> None:
        self.path = Path(path)
        self.log = log
        self.resuming = False
        self._checked: str | None = None  # the kind of folder the checks saw
        self._aside: Path | None = None  # where a replaced run is while the new run has no checkpoint
        self._committed = False  # the run has written a checkpoint
        self._lock: Any = None  # the open lock file while the run trains

    # ---------------------------------------------------------------------------------------- checks

    def check_new(self, overwrite: bool) -> None:
        """A new run may start in this directory (or an error that says why not and what to do)."""
        _check_creatable(self.path)
        contents = inspect_run_dir(self.path)
        if contents.in_use:
            raise _in_use(self.path)
        if contents.kind == "not a run":
            raise FileExistsError(
                f"{self.path} exists and is not a slac run directory ({contents.why}); slac never deletes "
                "or writes into it: choose another name (--name) or out_dir"
            )
        if contents.kind == "run" and not overwrite:
            raise FileExistsError(
                f"{self.path} already holds {_describe(self.path, contents)}; continue it with "
                f"`slac train --resume {self.path}`, choose another name (--name), or replace it "
                "(--overwrite; the old run is kept until the new one writes its first checkpoint)"
            )
        if contents.kind == "failed start":
            self.log(
                f"note: {self.path} holds a run that stopped before its first checkpoint; starting it again"
            )
        self._checked = contents.kind
        for leftover in sorted(self.path.parent.glob(f".{self.path.name}.deleting-*")):
            shutil.rmtree(leftover, ignore_errors=True)  # a replaced run whose deletion was cut short
        for aside in sorted(self.path.parent.glob(f".{self.path.name}.replaced-*")):
            how = (
                f"mv {aside} {self.path}"
                if contents.kind in ("absent", "empty")
                else f"rm -r {self.path} && mv {aside} {self.path}, if {self.path} holds nothing you need"
            )
            self.log(
                f"note: {aside} holds a run that an earlier --overwrite of {self.path} replaced, whose new "
                f"run stopped before its first checkpoint; to get it back: {how}; or delete it"
            )

    def check_resume(self, checkpoint: Path | None = None) -> None:
        """The directory holds a run that can be resumed: from ``checkpoint`` (a file in it) when given,
        else from its checkpoints/last.pt. Files a run does not write may sit beside it: a resumed run
        writes only its own."""
        self.resuming = True
        contents = inspect_run_dir(self.path)
        if contents.in_use:
            raise _in_use(self.path)
        if contents.kind in ("absent", "empty"):
            raise CheckpointError(f"{self.path} holds no run to resume (no checkpoints/last.pt)")
        if contents.kind == "not a run" and not (contents.others and (self.path / "config.yaml").is_file()):
            raise CheckpointError(f"{self.path} is not a slac run directory ({contents.why})")
        if checkpoint is None and "last.pt" not in contents.checkpoints:
            raise CheckpointError(
                f"{self.path} has no checkpoint to resume from: its run stopped before writing one. Start "
                f"it again with its recipe (slac train --config {self.path / 'config.yaml'}); the "
                "directory is reused"
            )
        self._checked = "resume"

    def check_checkpoint_is_latest(self, state: dict[str, Any], checkpoint: Path) -> None:
        """A checkpoint named explicitly is not older than last.pt, which resuming from it would replace
        (with the epochs after it)."""
        from slac.train.checkpoint import load_checkpoint

        last = self.path / "checkpoints" / "last.pt"
        if checkpoint.resolve() == last.resolve() or not last.is_file():
            return
        latest = load_checkpoint(last)
        if latest.get("step", 0) > state.get("step", 0):
            raise CheckpointError(
                f"{checkpoint} (epoch {state.get('epoch')}) is older than {last} "
                f"(epoch {latest.get('epoch')}): resuming from it would overwrite last.pt and the epochs "
                f"after it. To continue from it, copy the run (cp -r {self.path} NEW), delete "
                f"NEW/checkpoints/last.pt, and resume NEW from its checkpoints/{checkpoint.name}"
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
        """The run begins: the directory is checked again (another process may have used it since the
        checks), the run it replaces moves aside, the directory holds the recipe and the run's lock."""
        contents = inspect_run_dir(self.path)
        if contents.in_use:
            raise _in_use(self.path)
        expected = {"resume": ("run", "not a run"), "absent": ("absent",), "empty": ("empty",)}
        if contents.kind not in expected.get(self._checked or "", (self._checked,)):
            raise FileExistsError(
                f"{self.path} changed since this run was checked (it is now {contents.kind!r}, it was "
                f"{self._checked!r}): another process used it; build the run again"
            )
        if not self.resuming:
            if contents.kind in ("run", "failed start"):
                aside = self.path.with_name(
                    f".{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
                )
                os.rename(self.path, aside)
                self._aside = aside
            self.path.mkdir(parents=True, exist_ok=contents.kind == "empty")
        self._lock = (self.path / LOCK).open("a")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the folder was free a moment ago
        if not self.resuming:
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
            doomed = self._aside.with_name(self._aside.name.replace(".replaced-", ".deleting-", 1))
            os.rename(self._aside, doomed)  # a deletion cut short leaves no run that looks restorable
            self._aside = None
            shutil.rmtree(doomed, ignore_errors=True)

    def abandon(self) -> None:
        """The new run failed before its first checkpoint: put back the run it replaced. Never raises
        (it runs while another error propagates); a failure to restore is logged with what to do."""
        self.finish()
        if self._committed or self._aside is None:
            return
        try:
            if self.path.exists():
                shutil.rmtree(self.path)  # holds only what this run wrote
            os.rename(self._aside, self.path)
            self.log(f"the run that was in {self.path} before is back")
        except OSError as error:
            self.log(f"warning: could not put back the replaced run ({error}); it is in {self._aside}")
        self._aside = None

    def finish(self) -> None:
        """Release the run's lock (the process ending releases it too)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None
