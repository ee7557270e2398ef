"""Errors early and in the user's terms: the model is checked against the data when the Trainer is built (one
forward of two images per split), before any step and before anything is written."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slac.errors import ConfigError
from slac.train import TrainConfig, Trainer, fit

from .helpers import SMALL_RUN, run_slac

QUIET = {"progress": False, "tensorboard": "off", "epochs": 1}


def silent(message: str) -> None:
    pass


def images(n: int, channels: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, 8, 8)


def mlp(inputs: int = 64, outputs: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, outputs))


def build(tmp_path, train, test, model=None):
    return Trainer(TrainConfig(out_dir=str(tmp_path), **QUIET), model=model or mlp(), train_data=train,
                   test_data=test, log=silent)  # fmt: skip


@pytest.mark.parametrize(
    ("train", "test", "model", "message"),
    [
        (
            (images(40), torch.arange(40) % 12),
            (images(8), torch.arange(8)),
            None,
            r"train split: labels lie in \[0, 11\], but the model gives 10 logits",
        ),
        (
            (images(40), torch.arange(40) % 10),
            (images(13), torch.arange(13)),
            None,
            r"test split: labels lie in \[0, 12\], but the model gives 10 logits",
        ),
        (
            (images(40), torch.arange(40) % 10),
            (images(8, channels=3), torch.arange(8)),
            None,
            r"test split: images of shape \(3, 8, 8\), but the training images are \(1, 8, 8\)",
        ),
        (
            (images(40), torch.arange(40) % 10),
            (images(0), torch.arange(0)),
            None,
            "test split: it has no images",
        ),
        (
            (images(40, channels=3), torch.arange(40) % 10),
            (images(8, channels=3), torch.arange(8)),
            None,
            r"train split: the model cannot take images of shape \(3, 8, 8\) \(RuntimeError: mat1",
        ),
        (
            (images(40), torch.arange(40) % 10),
            (images(8), torch.arange(8)),
            nn.Conv2d(1, 10, 3),
            r"model: it must give a tensor of shape \(N, width\), got \(2, 10, 6, 6\)",
        ),
    ],
    ids=["train-labels", "test-labels", "test-channels", "empty-test", "model-vs-images", "not-logits"],
)
def test_the_model_is_checked_against_the_data_before_the_first_step(tmp_path, train, test, model, message):
    with pytest.raises(ConfigError, match=message):
        build(tmp_path, train, test, model)
    assert not any(tmp_path.iterdir())  # nothing written


def test_an_empty_training_split_is_described_as_it_is(tmp_path):
    empty = (images(0), torch.arange(0))
    with pytest.raises(ConfigError, match="the 0 training images are none of 64; give a training split"):
        build(tmp_path, empty, (images(8), torch.arange(8)))
    short = r"the 5 training images \(train_subset 5\) are fewer than one batch of 64 and drop_last drops"
    with pytest.raises(ConfigError, match=short):
        fit(mlp(), (images(40), torch.arange(40) % 10), (images(8), torch.arange(8)), out_dir=str(tmp_path),
            train_subset=5, drop_last=True, log=silent, **QUIET)  # fmt: skip


def test_the_command_refuses_flags_that_would_be_ignored(tmp_path):
    result = run_slac("eval", str(tmp_path), "--data_root", "/nonexistent")  # no run there: checked first
    assert result.returncode == 2
    result = run_slac("train", *SMALL_RUN, "--epochs", "1", "--out_dir", str(tmp_path), "--name", "d")
    assert result.returncode == 0, result.stderr
    result = run_slac("eval", str(tmp_path / "d"), "--data_root", "/nonexistent")
    assert result.returncode == 2 and "digits dataset is embedded in scikit-learn" in result.stderr
    result = run_slac("train", "--resume", str(tmp_path / "d"), "--overwrite")
    assert result.returncode == 2 and "choose one" in result.stderr


def test_progress_bars_stay_out_of_files_and_pipes(tmp_path):
    """tqdm writes a frame per update to a file or a pipe (carriage returns, or lines); the bar is drawn on a
    terminal only, and a log gets the epoch lines."""
    result = run_slac("train", *SMALL_RUN, "--progress", "true", "--epochs", "1", "--out_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    output = result.stderr + result.stdout
    assert "\r" not in output and "batch/s" not in output and "epoch    1/1" in result.stdout


class _Pairs(torch.utils.data.Dataset):
    """A map-style Dataset of one's own, with a random transform (it must not move the run's generators)."""

    def __init__(self, n: int, classes: int) -> None:
        self.n, self.n_classes = n, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return torch.rand(1, 8, 8), index % self.n_classes


def test_map_style_datasets_float64_and_a_head_by_name_pass_the_checks(tmp_path):
    trainer = Trainer(TrainConfig(out_dir=str(tmp_path), dtype="float64", workers=0, **QUIET),
                      model=mlp(outputs=16), head="slac", train_data=_Pairs(20, 10), test_data=_Pairs(6, 10),
                      log=silent)  # fmt: skip
    assert trainer.model.head.in_features == 16 and next(trainer.model.parameters()).dtype == torch.float64
    assert trainer.fingerprint["train"]["sample_covers"] == "labels"
    with pytest.raises(
        ConfigError, match=r"train and test splits: labels lie in \[0, 11\], but the model gives 10"
    ):
        Trainer(TrainConfig(out_dir=str(tmp_path), workers=0, **QUIET), model=mlp(),
                train_data=_Pairs(20, 10), test_data=_Pairs(12, 12), log=silent)  # fmt: skip


def test_the_checks_draw_nothing_from_the_random_generators(tmp_path):
    """Building a trainer of a map-style Dataset with a random transform (checks, fingerprint) leaves the
    global generators where the run's seed put them: the run draws what it would draw without the checks."""
    import random

    import numpy as np

    def states():
        return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()

    config = TrainConfig(out_dir=str(tmp_path), workers=0, **QUIET)
    Trainer(config, model=mlp(), train_data=_Pairs(20, 10), test_data=_Pairs(6, 10), log=silent)
    after = states()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    seeded = states()
    assert torch.equal(after[0], seeded[0]) and (after[1] == seeded[1]).all() and after[2] == seeded[2]
