"""Studies that outlive a process: a list of planned runs, executed in order, each one skipped when its
records are already kept, resumed from its checkpoint when it was interrupted, and its small records
copied to a results folder (meant for git) as soon as it finishes.

    from tools.study import PlannedRun, Study      # run from the repository's root (python -m ..., pytest)
    study = Study("runs/my-study", "docs/records/my-study")
    plan = [PlannedRun("main", "ann_seed0", "configs/x.yaml", seed=0, overrides={"epochs": 6})]
    study.status(plan)      # [("main/ann_seed0", "new" | "partial (3 of 6 epochs done)" | "done" | ...)]
    with study.lock():      # one study process per runs_dir
        study.execute(plan[0])  # trains (or resumes), then copies the records

A run lives in ``runs_dir/<phase>/<name>/`` (the run directory ``slac train`` writes: config, metrics,
summary, checkpoints; never committed), the processes that trained it in
``runs_dir/<phase>/<name>.machine.json`` beside it (a run directory holds only what ``slac train`` writes);
its records in
``records_dir/<phase>/<name>/``:

    config.yaml, metrics.csv, summary.json   as ``slac train`` wrote them, with paths relative to the
                                             repository (``root``) instead of this machine's; summary.json
                                             copied last: it marks the records complete
    machine.json                             one entry per process that trained it: CPU, software, the
                                             code's git commit, epochs covered, wall-clock seconds, how it
                                             ended ("finished", "interrupted", "failed", or null: the
                                             process died without a word, e.g. SIGKILL)
    analysis.json                            what ``analyze`` returned (computed while the checkpoint exists)
    failed.json                              instead of summary.json, for a run whose loss became
                                             non-finite (``DivergenceError``): the error and its epoch

A run is *done* when its records hold a summary.json of the planned number of epochs, or a failed.json.
Interrupted runs keep their checkpoint; the next ``execute`` resumes from ``checkpoints/last.pt`` (inside
an epoch when the stop came mid-epoch, see ``Trainer``) if it is of the planned recipe, seed included.
A run directory without a usable checkpoint is started again (its machine.json entries are kept).

This is experiment orchestration beside the library, not part of it (it is not in the wheel): the study
scripts under scripts/ use it.

Signals: SIGTERM/SIGINT during training write a checkpoint and stop (``TrainingInterrupted``); during the
last step, the evaluation or the copying of records, the run is finished and kept first, then the same
``TrainingInterrupted`` is raised, so a study loop stops at the next run boundary.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from slac.errors import CheckpointError, ConfigError, DivergenceError
from slac.train.records import write_json_atomic, write_text_atomic

__all__ = ["RECORD_FILES", "PlannedRun", "Study", "code_version", "cpu_model", "loaded_code", "machine_entry"]

RECORD_FILES = ("config.yaml", "metrics.csv", "summary.json")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: ``slac train --config config --seed seed`` with ``overrides``, named ``name``
    inside the ``phase`` folder (``config`` None: the default recipe)."""

    phase: str
    name: str
    config: str | None
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.phase}/{self.name}"


# ----------------------------------------------------------------------------------------------- machine


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor string elsewhere)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


CODE_PATHS = ("src", "scripts", "configs", "tools")  # what a run's result depends on, in the checkout


def code_version(source: str | Path | None = None) -> dict[str, Any]:
    """The git commit of the slac checkout at ``source`` (default: the slac package in use) and the files
    of ``CODE_PATHS`` that differ from it, untracked ones included ("dirty"; None when git cannot tell);
    the package version where slac is not a git checkout. ``loaded_code`` is this process's."""
    import slac

    source = Path(source) if source is not None else Path(slac.__file__).resolve().parent
    try:

        def git(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["git", *args], cwd=source, capture_output=True, text=True, timeout=10)

        head = git("rev-parse", "HEAD")
        if head.returncode == 0:
            changed = git("status", "--porcelain", "--untracked-files=normal", "--",
                          *(f":(top){path}" for path in CODE_PATHS))  # fmt: skip
            if changed.returncode != 0:
                return {"commit": head.stdout.strip(), "dirty": None, "changed": None}
            files = sorted(line[3:] for line in changed.stdout.splitlines() if line.strip())
            return {"commit": head.stdout.strip(), "dirty": bool(files), "changed": files}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": getattr(slac, "__version__", "unknown")}


