"""Each plot command writes a PNG of the expected pixel size from a tiny real run."""

from __future__ import annotations

import pytest

from slac.analysis.plots import expected_size
from slac.cli import main
from slac.train import Trainer, load_config

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """LeNet ANN + SLAC with a 2-D feature layer, 2 epochs on 64 digits."""
    out = tmp_path_factory.mktemp("runs")
    config = load_config(
        None,
        ["--train_subset", "64", "--batch_size", "32", "--epochs", "2", "--model_options.feature_dim", "2",
         "--progress", "false", "--tensorboard", "off", "--out_dir", str(out)],
    )  # fmt: skip
    Trainer(config, log=lambda message: None).fit()
    return config.run_dir


def png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@pytest.mark.parametrize(
    ("figure", "runs", "panels"), [("features", 2, 2), ("histograms", 1, 2), ("curves", 2, 2)]
)
def test_plot_writes_a_png_of_the_expected_size(tiny_run, tmp_path, figure, runs, panels, capsys):
    out = tmp_path / f"{figure}.png"
    assert main(["plot", figure, *[str(tiny_run)] * runs, "--out", str(out), "--limit", "100"]) == 0
    assert out.stat().st_size > 10_000
    assert png_size(out) == expected_size(panels)
    if figure == "histograms":
        text = capsys.readouterr().out
        assert "weights: mean log-likelihood Gaussian" in text and "features:" in text


def test_plot_errors(tiny_run, tmp_path, capsys):
    assert main(["plot", "histograms", str(tiny_run), str(tiny_run), "--out", str(tmp_path / "x.png")]) == 2
    assert "takes one run directory" in capsys.readouterr().err
    assert main(["plot", "features", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert (
        main(["plot", "histograms", str(tiny_run), "--layer", "head", "--out", str(tmp_path / "x.png")]) == 2
    )
    assert "not an adder layer" in capsys.readouterr().err
