"""Nothing on disk is lost to a mistake: a failed resume, a failed --overwrite, an overwrite of a folder
that is not a run; a replaced run is kept until the new one has a checkpoint; a failed start is retried in
place."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tests.data.helpers import write_mnist

from slac.errors import CheckpointError, ConfigError
from slac.heads.losses import HeadLoss
from slac.train import Trainer, fit, load_config
from slac.train.run_dir import RunDirectory, inspect_run_dir

from .helpers import run_slac

QUIET = ["--progress", "false", "--tensorboard", "off"]
TINY = ["--train_subset", "64", "--test_subset", "64", "--batch_size", "32", *QUIET, "--form", "cnn",
        "--head", "linear", "--epochs", "1"]  # fmt: skip


def silent(message: str) -> None:
    pass


def tiny(tmp_path: Path, *flags: str):
    return load_config(None, [*TINY, "--out_dir", str(tmp_path), *flags])


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> SHA-256 of its bytes)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def finished_run(tmp_path: Path, *flags: str) -> Path:
    Trainer(tiny(tmp_path, *flags), log=silent).fit()
    run = tmp_path / "lenet_cnn_linear_digits_seed0"
    assert (run / "summary.json").is_file()
    return run


def test_a_failed_resume_of_a_finished_mnist_run_changes_nothing(tmp_path):
    """The issue's case, through the command: a finished MNIST-format run, then --resume with more epochs
    and a data root that does not exist: a clear error, and every file of the run as it was."""
    root = tmp_path / "mnist"
    write_mnist(root, n_train=40, n_test=20)
    flags = ["train", "--dataset", "mnist", "--data_root", str(root), "--model", "lenet", "--form", "cnn",
             "--head", "linear", "--epochs", "1", "--batch_size", "20", *QUIET,
             "--out_dir", str(tmp_path)]  # fmt: skip
    result = run_slac(*flags, "--name", "done")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "done"
    before = snapshot(run)
    result = run_slac(
        "train", "--resume", str(run), "--epochs", "2", "--data_root", str(tmp_path / "nowhere")
    )
    assert result.returncode == 2 and "nowhere" in result.stderr, result.stderr
    assert snapshot(run) == before  # summary.json, config.yaml (epochs 1, the old root) untouched


def test_a_resume_with_another_model_or_data_changes_nothing(tmp_path):
    run = finished_run(tmp_path)
    before = snapshot(run)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(ConfigError, match="resume it without model="):
        Trainer(resume=run, overrides={"epochs": 2}, model=other, log=silent)
    with pytest.raises(ConfigError, match="resume it without train_data="):
        images = torch.rand(40, 1, 8, 8)
        Trainer(resume=run, overrides={"epochs": 2}, log=silent,
                train_data=(images, torch.arange(40) % 10),
                test_data=(images, torch.arange(40) % 10))  # fmt: skip
    assert snapshot(run) == before


def test_resuming_a_model_of_ones_own_with_another_architecture_changes_nothing(tmp_path):
    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 10

    def model(width: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width), torch.nn.ReLU(),
                                   torch.nn.Linear(width, 10))  # fmt: skip

    fit(model(16), (images, labels), (images, labels), epochs=1, out_dir=str(tmp_path), name="mine",
        log=silent, progress=False, tensorboard="off")  # fmt: skip
    before = snapshot(tmp_path / "mine")
    with pytest.raises(CheckpointError, match="weights do not fit the model"):
        Trainer(resume=tmp_path / "mine", overrides={"epochs": 2}, model=model(32), log=silent,
                train_data=(images, labels), test_data=(images, labels))  # fmt: skip
    assert snapshot(tmp_path / "mine") == before


def test_a_failed_overwrite_leaves_the_old_run_whole(tmp_path):
    """The issue's case: --overwrite with a batch larger than the data and drop_last: an error, and the
    run in that directory as it was (before, only a new config.yaml was left)."""
    common = ["train", *TINY, "--out_dir", str(tmp_path), "--name", "ok1"]
    assert run_slac(*common).returncode == 0
    before = snapshot(tmp_path / "ok1")
    result = run_slac(*common, "--overwrite", "--batch_size", "100000", "--drop_last", "true")
    assert result.returncode == 2 and "no training step per epoch" in result.stderr, result.stderr
    assert snapshot(tmp_path / "ok1") == before


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 10
    collection = tmp_path / "collection"
    finished_run(collection)  # another run inside it
    (collection / "notes.txt").write_text("mine\n")
    before = snapshot(collection)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(FileExistsError, match=r"is not a slac run directory .*notes\.txt"):
        fit(model, (images, labels), (images, labels), out_dir=str(tmp_path), name="collection",
            overwrite=True, log=silent, progress=False, tensorboard="off")  # fmt: skip
    assert snapshot(collection) == before
    assert inspect_run_dir(collection).kind == "not a run"
    (tmp_path / "plain.txt").write_text("x")
    assert inspect_run_dir(tmp_path / "plain.txt").kind == "not a run"


def test_a_replaced_run_comes_back_when_the_new_one_fails_before_its_first_checkpoint(tmp_path):
    run = finished_run(tmp_path)
    before = snapshot(run)
    trainer = Trainer(tiny(tmp_path, "--lr", "0.05"), overwrite=True, log=silent)
    original = trainer.model.loss

    def nan_loss(features, logits, targets):
        loss = original(features, logits, targets)
        return HeadLoss(loss.total * float("nan"), loss.parts, loss.weights)

    trainer.model.loss = nan_loss
    with pytest.raises(FloatingPointError):
        trainer.fit()
    assert snapshot(run) == before
    assert not list(tmp_path.glob(".*replaced*"))
    # A replacement that succeeds: the old run is gone once the new one has its checkpoint.
    Trainer(tiny(tmp_path, "--lr", "0.05"), overwrite=True, log=silent).fit()
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == 0.05
    assert not list(tmp_path.glob(".*replaced*"))


def test_a_replaced_run_waits_aside_until_the_first_checkpoint(tmp_path):
    """Killed between the move aside and the first checkpoint (simulated by stopping after ``start``): the
    old run is whole beside the new directory, and the next attempt says where it is."""
    run = finished_run(tmp_path)
    before = snapshot(run)
    directory = RunDirectory(run, silent)
    directory.check_new(overwrite=True)
    directory.start(tiny(tmp_path))
    directory.finish()  # the process is killed here: the lock goes with it
    aside = list(tmp_path.glob(".lenet_cnn_linear_digits_seed0.replaced-*"))
    assert len(aside) == 1 and snapshot(aside[0]) == before
    assert inspect_run_dir(run).kind == "failed start"
    notes = []
    RunDirectory(run, notes.append).check_new(overwrite=False)  # a failed start is started again
    assert any("stopped before its first checkpoint" in note for note in notes)
    assert any(str(aside[0]) in note and "to get it back: rm -r" in note for note in notes)


def test_a_failed_start_is_retried_in_place_and_cannot_be_resumed(tmp_path):
    run = tmp_path / "lenet_cnn_linear_digits_seed0"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(tiny(tmp_path).to_dict()))
    with pytest.raises(CheckpointError, match=r"stopped before writing one\. Start it again"):
        Trainer(resume=run, log=silent)
    notes = []
    Trainer(tiny(tmp_path), log=notes.append).fit()  # no --overwrite needed: nothing would be lost
    assert (run / "summary.json").is_file() and any("starting it again" in note for note in notes)


def test_resume_refuses_other_data_and_edited_recipes(tmp_path):
    """A resumed run checks its data against the checkpoint's fingerprint (sizes, classes, a sample's hash);
    config.yaml edits to keys a resumed run cannot change are refused, those it can change are applied."""
    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 10

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    fit(model(), (images, labels), (images, labels), epochs=1, out_dir=str(tmp_path), name="mine",
        log=silent, progress=False, tensorboard="off")  # fmt: skip
    run = tmp_path / "mine"
    before = snapshot(run)
    other = (torch.rand(80, 1, 8, 8), torch.arange(80) % 5)
    with pytest.raises(
        ConfigError, match=r"train split: images 80, the run's were 40.*classes 5, the run's were 10"
    ):
        Trainer(
            resume=run, overrides={"epochs": 2}, model=model(), train_data=other, test_data=other, log=silent
        )
    shuffled = (images.flip(0), labels)
    with pytest.raises(ConfigError, match="other images and labels in the same sizes"):
        Trainer(resume=run, overrides={"epochs": 2}, model=model(), train_data=shuffled,
                test_data=(images, labels), log=silent)  # fmt: skip
    assert snapshot(run) == before

    recipe = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**recipe, "lr": 0.5}))
    with pytest.raises(
        ConfigError, match=r"differs from the recipe its checkpoint was trained with in lr: 0.5"
    ):
        Trainer(
            resume=run, model=model(), train_data=(images, labels), test_data=(images, labels), log=silent
        )
    (run / "config.yaml").write_text(yaml.safe_dump({**recipe, "epochs": 2}))
    notes = []
    trainer = Trainer(resume=run, model=model(), train_data=(images, labels), test_data=(images, labels),
                      log=notes.append)  # fmt: skip
    assert trainer.config.epochs == 2 and any("sets epochs: 2" in note for note in notes)
    assert trainer.fit()["epochs"] == 2


def test_a_resumed_run_changes_its_directory_only_with_its_first_checkpoint(tmp_path):
    run = finished_run(tmp_path)
    before = snapshot(run)
    trainer = Trainer(resume=run, overrides={"epochs": 2, "tensorboard": "on"}, log=silent)
    assert snapshot(run) == before  # building the trainer wrote nothing
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 1
    trainer.fit()
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2
    assert yaml.safe_load((run / "summary.json").read_text())["epochs"] == 2


def test_a_moved_run_directory_resumes_and_records_where_it_is(tmp_path):
    run = finished_run(tmp_path)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(run, moved)
    trainer = Trainer(resume=moved, overrides={"epochs": 2}, log=silent)
    assert trainer.run_dir == moved and trainer.config.run_dir.resolve() == moved.resolve()


def test_a_run_being_trained_is_neither_replaced_nor_restarted_nor_resumed(tmp_path):
    """A run in its first epoch looks like a failed start (a config.yaml and nothing else) but holds the
    run's lock while its process lives: a second process is refused."""
    import fcntl

    run = tmp_path / "lenet_cnn_linear_digits_seed0"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(tiny(tmp_path).to_dict()))
    (run / "checkpoints").mkdir()
    with (run / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the training process holds it
        assert inspect_run_dir(run).in_use
        with pytest.raises(FileExistsError, match="is being trained by another process"):
            Trainer(tiny(tmp_path), overwrite=True, log=silent)
        (run / "checkpoints" / "last.pt").write_bytes(b"")
        with pytest.raises(FileExistsError, match="is being trained by another process"):
            Trainer(resume=run, log=silent)
    assert not inspect_run_dir(run).in_use  # released when its holder closes it (or dies)


def test_two_trainers_of_one_directory_do_not_write_over_each_other(tmp_path):
    first = Trainer(tiny(tmp_path), log=silent)
    second = Trainer(tiny(tmp_path, "--lr", "0.05"), log=silent)  # both checked an absent directory
    first.fit()
    before = snapshot(first.run_dir)
    with pytest.raises(FileExistsError, match="changed since this run was checked"):
        second.fit()
    assert snapshot(first.run_dir) == before


def test_a_cut_short_deletion_is_finished_and_the_advice_suits_the_folder(tmp_path):
    run = tmp_path / "lenet_cnn_linear_digits_seed0"
    (tmp_path / ".lenet_cnn_linear_digits_seed0.deleting-1").mkdir()
    aside = tmp_path / ".lenet_cnn_linear_digits_seed0.replaced-1"
    aside.mkdir()
    notes = []
    RunDirectory(run, notes.append).check_new(overwrite=False)
    assert not (tmp_path / ".lenet_cnn_linear_digits_seed0.deleting-1").exists()
    assert any(f"mv {aside} {run};" in note for note in notes)  # nothing in the way: a plain move
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(tiny(tmp_path).to_dict()))
    notes.clear()
    RunDirectory(run, notes.append).check_new(overwrite=False)
    assert any(f"rm -r {run} && mv {aside} {run}" in note for note in notes)


