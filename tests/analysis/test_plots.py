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


def _fabricated_curve_run(root, name, seed, test, running, head="slac"):
    import json

    from slac.train import TrainConfig, save_config

    run = root / name
    run.mkdir(parents=True)
    save_config(
        TrainConfig(seed=seed, head=head, epochs=len(test), eval_bn="recalibrated"), run / "config.yaml"
    )
    rows = ["epoch,train_top1,test_top1,test_top1_running"]
    rows += [f"{i + 1},{t - 1},{t},{r}" for i, (t, r) in enumerate(zip(test, running, strict=True))]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    (run / "summary.json").write_text(json.dumps({"epochs": len(test), "final_test_top1": test[-1]}))
    return run


def test_bands_are_the_mean_and_the_range_over_seeds(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slac.analysis import plots

    runs = [
        _fabricated_curve_run(tmp_path, "a0", 0, [50.0, 70.0, 80.0], [10.0, 20.0, 70.0]),
        _fabricated_curve_run(tmp_path, "a1", 1, [60.0, 74.0, 84.0], [10.0, 40.0, 74.0]),
        _fabricated_curve_run(tmp_path, "b0", 0, [40.0, 50.0, 60.0], [10.0, 10.0, 50.0], head="linear"),
    ]
    figure, (train_axes, test_axes) = plt.subplots(1, 2)
    headlines, dashed = plots._plot_bands(runs, train_axes, test_axes)
    assert headlines == {"recalibrated"} and dashed == {"running"}
    lines = {(line.get_label(), line.get_linestyle()): list(line.get_ydata()) for line in test_axes.lines}
    slac = next(key for key in lines if key[0].startswith("lenet SLAC-ANN"))
    assert slac[0].endswith("(n=2)") and lines[slac] == [55.0, 72.0, 82.0]
    dashed_lines = [values for (label, style), values in lines.items() if style == "--"]
    assert [10.0, 30.0, 72.0] in dashed_lines  # running statistics: mean over the two seeds
    band = test_axes.collections[1].get_paths()[0].vertices[:, 1]
    assert band.min() == 50.0 and band.max() == 84.0  # the seeds' range, not a standard deviation
    assert [line.get_ydata()[0] for line in train_axes.lines] == [39.0, 54.0]  # sorted by label: ANN first
    plt.close(figure)
    out = tmp_path / "bands.png"
    assert main(["plot", "curves", *map(str, runs), "--band", "--out", str(out)]) == 0
    assert png_size(out) == expected_size(2)
