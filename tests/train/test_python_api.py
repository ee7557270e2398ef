"""Training a model and data of one's own from Python: ``fit``, ``Trainer(model=..., train_data=...)``,
``train_one_epoch``; checkpoints and exact resume included."""

from __future__ import annotations

import signal

import pytest
import torch
from torch import nn

import slac
from slac.data import DeviceLoader, load_dataset
from slac.errors import ConfigError
from slac.train import (
    Trainer,
    TrainingInterrupted,
    UserModel,
    evaluate,
    fit,
    load_checkpoint,
    train_one_epoch,
)

QUIET = {"progress": False, "tensorboard": "off"}


def digits_tensors(split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as a user would hold them: float images (N, 1, 8, 8) in [0, 1], int labels."""
    data = load_dataset("digits", None, split)
    images, labels = data.images.float() / data.max_value, data.labels
    return (images[:limit], labels[:limit]) if limit else (images, labels)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding="same"), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def test_fit_trains_a_converted_model_on_tensors_and_writes_a_run(tmp_path):
    torch.manual_seed(0)
    model = slac.convert_to_adder(small_cnn())
    summary = fit(model, digits_tensors("train"), digits_tensors("test"), epochs=4, out_dir=str(tmp_path),
                  name="mine", log=lambda message: None, **QUIET)  # fmt: skip
    assert summary["config"]["model"] == summary["config"]["dataset"] == "custom"
    assert summary["final_test_top1"] > 70.0, summary  # chance 10%; measured 88.6% (Sapphire Rapids)
    for name in ("config.yaml", "metrics.csv", "summary.json", "checkpoints/last.pt"):
        assert (tmp_path / "mine" / name).is_file(), name
    with pytest.raises(ConfigError, match="passed from Python"):
        slac.train.evaluate_checkpoint(tmp_path / "mine")
    state = load_checkpoint(tmp_path / "mine")  # the weights load into the model again, as the error says
    reloaded = UserModel(slac.convert_to_adder(small_cnn()))
    reloaded.load_state_dict(state["model"])
    images, labels = digits_tensors("test")
    test = DeviceLoader(slac.train.as_dataset((images, labels), "test"), 512, shuffle=False)
    assert evaluate(reloaded, test, torch.device("cpu"))["top1"] == summary["final_test_top1_running"]


def test_fit_with_a_slac_head_on_the_models_features(tmp_path):
    """A backbone of one's own (images -> 32 features) with the paper's SLAC head: its loss has the
    likelihood and angle terms, and the head's covariance gets the divided learning rate."""
    torch.manual_seed(0)
    backbone = slac.convert_to_adder(small_cnn()[:-1], keep_classifier=False)
    head = slac.create_head("slac", in_features=32, num_classes=10)
    recipe = {
        **slac.train.TrainConfig().to_dict(),
        "epochs": 4,
        "out_dir": str(tmp_path),
        "name": "head",
        **QUIET,
    }
    trainer = Trainer(
        slac.train.config_from_dict(recipe, "test"),
        log=lambda message: None,
        model=backbone,
        head=head,
        train_data=digits_tensors("train"),
        test_data=digits_tensors("test"),
    )
    summary = trainer.fit()
    assert {"train_loss_likelihood", "train_loss_angle"} <= set(trainer.history[-1])
    assert {g["name"] for g in trainer.optimizer.param_groups} == {"backbone", "head", "head_covariance"}
    assert summary["final_test_top1"] > 70.0, summary  # measured 88.9% (Sapphire Rapids)


def test_a_stopped_run_of_ones_own_resumes_exactly(tmp_path):
    """Stopped after epoch 1 of 2 as SIGTERM stops it, resumed with a freshly built model and the same
    data: the weights end bit for bit as an uninterrupted run's."""
    train, test = digits_tensors("train", 256), digits_tensors("test", 128)

    def run(name, stop=False):
        torch.manual_seed(1)
        config = slac.train.config_from_dict(
            {**slac.train.TrainConfig().to_dict(), "model": "custom", "dataset": "custom", "epochs": 2,
             "batch_size": 32, "out_dir": str(tmp_path), "name": name, **QUIET}, "test",
        )  # fmt: skip
        trainer = None

        def log(message):
            if stop and message.startswith("epoch    1/"):
                trainer.stop(signal.SIGTERM, None)

        trainer = Trainer(
            config, log=log, model=slac.convert_to_adder(small_cnn()), train_data=train, test_data=test
        )
        return trainer

    reference = run("reference")
    reference.fit()
    stopped = run("stopped", stop=True)
    with pytest.raises(TrainingInterrupted):
        stopped.fit()
    assert stopped.epoch == 1
    with pytest.raises(ConfigError, match="pass it again"):
        Trainer(resume=tmp_path / "stopped", log=lambda message: None)
    torch.manual_seed(123)  # a different initialization: the checkpoint decides the weights
    resumed = Trainer(resume=tmp_path / "stopped", log=lambda message: None,
                      model=slac.convert_to_adder(small_cnn()), train_data=train, test_data=test)  # fmt: skip
    resumed.fit()
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_train_one_epoch_in_a_loop_of_ones_own():
    torch.manual_seed(0)
    model = UserModel(slac.convert_to_adder(small_cnn()))
    loader = DeviceLoader(slac.train.as_dataset(digits_tensors("train"), "train"), 64, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first = train_one_epoch(model, loader, optimizer, eta=0.2)
    for _ in range(3):
        last = train_one_epoch(model, loader, optimizer, eta=0.2)
    assert set(first) == {"loss", "loss_classification", "top1", "top5", "count"} and first["count"] == 1437
    assert last["loss"] < first["loss"] and last["top1"] > 80.0, (first, last)


def test_bad_data_and_parts_are_refused_clearly(tmp_path):
    images, labels = digits_tensors("train", 64)
    base = {"out_dir": str(tmp_path), **QUIET}
    with pytest.raises(ConfigError, match="images must be a float tensor"):
        fit(small_cnn(), (labels, labels), (images, labels), **base)
    with pytest.raises(ConfigError, match="labels must be integers"):
        fit(small_cnn(), (images, labels.float()), (images, labels), **base)
    with pytest.raises(ConfigError, match=r"give \(images, labels\) tensors"):
        fit(small_cnn(), [1, 2, 3], (images, labels), **base)
    with pytest.raises(ConfigError, match="both train_data and test_data"):
        Trainer(slac.train.TrainConfig(**base), model=small_cnn(), train_data=(images, labels))