def test_resuming_from_a_checkpoint_older_than_last_is_refused(tmp_path):
    run = finished_run(tmp_path)
    shutil.copy(run / "checkpoints" / "last.pt", run / "checkpoints" / "epoch1.pt")
    Trainer(resume=run, overrides={"epochs": 2}, log=silent).fit()
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"epoch1\.pt \(epoch 1\) is older than .*last\.pt \(epoch 2\)"):
        Trainer(resume=run / "checkpoints" / "epoch1.pt", overrides={"epochs": 3}, log=silent)
    assert snapshot(run) == before
    # the newest checkpoint named explicitly is fine
    Trainer(resume=run / "checkpoints" / "last.pt", overrides={"epochs": 3}, log=silent)


def test_a_run_of_ones_own_written_by_the_previous_version_resumes(tmp_path):
    """The previous version recorded head slac and form ann for any model passed to fit, and no data
    fingerprint: such a run resumes, and is recorded as what it is from its first new checkpoint."""
    from slac.train import load_checkpoint, save_checkpoint

    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 10

    def model():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    fit(model(), (images, labels), (images, labels), epochs=1, out_dir=str(tmp_path), name="old",
        log=silent, progress=False, tensorboard="off")  # fmt: skip
    run = tmp_path / "old"
    state = load_checkpoint(run)
    del state["data"], state["format"]
    state["config"] = {**state["config"], "form": "ann", "head": "slac"}
    save_checkpoint(state, run / "checkpoints" / "last.pt")
    (run / "config.yaml").write_text(yaml.safe_dump(state["config"]))
    notes = []
    trainer = Trainer(resume=run, overrides={"epochs": 2}, model=model(), train_data=(images, labels),
                      test_data=(images, labels), log=notes.append)  # fmt: skip
    assert any("predates records read from the model" in note for note in notes), notes
    assert any("predates data fingerprints" in note for note in notes), notes
    trainer.fit()
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert (recorded["form"], recorded["head"]) == ("cnn", "custom")
    # a run written by this version is checked: another head than it trained is refused
    with pytest.raises(ConfigError, match="the run trained head 'custom', the model passed: 'linear'"):
        Trainer(resume=run, overrides={"epochs": 3}, model=torch.nn.Flatten(), head="linear",
                train_data=(images, labels), test_data=(images, labels), log=silent)  # fmt: skip
