"""Figure 1's fits and the skewness angles against known samples and hand-made heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slac.analysis.tails import distribution_fits, skewness_angles, weight_layer
from slac.errors import RunError
from slac.models import create_model


def test_the_fit_that_generated_the_sample_wins():
    rng = np.random.default_rng(0)
    laplace = distribution_fits(rng.laplace(1.0, 2.0, 200_000))
    gaussian = distribution_fits(rng.normal(1.0, 2.0, 200_000))
    assert laplace["laplace"] > laplace["gaussian"] and gaussian["gaussian"] > gaussian["laplace"]
    # The maximum-likelihood parameters, and the Laplace's mean log-likelihood -1 - log(2 b) at the truth.
    assert laplace["median"] == pytest.approx(1.0, abs=0.02) and laplace["mad"] == pytest.approx(
        2.0, rel=0.01
    )
    assert laplace["laplace"] == pytest.approx(-1 - np.log(4.0), abs=0.01)
    assert gaussian["gaussian"] == pytest.approx(-0.5 - 0.5 * np.log(2 * np.pi * 4.0), abs=0.01)


def test_degenerate_and_bad_values():
    constant = distribution_fits(np.zeros(100))
    assert constant["gaussian"] is None and constant["laplace"] is None and constant["std"] == 0
    with pytest.raises(RunError, match="finite"):
        distribution_fits(np.array([1.0, np.nan]))
    with pytest.raises(RunError, match="at least 2"):
        distribution_fits(np.array([1.0]))


def test_weight_layer_is_the_last_adder_layer_or_convolution():
    ann = create_model("resnet20", form="ann", num_classes=10)
    cnn = create_model("resnet20", form="cnn", num_classes=10)
    assert weight_layer(ann)[0] == "layer3.2.conv2"
    assert weight_layer(cnn)[0] == "layer3.2.conv2"
    assert isinstance(weight_layer(cnn)[1], torch.nn.Conv2d)
    assert weight_layer(ann)[2] == "adder" and weight_layer(cnn)[2] == "convolution"
    with pytest.raises(ValueError, match="not an adder layer"):
        weight_layer(ann, "conv1")  # the full-precision first convolution


def test_skewness_angles_of_opposite_and_aligned_tails(tmp_path):
    from slac.train import save_checkpoint

    def head_checkpoint(gamma):
        k, d = gamma.shape
        state = {"model": {"head.skewness": gamma, "head.loc": torch.zeros(k, d),
                           "head.log_variance": torch.zeros(k, d)}, "config": {"head": "slac"}}  # fmt: skip
        return save_checkpoint(state, tmp_path / f"{len(list(tmp_path.iterdir()))}.pt")

    aligned = skewness_angles(head_checkpoint(torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])))
    opposite = skewness_angles(head_checkpoint(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])))
    assert aligned["mean_cosine"] == pytest.approx(1.0) and opposite["mean_cosine"] == pytest.approx(-1.0)
    assert aligned["classes"] == 3
    from slac.train import load_checkpoint

    loaded = load_checkpoint(head_checkpoint(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])))
    assert skewness_angles(loaded) == opposite  # a checkpoint already loaded reads the same
    assert skewness_angles(save_checkpoint({"model": {"head.weight": torch.zeros(2, 2)}, "config": {}},
                                           tmp_path / "linear.pt")) is None  # fmt: skip


def test_figure1_fits_of_a_trained_run_use_its_last_adder_layer_and_running_statistics(tmp_path):
    from slac.analysis.runs import collect_features, load_model
    from slac.analysis.tails import figure1_fits
    from slac.train import Trainer, load_config

    flags = ["--train_subset", "64", "--batch_size", "32", "--epochs", "1", "--progress", "false",
             "--tensorboard", "off", "--out_dir", str(tmp_path)]  # fmt: skip
    config = load_config(None, flags)
    Trainer(config, log=lambda message: None).fit()
    fits = figure1_fits(config.run_dir, limit=100)
    model, saved = load_model(config.run_dir)
    name, module, _ = weight_layer(model)
    assert (fits["layer"], fits["kind"], fits["bn"], fits["images"]) == (name, "adder", "running", 100)
    assert fits["weights"] == distribution_fits(module.weight.detach().double().numpy())
    features, _ = collect_features(model, saved, "test", 100)  # eval mode: the running statistics
    assert fits["features"] == distribution_fits(features.double().numpy())
    model.train()  # the batch's own statistics give other features, so the check above can fail
    batch_features, _ = collect_features(model, saved, "test", 100)
    assert distribution_fits(batch_features.double().numpy()) != fits["features"]


@pytest.mark.parametrize("limit", [0, -5, 2.5, True])
def test_figure1_fits_refuses_a_limit_that_is_not_a_positive_count(tmp_path, limit):
    """Checked before the run is read: 0 used to fail inside torch.cat, -5 to score all but 5 images."""
    from slac.analysis.tails import figure1_fits
    from slac.errors import ConfigError

    with pytest.raises(ConfigError, match="limit must be None or an integer >= 1"):
        figure1_fits(tmp_path / "no-run", limit=limit)


def test_an_empty_layer_name_is_not_the_default_layer():
    ann = create_model("lenet", form="ann", num_classes=10, img_size=8)
    with pytest.raises(ValueError, match="layer '' is not an adder layer"):
        weight_layer(ann, "")