@functools.cache
def _loaded_code() -> dict[str, Any]:
    return code_version()


def loaded_code() -> dict[str, Any]:
    """``code_version()`` of the code this process runs: taken once, at the first call (``Study`` makes it
    when built), since a process runs what it loaded when it started, whatever is committed while it
    trains (the study's own record commits move HEAD). A fresh copy each call."""
    return copy.deepcopy(_loaded_code())


def machine_entry() -> dict[str, Any]:
    """What describes the process that trains: CPU (name, vendor, family/model, vector extensions), count
    and threads, torch/numba/python versions and the code's commit."""
    import torch

    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    entry: dict[str, Any] = {
        "cpu": cpu_model(),
        # A virtual machine's model name can be generic ("Intel(R) Xeon(R) Processor"): vendor, family,
        # model and the vector/matrix extensions tell the CPUs apart (AMX: Sapphire Rapids or later).
        "vendor": info.get("vendor_id"),
        "family_model": f"{info['cpu family']}/{info['model']}" if "cpu family" in info else None,
        "extensions": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile"}),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "code": loaded_code(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        import numba

        entry["numba"] = numba.__version__
    except ImportError:
        pass
    return entry


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{path} is not valid JSON ({error}); restore it from git, or delete it (the run is then "
            "redone or resumed)"
        ) from None


def _relative(path: str | None, root: Path) -> str | None:
    """``path`` relative to ``root`` when it lies inside it (as given otherwise, or None)."""
    if path is None:
        return None
    given = Path(path).expanduser()
    for inside, folder in ((given.absolute(), root.absolute()), (given.resolve(), root.resolve())):
        try:  # as written first (a runs/ that is a link to scratch space), then with links resolved
            return str(inside.relative_to(folder))
        except ValueError:
            continue
    return path


def portable_records(source: Path, root: Path) -> dict[str, str]:
    """The texts of a run's config.yaml and summary.json with the machine's paths (``out_dir``,
    ``run_dir``) written relative to ``root`` (the repository): records meant for git name no machine."""
    texts = {}
    if (source / "config.yaml").is_file():
        config = yaml.safe_load((source / "config.yaml").read_text())
        config["out_dir"] = _relative(config.get("out_dir"), root)
        texts["config.yaml"] = yaml.safe_dump(config, sort_keys=False)
    if (source / "summary.json").is_file():
        summary = json.loads((source / "summary.json").read_text())
        summary["run_dir"] = _relative(summary.get("run_dir"), root)
        if isinstance(summary.get("config"), dict):
            summary["config"]["out_dir"] = _relative(summary["config"].get("out_dir"), root)
        texts["summary.json"] = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    return texts


def _copy_atomic(source: Path, target: Path) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(descriptor)
    try:
        shutil.copy2(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------- study


class Study:
    """Executes planned runs under ``runs_dir`` and keeps their records in ``records_dir``.

    ``analyze(run_dir) -> dict`` (optional) runs after a run finishes, while its checkpoint exists; its
    result is kept as analysis.json (a failure is logged, and ``analyze_missing`` tries again).
    ``commit=True`` commits each run's records with git once they are written (only those paths, whatever
    else the index holds); a commit that fails is logged and ``commit_pending`` tries again.
    ``root``: the folder paths in the records are relative to (default: the records' git repository, or
    ``records_dir`` outside one).
    """

    def __init__(
        self,
        runs_dir: str | Path,
        records_dir: str | Path,
        analyze: Callable[[Path], dict[str, Any]] | None = None,
        commit: bool = False,
        log: Callable[[str], None] = print,
        root: str | Path | None = None,
    ) -> None:
        self.runs_dir, self.records_dir = Path(runs_dir), Path(records_dir)
        self.root = Path(root) if root is not None else _repository_of(self.records_dir)
        self.analyze, self.commit, self.log = analyze, commit, log
        self._stop: Any = None  # the StopFlag of the run being executed
        loaded_code()  # the code this process loaded, before any record is committed

    def _whole(self) -> contextlib.AbstractContextManager:
        """A block that a second signal does not cut short (copies of records, git), while a run executes."""
        return self._stop.deferred() if self._stop is not None else contextlib.nullcontext()

    def run_dir(self, run: PlannedRun) -> Path:
        return self.runs_dir / run.phase / run.name

    def machine_file(self, run: PlannedRun) -> Path:
        """Where the entries of the processes that trained ``run`` are kept: beside its run directory."""
        return self.runs_dir / run.phase / f"{run.name}.machine.json"

    def _move_machine_file(self, run: PlannedRun) -> None:
        """An earlier version kept machine.json inside the run directory, where slac train refuses to
        replace or restart a run holding files it does not write: it moves beside it."""
        old = self.run_dir(run) / "machine.json"
        if old.is_file() and not self.machine_file(run).exists():
            os.replace(old, self.machine_file(run))

    def checkpoint(self, run: PlannedRun) -> Path:
        return self.run_dir(run) / "checkpoints" / "last.pt"

    def records(self, run: PlannedRun) -> Path:
        return self.records_dir / run.phase / run.name

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``runs_dir/.lock`` (an flock) while executing: two study processes on one runs_dir would
        train the same run directory."""
        import fcntl

        self.runs_dir.mkdir(parents=True, exist_ok=True)
        path = self.runs_dir / ".lock"
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"another study process holds {path}; wait for it to end, or stop it first"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------------------------------ status

    def is_done(self, run: PlannedRun) -> bool:
        if (self.records(run) / "failed.json").is_file():
            return True
        summary = self.records(run) / "summary.json"
        if not summary.is_file():
            return False
        epochs = run.overrides.get("epochs")
        return epochs is None or _read_json(summary).get("epochs") == epochs

    def state(self, run: PlannedRun) -> str:
        """ "done", "failed (...)", "partial (k of n epochs done)" (a checkpoint to resume) or "new"."""
        failed = self.records(run) / "failed.json"
        if failed.is_file():
            return f"failed ({_read_json(failed).get('error', '?')})"
        if self.is_done(run):
            return "done"
        if self.checkpoint(run).is_file():
            progress = self.progress(run)
            if progress is None:
                return "new (its checkpoint is unreadable)"
            done, epochs, batch = progress
            within = f"; epoch {done + 1} at batch {batch}" if batch else ""
            return f"partial ({done} of {epochs} epochs done{within})"
        return "new"

    def progress(self, run: PlannedRun) -> tuple[int, int, int] | None:
        """(epochs done, planned epochs, batches done of the epoch in progress) of the run's checkpoint;
        None without a readable one."""
        from slac.train.checkpoint import load_checkpoint

        try:
            state = load_checkpoint(self.checkpoint(run))
        except (CheckpointError, FileNotFoundError):
            return None
        batch = int((state.get("loader") or {}).get("batch", 0))
        return int(state.get("epoch", 0)), int(state["config"].get("epochs")), batch

    def status(self, plan: list[PlannedRun]) -> list[tuple[str, str]]:
        return [(run.key, self.state(run)) for run in plan]

    # --------------------------------------------------------------------------------------- execution

    def _recipe(self, run: PlannedRun) -> Any:
        from slac.train import load_config

        overrides = {
            **run.overrides,
            "seed": run.seed,
            "name": run.name,
            "out_dir": str(self.run_dir(run).parent),
        }
        return load_config(run.config, overrides)

    def _resumable(self, run: PlannedRun) -> bool:
        """Whether the run directory's checkpoint is a readable one of the planned recipe (seed and epochs
        included); raises when it is of another recipe, which must not be resumed nor silently deleted."""
        from slac.train.checkpoint import load_checkpoint
        from slac.train.config import RESUME_OVERRIDABLE, saved_config

        if not self.checkpoint(run).is_file():
            return False
        try:
            saved = saved_config(load_checkpoint(self.checkpoint(run))["config"], "checkpoint config")
        except (CheckpointError, ConfigError) as error:
            self.log(f"{run.key}: checkpoint unusable ({error}); starting again")
            return False
        ignored = (RESUME_OVERRIDABLE - {"epochs"}) | {"name", "out_dir"}
        planned, kept = self._recipe(run).to_dict(), saved.to_dict()
        differ = sorted(k for k in planned if k not in ignored and planned[k] != kept.get(k))
        if differ:
            raise ConfigError(
                f"{self.run_dir(run)} holds a run of another recipe (differs in {', '.join(differ)}); "
                "move it away or delete it to start the planned run"
            )
        return True

    def _trainer(self, run: PlannedRun) -> Any:
        from slac.train import Trainer

        if self._resumable(run):
            trainer = Trainer(resume=self.checkpoint(run))
            self.log(f"{run.key}: resuming from {self.checkpoint(run)} (epoch {trainer.epoch})")
            return trainer
        self.log(f"{run.key}: starting ({run.config or 'the default recipe'}, seed {run.seed})")
        return Trainer(self._recipe(run), overwrite=True)

    def execute(self, run: PlannedRun) -> dict[str, Any] | None:
        """Train (or resume) ``run`` to its end and keep its records; None when it was done already or
        failed (failed.json). ``TrainingInterrupted`` propagates after the checkpoint is written, or after
        the records are kept when the signal came once training was over."""
        if self.is_done(run):
            return None
        from slac.train import TrainingInterrupted
        from slac.train.signals import StopFlag, install_stop_handlers, restore_handlers

        # One flag from here to the end of the run: the trainer takes it over, so that a signal during
        # building, the last step, the evaluation or the keeping of records is not lost.
        flag = self._stop = StopFlag(self.log)
        previous = install_stop_handlers(flag)
        try:
            summary = self._execute(run)
        finally:
            self._stop = None
            restore_handlers(previous)
        if flag.signum:
            raise TrainingInterrupted(flag.signum, self.checkpoint(run))
        return summary

    def _execute(self, run: PlannedRun) -> dict[str, Any] | None:
        """The summary, or None when the run failed (under ``execute``'s StopFlag, ``self._stop``)."""
        from slac.train import TrainingInterrupted

        self._move_machine_file(run)
        machine = self.machine_file(run)
        history = _read_json(machine) if machine.is_file() else []
        trainer = self._trainer(run)
        trainer.stop = self._stop
        # Logged before training, so that a process that dies without a chance to write (SIGKILL) still
        # leaves its entry ("ended": null); completed when it stops, fails or finishes.
        entry = machine_entry() | {"from_epoch": trainer.epoch, "from_step": trainer.step, "ended": None}
        machine.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(machine, [*history, entry])
        started = time.perf_counter()

        def close(ended: str) -> None:
            done = {"to_epoch": trainer.epoch, "to_step": trainer.step, "ended": ended,
                    "wall_seconds": time.perf_counter() - started}  # fmt: skip
            write_json_atomic(machine, [*history, entry | done])

        if self._stop.signum:  # stopped while the trainer was being built: do not start training
            close("interrupted")
            raise TrainingInterrupted(
                self._stop.signum, self.checkpoint(run) if self.checkpoint(run).is_file() else None
            )
        try:
            summary = trainer.fit()
        except TrainingInterrupted:
            close("interrupted")
            raise
        except DivergenceError as error:
            close("failed")
            self._keep_failed(run, error, trainer)
            return None
        close("finished")
        self.keep(run)
        return summary

    def _keep_failed(self, run: PlannedRun, error: Exception, trainer: Any) -> None:
        """Records of a run whose loss became non-finite, from the trainer (its run directory may hold the
        run it replaced, put back because the new one failed before its first checkpoint)."""
        from slac.train.records import metrics_table

        target = self.records(run)
        target.mkdir(parents=True, exist_ok=True)
        epoch = trainer.epoch
        config = trainer.config.to_dict()
        config["out_dir"] = _relative(config.get("out_dir"), self.root)
        with self._whole():
            write_text_atomic(target / "config.yaml", yaml.safe_dump(config, sort_keys=False))
            if trainer.history:
                write_text_atomic(target / "metrics.csv", metrics_table(trainer.history))
            self._copy_records(run, ("machine.json",))
            write_json_atomic(target / "failed.json", {"error": str(error), "epoch": epoch + 1})
        self.log(f"{run.key}: failed in epoch {epoch + 1} ({error}); recorded as failed")
        if self.commit:
            self.commit_path(target, f"study records: {run.key} (failed)")

    def keep(self, run: PlannedRun) -> Path:
        """Copy a finished run's records (summary.json last) and its analysis to the records folder;
        commit them if asked."""
        source, target = self.run_dir(run), self.records(run)
        if not (source / "summary.json").is_file():
            raise FileNotFoundError(f"{source} has no summary.json: the run has not finished")
        target.mkdir(parents=True, exist_ok=True)
        (target / "summary.json").unlink(missing_ok=True)  # until the others are in place
        (target / "analysis.json").unlink(missing_ok=True)  # of an earlier run of this name
        with self._whole():
            self._copy_records(run, ("config.yaml", "metrics.csv", "machine.json", "summary.json"))
        self._analyze(run)
        if self.commit:
            self.commit_path(target, f"study records: {run.key}")
        return target

    def _copy_records(self, run: PlannedRun, names: tuple[str, ...]) -> None:
        """Copy ``names`` of the run (in this order) to its records folder, each atomically, with the
        machine's paths made relative to ``root``."""
        source, target = self.run_dir(run), self.records(run)
        portable = portable_records(source, self.root)
        for name in names:
            if name == "machine.json":
                if self.machine_file(run).is_file():
                    _copy_atomic(self.machine_file(run), target / name)
            elif name in portable:
                write_text_atomic(target / name, portable[name])
            elif (source / name).is_file():
                _copy_atomic(source / name, target / name)

    def _analyze(self, run: PlannedRun) -> bool:
        """Write analysis.json from the run's checkpoint; a failure is reported, not raised (the records
        are kept either way, and ``analyze_missing`` tries again while the checkpoint exists)."""
        if self.analyze is None:
            return False
        self.log(f"{run.key}: analysing the trained model")
        try:
            result = self.analyze(self.run_dir(run))
        except Exception as error:  # the analysis must not lose a finished run
            self.log(f"warning: {run.key}: analysis failed ({type(error).__name__}: {error}); "
                     "it is tried again on the next start while the checkpoint exists")  # fmt: skip
            return False
        write_json_atomic(self.records(run) / "analysis.json", result)
        return True

    def analyze_missing(self, plan: list[PlannedRun]) -> list[str]:
        """Analyse the done runs that have no analysis.json yet and still have their checkpoint."""
        done = []
        for run in plan:
            kept = (self.records(run) / "summary.json").is_file() and self.is_done(run)
            missing = kept and not (self.records(run) / "analysis.json").is_file()
            if missing and self.checkpoint(run).is_file() and self._analyze(run):
                if self.commit:
                    self.commit_path(self.records(run), f"study analysis: {run.key}")
                done.append(run.key)
        return done

    # ------------------------------------------------------------------------------------------- git

    def _git(self, *args: str) -> subprocess.CompletedProcess:
        # In the records' repository whatever the working directory; C locale for git's messages. A git
        # process cut short by a second signal would leave its index.lock behind.
        with self._whole():
            return subprocess.run(["git", *args], cwd=self.records_dir, capture_output=True, text=True,
                                  env={**os.environ, "LC_ALL": "C"})  # fmt: skip

    def commit_path(self, path: Path, message: str) -> bool:
        """Commit ``path`` alone; True when committed or nothing changed. Retried while another git
        process holds the index lock; any other failure is logged (``commit_pending`` tries again)."""
        path = path.resolve()
        error = ""
        for attempt in range(6):
            result = self._git("add", "--", str(path))
            if result.returncode == 0:
                if self._git("diff", "--cached", "--quiet", "--", str(path)).returncode == 0:
                    return True  # nothing to commit
                result = self._git("commit", "-q", "-m", message, "--", str(path))
                if result.returncode == 0:
                    return True
            error = (result.stderr or result.stdout).strip()
            if "index.lock" not in error:
                break
            time.sleep(2 * (attempt + 1))
        advice = "commit it by hand or run the study again"
        if "index.lock" in error:  # held for 42 s: a git process that died leaves its lock behind
            advice = "if no git process is running, remove the index.lock it names, then run the study again"
        self.log(f"warning: could not commit {path}: {error}; {advice}")
        return False

    def commit_pending(self) -> bool:
        """Commit records kept but not committed (a process that stopped between the two); True when
        there was something."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        for temporary in self.records_dir.rglob(".*.tmp"):  # a copy cut short (SIGKILL) in _copy_atomic
            if temporary.is_file():
                temporary.unlink()
        status = self._git("status", "--porcelain", "--", ".")
        if status.returncode != 0 or not status.stdout.strip():
            return False
        return self.commit_path(self.records_dir, "study records: kept before an interruption")


def _repository_of(path: Path) -> Path:
    """The git work tree holding ``path`` (its nearest existing folder), or ``path`` outside one."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=probe, capture_output=True,
                                text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return path
    return Path(result.stdout.strip()) if result.returncode == 0 else path
