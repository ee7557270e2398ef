"""The parts of the training package, in-process: checkpoints, schedule, metrics files, batch norm."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch
from torch import nn

from slac.train import (
    CheckpointError,
    DistributedBatchNorm,
    convert_sync_batchnorm,
    load_checkpoint,
    lr_factor,
    save_checkpoint,
)
from slac.train.checkpoint import get_rng_state, set_rng_state
from slac.train.records import MetricsWriter, accuracy_counts, read_metrics


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    state = {"model": {"w": torch.randn(3, 2)}, "epoch": 3, "history": [{"epoch": 1, "test_top1": 50.0}]}
    path = save_checkpoint(state, tmp_path / "run" / "checkpoints" / "last.pt")
    loaded = load_checkpoint(tmp_path / "run")  # a run directory means its checkpoints/last.pt
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 3
    assert torch.load(path, weights_only=True)["format"] == "slac-checkpoint-1"
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    good = save_checkpoint({"epoch": 1, "model": {"w": torch.randn(100, 100)}}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a slac-checkpoint-1 checkpoint"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "slac-checkpoint-1", "object": nn.Linear(2, 2)}, pickled)  # needs unpickling code
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(pickled)


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. a signal in the middle of writing

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = get_rng_state()
    path = save_checkpoint({"rng": state}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_lr_schedules():
    total = 100
    assert lr_factor(0, total, 0, "cosine") == 1.0
    assert lr_factor(50, total, 0, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, total, 0, "cosine") == pytest.approx(0.0)
    assert [lr_factor(s, total, 0, "step") for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert [lr_factor(s, total, 10, "cosine") for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(55, total, 10, "cosine") == pytest.approx(0.5)  # cosine over the steps after warm-up
    assert lr_factor(77, total, 0, "constant") == 1.0


def test_metrics_csv_is_rewritten_from_history(tmp_path):
    writer = MetricsWriter(tmp_path, "off", start_epoch=0)
    history = [
        {"epoch": 1, "train_loss": 2.5, "lr": 0.1},
        {"epoch": 2, "train_loss": 1.25, "lr": 0.05, "test_top1": 50.0},
    ]
    writer.write(history[:1])
    writer.write(history)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["test_top1"] == ""
    assert read_metrics(tmp_path) == [{**history[0], "test_top1": None}, history[1]]
    with pytest.raises(FileNotFoundError, match="slac run directory"):
        read_metrics(tmp_path / "elsewhere")


def test_accuracy_counts_top1_top5():
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0], [0.0, 0, 9, 0, 0, 0]])
    targets = torch.tensor([5, 5, 0])
    top1, top5 = accuracy_counts(logits, targets)
    assert (top1.item(), top5.item()) == (1, 2)  # 5 is the argmax of row 0; 5 is 6th of row 1; 0 ties low
    few = accuracy_counts(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    assert few[1].item() == 4  # with 3 classes, top-5 is every class


def test_distributed_batchnorm_without_a_process_group_is_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(4 * 36))
    model[1].weight.data.uniform_(0.5, 1.5)
    converted = convert_sync_batchnorm(
        nn.Sequential(
            *[m for m in [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(4 * 36)]]
        ),
        torch.device("cpu"),
    )
    converted.load_state_dict(model.state_dict())
    assert isinstance(converted[1], DistributedBatchNorm) and isinstance(converted[3], DistributedBatchNorm)
    x = torch.randn(8, 3, 8, 8)
    torch.testing.assert_close(converted(x), model(x))
    torch.testing.assert_close(converted[1].running_var, model[1].running_var)
    converted.eval(), model.eval()
    torch.testing.assert_close(converted(x), model(x))
