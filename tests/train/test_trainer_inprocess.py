"""The Trainer in-process on tiny runs: mixed precision, divergence, run-directory rules, streaming loader."""

from __future__ import annotations

import math

import pytest
import torch

from slac.heads.losses import HeadLoss
from slac.train import ConfigError, Trainer, evaluate, load_config
from slac.train.data import StreamingLoader

TINY = ["--train_subset", "64", "--test_subset", "64", "--batch_size", "32", "--progress", "false",
        "--tensorboard", "off", "--form", "cnn", "--head", "linear", "--epochs", "1"]  # fmt: skip


def tiny(tmp_path, *flags):
    return load_config(None, [*TINY, "--out_dir", str(tmp_path), *flags])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, amp):
    """Two steps under autocast: every weight moves (a GradScaler that skipped every step, or gradients that
    never reached a parameter, would leave some where they started), stays finite, and the logged test
    accuracy is the one an independent evaluation of the trained weights gives."""
    trainer = Trainer(tiny(tmp_path, "--amp", amp), log=lambda message: None)
    assert (trainer.scaler is not None) == (amp == "fp16")
    initial = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    summary = trainer.fit()
    assert summary["steps"] == 2
    for name, p in trainer.model.named_parameters():
        assert torch.isfinite(p).all(), name
        assert not torch.equal(p.detach(), initial[name]), f"{name} did not change"
    assert math.isfinite(trainer.history[-1]["train_loss"]) and trainer.history[-1]["train_loss"] > 0
    again = evaluate(trainer.module, trainer.data.test, trainer.device, amp)
    assert again["count"] == 64 and again["top1"] == summary["final_test_top1"]


def test_a_diverging_loss_stops_the_run_with_a_clear_error(tmp_path):
    trainer = Trainer(tiny(tmp_path), log=lambda message: None)
    original = trainer.model.loss

    def nan_loss(features, logits, targets):
        loss = original(features, logits, targets)
        return HeadLoss(loss.total * float("nan"), loss.parts, loss.weights)

    trainer.model.loss = nan_loss
    with pytest.raises(FloatingPointError, match="training loss became nan in epoch 1"):
        trainer.fit()


def test_run_directory_rules(tmp_path):
    Trainer(tiny(tmp_path), log=lambda message: None).fit()
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(tiny(tmp_path), log=lambda message: None)
    with pytest.raises(ConfigError, match="cannot change in a resumed run"):
        Trainer(resume=tmp_path / "lenet_cnn_linear_digits_seed0", overrides={"lr": 1.0})
    assert Trainer(tiny(tmp_path), overwrite=True, log=lambda message: None).epoch == 0
    with pytest.raises(ConfigError, match="train_subset: 5000 is more than the 1437 images"):
        Trainer(tiny(tmp_path, "--train_subset", "5000", "--name", "other"), log=lambda message: None)
    with pytest.raises(ConfigError, match="img_size"):
        Trainer(
            tiny(tmp_path, "--model_options.img_size", "28", "--name", "other2"), log=lambda message: None
        )


class _Numbers(torch.utils.data.Dataset):
    def __len__(self):
        return 23

    def __getitem__(self, index):
        return torch.full((1, 2, 2), float(index)), index


def _epoch(loader):
    return [labels.tolist() for _, labels in loader]


def test_streaming_loader_shards_and_resumes_inside_an_epoch():
    single = StreamingLoader(_Numbers(), 4, True, torch.device("cpu"), seed=3, workers=0)
    first = _epoch(single)
    assert sorted(i for batch in first for i in batch) == list(range(23)) and len(single) == 6
    assert _epoch(single) != first  # a new order each epoch
    shards = [
        StreamingLoader(_Numbers(), 4, True, torch.device("cpu"), 3, 0, rank=r, world_size=2) for r in (0, 1)
    ]
    seen = [[i for batch in _epoch(s) for i in batch] for s in shards]
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == 11
    loader = StreamingLoader(_Numbers(), 4, True, torch.device("cpu"), seed=3, workers=0)
    iterator = iter(loader)
    taken = [next(iterator)[1].tolist() for _ in range(2)]
    state = loader.state_dict()
    resumed = StreamingLoader(_Numbers(), 4, True, torch.device("cpu"), seed=3, workers=0)
    resumed.load_state_dict(state)
    assert taken + _epoch(resumed) == first
    with pytest.raises(ConfigError, match="divisible"):
        StreamingLoader(_Numbers(), 5, True, torch.device("cpu"), 3, 0, rank=0, world_size=2)


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("stop_at", [1, 2])  # inside the epoch, and on its last batch
def test_a_stop_signal_resumes_exactly_wherever_it_lands(tmp_path, stop_at):
    import signal

    from slac.train import TrainingInterrupted, evaluate_checkpoint

    reference = Trainer(tiny(tmp_path, "--epochs", "2", "--name", "reference"), log=lambda message: None)
    reference.fit()
    trainer = Trainer(tiny(tmp_path, "--epochs", "2", "--name", "stopped"), log=lambda message: None)
    original = trainer._train_step

    def step(images, labels):
        original(images, labels)
        if trainer.step == stop_at:
            trainer._stop_signal = signal.SIGTERM

    trainer._train_step = step
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    resumed = Trainer(resume=tmp_path / "stopped", log=lambda message: None)
    resumed.fit()
    timing = {"epoch_seconds", "train_images_per_s"}

    def results(history):
        return [{k: v for k, v in row.items() if k not in timing} for row in history]

    assert resumed.step == reference.step == 4
    assert results(resumed.history) == results(reference.history)
    for key, value in _weights(reference).items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    result = evaluate_checkpoint(tmp_path / "stopped")
    assert result["count"] == 64 and result["top1"] == result["logged_test_top1"]  # the run's test_subset
    with pytest.raises(ConfigError, match="has completed 2 epochs"):
        Trainer(resume=tmp_path / "stopped", overrides={"epochs": 1})


def test_empty_checkpoint_and_zero_steps_are_clear_errors(tmp_path):
    from slac.train import CheckpointError, load_checkpoint

    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(ConfigError, match="no training step per epoch"):
        Trainer(tiny(tmp_path, "--train_subset", "16", "--drop_last", "true"), log=lambda message: None)
