"""Studies that outlive a process: a list of planned runs, executed in order, each one skipped when its
records are already kept, resumed from its checkpoint when it was interrupted, and its small records
copied to a results folder (which is committed) as soon as it finishes.

    from slac.train.study import PlannedRun, Study
    study = Study("runs/my-study", "docs/records/my-study")
    plan = [PlannedRun("main", "ann_seed0", "configs/x.yaml", seed=0, overrides={"epochs": 6})]
    study.status(plan)      # [("main", "ann_seed0", "new" | "partial (epoch 3 of 6)" | "done")]
    study.execute(plan[0])  # trains (or resumes), then copies the records

A run lives in ``runs_dir/<phase>/<name>/`` (config, metrics, summary, checkpoints; never committed); its
records in ``records_dir/<phase>/<name>/``:

    config.yaml, metrics.csv, summary.json   as ``slac train`` wrote them
    machine.json                             one entry per process that trained it: CPU, software,
                                             epochs covered, wall-clock seconds, how it ended
                                             ("finished", "interrupted", or null: killed)
    analysis.json                            what ``analyze`` returned (computed while the checkpoint exists)

A run is *done* when its records hold a summary.json of the planned number of epochs. Interrupted runs
keep their checkpoint; the next ``execute`` resumes from ``checkpoints/last.pt`` (inside an epoch when the
stop came mid-epoch, see ``Trainer``). A run directory without a usable checkpoint is started again.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slac.errors import CheckpointError, ConfigError
from slac.train.records import write_json_atomic

__all__ = ["RECORD_FILES", "PlannedRun", "Study", "cpu_model", "machine_entry"]

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


def machine_entry() -> dict[str, Any]:
    """What describes the process that trains: CPU model and count, the vector features numba targets,
    torch and numba versions, and the thread count."""
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
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        import numba
        from numba.core import config as numba_config

        entry["numba"] = numba.__version__
        features = {f.lstrip("+") for f in (numba_config.CPU_FEATURES or "").split(",")}
        if not features - {""}:
            import llvmlite.binding as llvm

            features = {name for name, on in llvm.get_host_cpu_features().items() if on}
        entry["vector"] = "avx512f" if "avx512f" in features else ("avx2" if "avx2" in features else "other")
    except ImportError:
        pass
    return entry


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); delete it or restore it from git") from None


class Study:
    """Executes planned runs under ``runs_dir`` and keeps their records in ``records_dir``.

    ``analyze(run_dir) -> dict`` (optional) runs after a run finishes, while its checkpoint exists; its
    result is kept as analysis.json. ``commit=True`` commits each run's records with git as soon as they are
    written (only those paths, whatever else the index holds).
    """

    def __init__(
        self,
        runs_dir: str | Path,
        records_dir: str | Path,
        analyze: Callable[[Path], dict[str, Any]] | None = None,
        commit: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.runs_dir, self.records_dir = Path(runs_dir), Path(records_dir)
        self.analyze, self.commit, self.log = analyze, commit, log

    def run_dir(self, run: PlannedRun) -> Path:
        return self.runs_dir / run.phase / run.name

    def records(self, run: PlannedRun) -> Path:
        return self.records_dir / run.phase / run.name

    # ------------------------------------------------------------------------------------------ status

    def is_done(self, run: PlannedRun) -> bool:
        summary = self.records(run) / "summary.json"
        if not summary.is_file():
            return False
        epochs = run.overrides.get("epochs")
        return epochs is None or _read_json(summary).get("epochs") == epochs

    def state(self, run: PlannedRun) -> str:
        """ "done", "partial (epoch k of n)" (a checkpoint to resume) or "new"."""
        if self.is_done(run):
            return "done"
        checkpoint = self.run_dir(run) / "checkpoints" / "last.pt"
        if checkpoint.is_file():
            from slac.train.checkpoint import load_checkpoint

            try:
                state = load_checkpoint(checkpoint)
            except CheckpointError:
                return "new (its checkpoint is unreadable)"
            total = state["config"].get("epochs")
            return f"partial (epoch {state.get('epoch', 0)} of {total})"
        return "new"

    def status(self, plan: list[PlannedRun]) -> list[tuple[str, str]]:
        return [(run.key, self.state(run)) for run in plan]

    # --------------------------------------------------------------------------------------- execution

    def _trainer(self, run: PlannedRun) -> Any:
        from slac.train import Trainer, load_config

        run_dir = self.run_dir(run)
        checkpoint = run_dir / "checkpoints" / "last.pt"
        if checkpoint.is_file():
            try:
                trainer = Trainer(resume=checkpoint)
            except CheckpointError as error:
                self.log(f"{run.key}: checkpoint unusable ({error}); starting again")
            else:
                self._check_resumed(run, trainer.config)
                self.log(f"{run.key}: resuming from {checkpoint} (epoch {trainer.epoch})")
                return trainer
        overrides = {**run.overrides, "seed": run.seed, "name": run.name, "out_dir": str(run_dir.parent)}
        self.log(f"{run.key}: starting ({run.config}, seed {run.seed})")
        return Trainer(load_config(run.config, overrides), overwrite=True)

    def _check_resumed(self, run: PlannedRun, config: Any) -> None:
        """The checkpoint must be of the planned recipe: a changed plan must not resume an older run."""
        from slac.train import load_config

        planned = load_config(run.config, {**run.overrides, "seed": run.seed, "name": run.name,
                                           "out_dir": str(self.run_dir(run).parent)}).to_dict()  # fmt: skip
        saved = config.to_dict()
        from slac.analysis.runs import EXECUTION_KEYS

        differ = sorted(k for k in planned if k not in EXECUTION_KEYS and planned[k] != saved.get(k))
        if differ:
            raise ConfigError(
                f"{self.run_dir(run)} holds a run of another recipe (differs in {', '.join(differ)}); "
                "move it away or delete it to start the planned run"
            )

    def execute(self, run: PlannedRun) -> dict[str, Any] | None:
        """Train (or resume) ``run`` to its end and keep its records; None when it was done already.
        ``TrainingInterrupted`` propagates after the checkpoint is written (and machine.json updated)."""
        if self.is_done(run):
            return None
        from slac.train import TrainingInterrupted

        trainer = self._trainer(run)
        # Logged before training, so that a process killed without a chance to write (SIGKILL) still
        # leaves its entry ("ended": null); completed when it stops or finishes.
        entry = machine_entry() | {"from_epoch": trainer.epoch, "from_step": trainer.step, "ended": None}
        self._log_machine(run, entry)
        started = time.perf_counter()
        try:
            summary = trainer.fit()
        except TrainingInterrupted:
            self._log_machine(run, entry | {"to_epoch": trainer.epoch, "to_step": trainer.step,
                                            "wall_seconds": time.perf_counter() - started,
                                            "ended": "interrupted"}, replace_last=True)  # fmt: skip
            raise
        self._log_machine(run, entry | {"to_epoch": trainer.epoch, "to_step": trainer.step,
                                        "wall_seconds": time.perf_counter() - started, "ended": "finished"},
                          replace_last=True)  # fmt: skip
        self.keep(run)
        return summary

    def _log_machine(self, run: PlannedRun, entry: dict[str, Any], replace_last: bool = False) -> None:
        path = self.run_dir(run) / "machine.json"
        entries = _read_json(path) if path.is_file() else []
        if replace_last:
            entries = entries[:-1]
        write_json_atomic(path, [*entries, entry])

    def keep(self, run: PlannedRun) -> Path:
        """Copy a finished run's records (and its analysis) to the records folder; commit them if asked."""
        source, target = self.run_dir(run), self.records(run)
        if not (source / "summary.json").is_file():
            raise FileNotFoundError(f"{source} has no summary.json: the run has not finished")
        target.mkdir(parents=True, exist_ok=True)
        for name in (*RECORD_FILES, "machine.json"):
            if (source / name).is_file():
                shutil.copy2(source / name, target / name)
        self._analyze(run)
        if self.commit:
            self._commit(target, f"study records: {run.key}")
        return target

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
            missing = self.is_done(run) and not (self.records(run) / "analysis.json").is_file()
            if missing and (self.run_dir(run) / "checkpoints" / "last.pt").is_file() and self._analyze(run):
                if self.commit:
                    self._commit(self.records(run), f"study analysis: {run.key}")
                done.append(run.key)
        return done

    def _commit(self, path: Path, message: str) -> None:
        for attempt in range(5):
            added = subprocess.run(["git", "add", "--", str(path)], capture_output=True, text=True)
            if added.returncode == 0:
                done = subprocess.run(
                    ["git", "commit", "-q", "-m", message, "--", str(path)], capture_output=True, text=True
                )
                if done.returncode == 0 or "nothing" in done.stdout + done.stderr:
                    return
                error = done.stderr
            else:
                error = added.stderr
            time.sleep(2 * (attempt + 1))  # another git process holds the index lock
        self.log(f"warning: could not commit {path}: {error.strip()}; commit it by hand")
