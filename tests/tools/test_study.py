"""``tools.study``: planned runs skipped when kept, resumed after an interruption to the same weights
as an uninterrupted run, records and analysis copied, only those paths committed."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from slac.errors import ConfigError
from slac.train import Trainer, TrainingInterrupted, load_checkpoint
from tools.study import RECORD_FILES, PlannedRun, Study, machine_entry

ROOT = Path(__file__).parents[2]
RECIPE = str(ROOT / "configs" / "digits" / "lenet_ann_slac.yaml")
SMALL = {"epochs": 2, "train_subset": 128, "batch_size": 32, "progress": False, "tensorboard": "off",
         "device": "cpu"}  # fmt: skip


def planned(name: str = "slac_seed0", **overrides) -> PlannedRun:
    return PlannedRun("main", name, RECIPE, 0, {**SMALL, **overrides})


def interrupt_at(monkeypatch, step_checks: int) -> None:
    """Make the trainer see a stop request at its ``step_checks``-th check (mid-epoch)."""
    calls = {"n": 0}

    def should_stop(self) -> bool:
        calls["n"] += 1
        return calls["n"] == step_checks

    monkeypatch.setattr(Trainer, "_should_stop", should_stop)


def interrupted_study(tmp_path) -> tuple[Study, PlannedRun]:
    """A study whose one-epoch run was stopped at its second step check (its checkpoint kept)."""
    study = Study(tmp_path / "runs", tmp_path / "records", log=lambda m: None)
    run = planned(epochs=1)
    with pytest.MonkeyPatch.context() as patch:
        interrupt_at(patch, 2)
        with pytest.raises(TrainingInterrupted):
            study.execute(run)
    return study, run


def test_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    study = Study(tmp_path / "runs", tmp_path / "records", log=lambda m: None)
    run, reference = planned(), planned("reference")
    assert study.state(run) == "new"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3)  # inside the first epoch (4 steps)
        with pytest.raises(TrainingInterrupted):
            study.execute(run)
    assert study.state(run) == "partial (0 of 2 epochs done; epoch 1 at batch 3)"
    assert not (study.records(run) / "summary.json").exists()  # nothing kept before the end
    summary = study.execute(run)
    assert summary is not None and summary["epochs"] == 2 and study.state(run) == "done"
    study.execute(reference)
    resumed = load_checkpoint(study.run_dir(run) / "checkpoints" / "last.pt")["model"]
    uninterrupted = load_checkpoint(study.run_dir(reference) / "checkpoints" / "last.pt")["model"]
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key
    kept = sorted(p.name for p in study.records(run).iterdir())
    assert kept == sorted([*RECORD_FILES, "machine.json"])  # no checkpoints among the records
    machines = json.loads((study.records(run) / "machine.json").read_text())
    assert [m["ended"] for m in machines] == ["interrupted", "finished"]
    assert machines[0]["to_step"] == machines[1]["from_step"] == 3 and machines[1]["to_epoch"] == 2
    assert study.execute(run) is None  # kept: skipped


def test_a_killed_process_leaves_its_entry(tmp_path, monkeypatch):
    study, run = interrupted_study(tmp_path)

    def killed(self):
        raise KeyboardInterrupt  # stands for SIGKILL: no handler runs, nothing is written after it

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "fit", killed)
        with pytest.raises(KeyboardInterrupt):
            study.execute(run)
    study.execute(run)
    machines = json.loads((study.records(run) / "machine.json").read_text())
    assert [m["ended"] for m in machines] == ["interrupted", None, "finished"]
    assert all(m["code"] for m in machines)
    assert "to_step" not in machines[1] and machines[1]["from_step"] == 2


def test_a_kept_run_needs_the_planned_epochs_and_a_changed_plan_does_not_resume(tmp_path, monkeypatch):
    study = Study(tmp_path / "runs", tmp_path / "records", log=lambda m: None)
    run = planned()
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        with pytest.raises(TrainingInterrupted):
            study.execute(run)
    with pytest.raises(ConfigError, match=r"another recipe .*lr"):
        study.execute(planned(lr=0.05))
    study.execute(run)
    assert not study.is_done(planned(epochs=3))  # a longer plan is not done by a 2-epoch record


def test_a_failing_analysis_keeps_the_run_and_is_tried_again(tmp_path):
    calls = []

    def analyze(run_dir):
        calls.append(run_dir)
        if len(calls) == 1:
            raise RuntimeError("no features")
        return {"figure": 1}

    messages = []
    study = Study(tmp_path / "runs", tmp_path / "records", analyze=analyze, log=messages.append)
    run = planned(epochs=1)
    study.execute(run)
    assert study.is_done(run) and not (study.records(run) / "analysis.json").exists()
    assert any("analysis failed (RuntimeError: no features)" in m for m in messages)
    assert study.analyze_missing([run]) == ["main/slac_seed0"]
    assert json.loads((study.records(run) / "analysis.json").read_text()) == {"figure": 1}
    assert study.analyze_missing([run]) == []


def _git_repo(path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout

    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    git("config", "commit.gpgsign", "false")
    return git


def test_commit_takes_only_the_records_whatever_the_working_directory(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    git = _git_repo(repo)
    (repo / "other.txt").write_text("staged, not the study's\n")
    git("add", "other.txt")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not inside the repository
    study = Study(tmp_path / "runs", repo / "records", commit=True, log=lambda m: None)
    run = PlannedRun("main", "slac_seed0", str(ROOT / RECIPE), 0, {**SMALL, "epochs": 1})
    study.execute(run)
    committed = git("show", "--name-only", "--format=%s", "HEAD").split()
    assert committed[:3] == ["study", "records:", "main/slac_seed0"]
    names = (*RECORD_FILES, "machine.json")
    assert sorted(committed[3:]) == sorted(f"records/main/slac_seed0/{n}" for n in names)
    assert "other.txt" in git("diff", "--cached", "--name-only")  # still staged, not committed
    # Records kept but not committed (a stop between the two) are committed on the next start.
    (repo / "records" / "main" / "slac_seed0" / "extra.json").write_text("{}")
    assert study.commit_pending() and "extra.json" in git("show", "--name-only", "HEAD")
    assert not study.commit_pending()


def test_a_held_index_lock_is_waited_for_and_a_stale_one_named(tmp_path, monkeypatch):
    import tools.study as study_module

    repo = tmp_path / "repo"
    git = _git_repo(repo)
    messages = []
    study = Study(tmp_path / "runs", repo / "records", commit=True, log=messages.append)
    (repo / "records" / "main").mkdir(parents=True)
    (repo / "records" / "main" / "a.json").write_text("{}")
    (repo / "records" / "main" / ".a.json.x1.tmp").write_text("cut short")  # a SIGKILL in a copy
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    waits = []

    def released_after_one_wait(seconds):  # another git process finishes meanwhile
        waits.append(seconds)
        lock.unlink(missing_ok=True)

    monkeypatch.setattr(study_module.time, "sleep", released_after_one_wait)
    assert study.commit_pending() and waits == [2]
    assert git("show", "--name-only", "--format=", "HEAD").split() == ["records/main/a.json"]
    (repo / "records" / "main" / "b.json").write_text("{}")
    lock.write_text("")  # left by a git process that died: never released
    monkeypatch.setattr(study_module.time, "sleep", lambda seconds: None)
    assert not study.commit_pending()
    assert "if no git process is running, remove the index.lock" in messages[-1]


def test_a_signal_while_the_records_are_kept_finishes_them_then_stops(tmp_path):
    import os

    def analyze(run_dir):
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, after training, during the analysis
        return {"figure": 1}

    study = Study(tmp_path / "runs", tmp_path / "records", analyze=analyze, log=lambda m: None)
    run = planned(epochs=1)

    def guard(signum, frame):  # should the study's handler not be in place, the signal is noted here
        pytest.fail("SIGTERM reached the test's own handler")

    before = signal.signal(signal.SIGTERM, guard)
    try:
        with pytest.raises(TrainingInterrupted):
            study.execute(run)
        assert signal.getsignal(signal.SIGTERM) is guard  # the handlers are put back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert study.is_done(run)
    assert json.loads((study.records(run) / "analysis.json").read_text()) == {"figure": 1}


def test_a_second_signal_waits_for_a_deferred_block():
    from slac.train.signals import StopFlag

    flag, done = StopFlag(), []
    flag(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt), flag.deferred():
        flag(signal.SIGTERM, None)  # during a commit: noted, not raised
        done.append("the commit finished")
    assert done == ["the commit finished"]
    with pytest.raises(KeyboardInterrupt):
        flag(signal.SIGTERM, None)  # outside a deferred block: at once


def test_a_signal_while_the_trainer_is_built_stops_before_training(tmp_path, monkeypatch):
    import os

    study = Study(tmp_path / "runs", tmp_path / "records", log=lambda m: None)
    run = planned(epochs=1)
    built = Study._trainer

    def signalled(self, planned_run):
        trainer = built(self, planned_run)
        os.kill(os.getpid(), signal.SIGTERM)
        return trainer

    monkeypatch.setattr(Study, "_trainer", signalled)
    with pytest.raises(TrainingInterrupted):
        study.execute(run)
    machines = json.loads(study.machine_file(run).read_text())
    assert machines[-1]["ended"] == "interrupted" and machines[-1]["to_step"] == 0


def test_a_machine_record_inside_the_run_directory_moves_beside_it(tmp_path):
    """An earlier version kept machine.json inside the run directory, which slac train now refuses to
    replace (a file a run does not write): the study moves it beside the run and keeps its entries."""
    study, run = interrupted_study(tmp_path)
    study.machine_file(run).rename(study.run_dir(run) / "machine.json")
    study.execute(run)
    assert not (study.run_dir(run) / "machine.json").exists()
    machines = json.loads((study.records(run) / "machine.json").read_text())
    assert [m["ended"] for m in machines] == ["interrupted", "finished"]


def test_a_signal_after_the_last_step_check_keeps_the_run_then_stops(tmp_path, monkeypatch):
    study = Study(tmp_path / "runs", tmp_path / "records", log=lambda m: None)
    run = planned(epochs=1)
    original = Trainer._train_step

    def last_step_signalled(self, images, labels):
        original(self, images, labels)
        if self.step == self.steps_per_epoch * self.config.epochs:
            self.stop(signal.SIGTERM, None)  # as the signal would, during the last step

    monkeypatch.setattr(Trainer, "_train_step", last_step_signalled)
    with pytest.raises(TrainingInterrupted):
        study.execute(run)
    assert study.is_done(run) and (study.records(run) / "summary.json").is_file()


def test_a_checkpoint_of_another_seed_is_not_resumed(tmp_path, monkeypatch):
    study = Study(tmp_path / "runs", tmp_path / "records", log=lambda m: None)
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        with pytest.raises(TrainingInterrupted):
            study.execute(planned())
    other_seed = PlannedRun("main", "slac_seed0", RECIPE, 1, {**SMALL})
    with pytest.raises(ConfigError, match=r"another recipe \(differs in seed\)"):
        study.execute(other_seed)


def test_a_restart_from_scratch_keeps_the_earlier_entries(tmp_path, monkeypatch):
    study = Study(tmp_path / "runs", tmp_path / "records", log=lambda m: None)
    run = planned(epochs=1)

    def killed(self):
        raise KeyboardInterrupt  # before any checkpoint: the next start is from scratch

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "fit", killed)
        with pytest.raises(KeyboardInterrupt):
            study.execute(run)
    assert study.state(run) == "new"
    study.execute(run)
    machines = json.loads((study.records(run) / "machine.json").read_text())
    assert [m["ended"] for m in machines] == [None, "finished"]


def test_a_diverged_run_is_recorded_as_failed(tmp_path, monkeypatch):
    import slac.train.trainer as trainer_module

    study = Study(tmp_path / "runs", tmp_path / "records", log=lambda m: None)
    run = planned(epochs=2)  # 4 steps an epoch; the loss turns non-finite in the second epoch
    original, calls = trainer_module.train_step, {"n": 0}

    def diverging_step(*args, **kwargs):
        logits, total, parts = original(*args, **kwargs)
        calls["n"] += 1
        return logits, total * float("nan") if calls["n"] > 4 else total, parts

    monkeypatch.setattr(trainer_module, "train_step", diverging_step)
    assert study.execute(run) is None
    assert study.is_done(run) and study.state(run).startswith("failed (the training loss became nan")
    failed = json.loads((study.records(run) / "failed.json").read_text())
    assert failed["epoch"] == 2 and "in epoch 2" in failed["error"]
    assert json.loads((study.records(run) / "machine.json").read_text())[-1]["ended"] == "failed"
    assert not (study.records(run) / "summary.json").exists()


def test_one_study_process_per_runs_dir(tmp_path):
    study = Study(tmp_path / "runs", tmp_path / "records")
    other = Study(tmp_path / "runs", tmp_path / "other")
    with study.lock(), pytest.raises(ConfigError, match="another study process holds"), other.lock():
        pass
    with study.lock():  # released
        pass


def test_a_corrupt_summary_says_what_to_do(tmp_path):
    study = Study(tmp_path / "runs", tmp_path / "records")
    run = planned()
    study.records(run).mkdir(parents=True)
    (study.records(run) / "summary.json").write_text('{"epochs": 2, "final')
    with pytest.raises(ConfigError, match=r"not valid JSON .*restore it from git, or delete it"):
        study.is_done(run)


def test_machine_entry_names_the_cpu_and_software():
    from tools.study import loaded_code

    entry = machine_entry()
    assert entry["cpu"] and entry["torch"] == torch.__version__ and entry["threads"] >= 1
    if Path("/proc/cpuinfo").is_file():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = set(
            next((line for line in lines if line.startswith("flags")), "flags:").split(":", 1)[1].split()
        )
        assert ("avx2" in entry["extensions"]) == ("avx2" in flags)
        assert ("amx_tile" in entry["extensions"]) == ("amx_tile" in flags)
    assert entry["code"] == loaded_code()


GIT_IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false")


def test_the_code_version_covers_the_code_paths_and_the_loaded_one_is_taken_once(tmp_path, monkeypatch):
    import tools.study as study_module
    from tools.study import code_version, loaded_code

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for path in ("src/slac/x.py", "scripts/s.py", "docs/r.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git(*GIT_IDENTITY, "commit", "-q", "-m", "one")
    source = tmp_path / "src" / "slac"
    first = code_version(source)
    assert len(first["commit"]) == 40 and not first["dirty"] and first["changed"] == []
    (tmp_path / "docs" / "r.md").write_text("2\n")  # records and docs are not code
    (tmp_path / "scripts" / "s.py").write_text("2\n")
    (tmp_path / "src" / "slac" / "new.py").write_text("1\n")  # a new module, not yet tracked
    now = code_version(source)
    assert now["changed"] == ["scripts/s.py", "src/slac/new.py"] and now["dirty"]
    # This process's code: taken at the first call, unchanged by what happens in the checkout later.
    taken = loaded_code()
    monkeypatch.setattr(study_module, "code_version", lambda source=None: {"commit": "moved"})
    assert loaded_code() == taken and loaded_code() is not loaded_code()  # fresh copies of it
    Study(tmp_path / "runs", tmp_path / "records")
    assert machine_entry()["code"] == taken


def test_kept_records_name_paths_relative_to_the_repository(tmp_path):
    """Records meant for git hold no machine's paths: out_dir and run_dir relative to ``root``."""
    study = Study(tmp_path / "runs", tmp_path / "records", log=lambda m: None, root=tmp_path)
    run = planned(epochs=1)
    study.execute(run)
    config = yaml.safe_load((study.records(run) / "config.yaml").read_text())
    summary = json.loads((study.records(run) / "summary.json").read_text())
    assert config["out_dir"] == summary["config"]["out_dir"] == "runs/main"
    assert summary["run_dir"] == "runs/main/slac_seed0"
    assert summary["checkpoints"] == {"last": "checkpoints/last.pt", "best": "checkpoints/best.pt"}
    # the run directory itself keeps what the trainer wrote; only the copies are rewritten
    assert json.loads((study.run_dir(run) / "summary.json").read_text())["run_dir"] == str(study.run_dir(run))


def test_the_committed_records_hold_no_absolute_paths():
    records = ROOT / "docs" / "reproduction" / "records"
    found = []
    for path in sorted(records.rglob("*")):
        if path.suffix in (".json", ".yaml"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if ': "/' in line or ": /" in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found[:10])
