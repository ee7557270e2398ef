"""A run of one's own records what it trained: the form read from the model, the head that computes the
logits (its registered name, ``custom`` for the model's own classifier); recipe keys that cannot apply are
refused."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

import slac
from slac.analysis import report
from slac.errors import ConfigError
from slac.train import Trainer, fit, load_checkpoint

QUIET = {"progress": False, "tensorboard": "off", "epochs": 1}


def silent(message: str) -> None:
    pass


def data(n: int = 40, classes: int = 10):
    torch.manual_seed(0)
    return torch.rand(n, 1, 8, 8), torch.arange(n) % classes


def cnn(outputs: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, outputs),
    )  # fmt: skip


def records(run_dir):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    checkpoint = load_checkpoint(run_dir)["config"]
    return config, summary["config"], checkpoint


def test_a_plain_cnn_with_its_own_classifier_is_recorded_as_such(tmp_path):
    lines = []
    summary = fit(cnn(), data(), data(), out_dir=str(tmp_path), log=lines.append, **QUIET)
    run_dir = tmp_path / "custom_cnn_custom_custom_seed0"  # the default name says what ran
    assert summary["run_dir"] == str(run_dir)
    for recorded in records(run_dir):
        assert (recorded["model"], recorded["form"], recorded["head"], recorded["dataset"]) == (
            "custom", "cnn", "custom", "custom"
        )  # fmt: skip
    assert lines[0].startswith("training a model of one's own (Sequential, cnn, its own classifier,")
    items, _ = report.experiments([run_dir])
    assert items[0].method == "CNN (custom)"  # not pooled as "SLAC-ANN"


def test_a_converted_model_and_a_head_object_record_the_form_and_the_heads_name(tmp_path):
    ann = slac.convert_to_adder(cnn()[:-1], keep_classifier=False)  # images -> 8 features
    head = slac.create_head("lgm", in_features=8, num_classes=10)
    summary = fit(ann, data(), data(), head=head, out_dir=str(tmp_path), name="lgm", log=silent, **QUIET)
    assert (summary["config"]["form"], summary["config"]["head"]) == ("ann", "lgm")
    assert report.experiments([tmp_path / "lgm"])[0][0].method == "LGM-ANN"
    sl = slac.create_head("slac", in_features=8, num_classes=10, angle_weight=0.0)  # computes SL
    ann = slac.convert_to_adder(cnn()[:-1], keep_classifier=False)
    summary = fit(ann, data(), data(), head=sl, out_dir=str(tmp_path), name="sl", log=silent, **QUIET)
    assert summary["config"]["head"] == "sl"


def test_a_head_by_name_is_built_on_the_models_features_with_its_options(tmp_path):
    backbone = cnn()[:-1]  # 8 features
    trainer = Trainer(
        slac.train.TrainConfig(out_dir=str(tmp_path), head_options={"angle_weight": 0.5}, **QUIET),
        model=backbone, head="slac", train_data=data(), test_data=data(), log=silent,
    )  # fmt: skip
    assert trainer.model.head.in_features == 8 and trainer.model.head.angle_weight == 0.5
    assert (trainer.config.form, trainer.config.head) == ("cnn", "slac")
    assert trainer.config.head_options == {"angle_weight": 0.5}
    summary = trainer.fit()
    # resumed with the head by name again: built with the recorded options
    resumed = Trainer(resume=summary["run_dir"], overrides={"epochs": 2}, model=cnn()[:-1], head="slac",
                      train_data=data(), test_data=data(), log=silent)  # fmt: skip
    assert resumed.model.head.angle_weight == 0.5
    with pytest.raises(ConfigError, match=r"the run trained head 'slac', the model passed: 'custom'"):
        Trainer(resume=summary["run_dir"], model=cnn()[:-1], train_data=data(), test_data=data(), log=silent)


def test_a_zoo_model_passed_from_python_trains_with_its_own_head(tmp_path):
    model = slac.create_model("lenet", form="ann", head="slac", num_classes=10, in_chans=1, img_size=8)
    trainer = Trainer(slac.train.TrainConfig(out_dir=str(tmp_path), **QUIET), model=model,
                      train_data=data(), test_data=data(), log=silent)  # fmt: skip
    assert trainer.model is model and (trainer.config.form, trainer.config.head) == ("ann", "slac")
    trainer.fit()
    assert {"train_loss_likelihood", "train_loss_angle"} <= set(trainer.history[-1])  # its loss, not CE
    with pytest.raises(ConfigError, match="has a head of its own"):
        Trainer(slac.train.TrainConfig(out_dir=str(tmp_path)), model=model, head="linear",
                train_data=data(), test_data=data(), log=silent)  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "head", "message"),
    [
        ({"form": "ann"}, None, "form: the model passed is a cnn .* so form 'ann' cannot apply"),
        ({"head": "slac"}, None, "head: the recipe names 'slac', but the logits come from the model's own"),
        ({"head_options": {"angle_weight": 1.0}}, None, "head_options: they configure a head built by name"),
        ({"model_options": {"feature_dim": 2}}, None, "model_options: they configure a zoo model"),
        (
            {"adder_backend": "reference"},
            None,
            "adder_backend: 'reference' chooses .* the model passed has none",
        ),
        ({"model": "resnet20"}, None, "model: the recipe names 'resnet20'"),
        ({"dataset": "fashion-mnist"}, None, "dataset: the recipe names 'fashion-mnist'"),
        ({"data_root": "/data"}, None, "data_root: the custom dataset was passed from Python"),
        ({"head_options": {"margin": 0.1}}, "lgm-object", "give them to slac.create_head"),
        ({}, "nonsense", "unknown head 'nonsense'"),
    ],
)
def test_recipe_keys_that_cannot_apply_are_refused(tmp_path, recipe, head, message):
    if head == "lgm-object":
        head = slac.create_head("lgm", in_features=10, num_classes=10)
    with pytest.raises(ConfigError, match=message):
        if {"head", "model"} & set(recipe):  # a recipe (a YAML file, a TrainConfig) naming them
            config = slac.train.TrainConfig(out_dir=str(tmp_path), **QUIET, **recipe)
            Trainer(config, model=cnn(), train_data=data(), test_data=data(), log=silent)
        else:
            fit(cnn(), data(), data(), head=head, out_dir=str(tmp_path), log=silent, **QUIET, **recipe)
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_recipes_adder_backend_applies_to_a_converted_model(tmp_path):
    ann = slac.convert_to_adder(cnn())
    trainer = Trainer(slac.train.TrainConfig(out_dir=str(tmp_path), adder_backend="reference", **QUIET),
                      model=ann, train_data=data(), test_data=data(), log=silent)  # fmt: skip
    layers = [m for m in trainer.model.modules() if isinstance(m, slac.nn.AdderLayer)]
    assert layers and all(layer.backend == "reference" for layer in layers)
    assert trainer.config.adder_backend == "reference"


def test_a_flip_or_crop_is_recorded_only_where_the_loader_can_apply_it(tmp_path):
    trainer = Trainer(slac.train.TrainConfig(out_dir=str(tmp_path), **QUIET), model=cnn(),
                      train_data=data(), test_data=data(), log=silent)  # fmt: skip
    assert trainer.config.augment is False  # tensors: slac cannot know what keeps a label
