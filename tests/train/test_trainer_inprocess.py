"""The Trainer in-process on tiny runs: mixed precision, divergence, run-directory rules, streaming loader."""

from __future__ import annotations

import pytest
import torch

from slac.heads.losses import HeadLoss
from slac.train import ConfigError, Trainer, load_config
from slac.train.data import StreamingLoader

TINY = ["--train_subset", "64", "--test_subset", "64", "--batch_size", "32", "--progress", "false",
        "--tensorboard", "off", "--form", "cnn", "--head", "linear", "--epochs", "1"]  # fmt: skip


def tiny(tmp_path, *flags):
    return load_config(None, [*TINY, "--out_dir", str(tmp_path), *flags])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, amp):
    trainer = Trainer(tiny(tmp_path, "--amp", amp), log=lambda message: None)
    assert (trainer.scaler is not None) == (amp == "fp16")
    summary = trainer.fit()
    assert summary["steps"] == 2 and 0.0 <= summary["final_test_top1"] <= 100.0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


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
