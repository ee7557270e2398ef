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
    limit = [] if figure == "curves" else ["--limit", "100"]  # curves have no images to limit
    assert main(["plot", figure, *[str(tiny_run)] * runs, "--out", str(out), *limit]) == 0
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


def test_a_missing_folder_is_refused_and_none_is_created(tmp_path, capsys):
    from slac.analysis import plots
    from slac.errors import ConfigError

    run = _fabricated_curve_run(tmp_path, "a0", 0, [50.0, 70.0], [10.0, 20.0])
    out = tmp_path / "figures" / "deeper" / "curves.png"
    assert main(["plot", "curves", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"the folder {out.parent} does not exist; create it first" in err
    assert not (tmp_path / "figures").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        plots.plot_curves([run], out)
    assert not (tmp_path / "figures").exists()
    (tmp_path / "figures").mkdir()
    assert main(["plot", "curves", str(run), "--out", str(tmp_path / "figures" / "curves.png")]) == 0


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{tmp}", "is a directory; give a file name in it"),
        ("{tmp}/curves", "must end in .png"),
        ("{tmp}/curves.pdf", "must end in .png"),
        ("{tmp}/curves.txt", "must end in .png"),
        ("{tmp}/a0/metrics.csv/curves.png", "is a file, not a folder"),
    ],
    ids=["directory", "no suffix", "pdf", "txt", "parent is a file"],
)
def test_the_output_must_be_a_png_file_in_an_existing_folder(tmp_path, capsys, out, message):
    run = _fabricated_curve_run(tmp_path, "a0", 0, [50.0, 70.0], [10.0, 20.0])
    before = sorted(tmp_path.rglob("*"))
    assert main(["plot", "curves", str(run), "--out", out.replace("{tmp}", str(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before and not (tmp_path.parent / f"{tmp_path.name}.png").exists()


@pytest.mark.parametrize(
    ("figure", "flags", "message"),
    [
        ("features", ["--limit", "0"], "limit must be None or an integer >= 1, got 0"),
        ("histograms", ["--limit", "-5"], "limit must be None or an integer >= 1, got -5"),
        ("curves", ["--dpi", "0"], "dpi must be an integer >= 1"),
        ("curves", ["--dpi", "100000"], "1000000x450000 pixels image; "),
        ("curves", ["--dpi", "6554"], "give a dpi of at most 6553"),  # 2 panels of 5 inches: 65,530 pixels
    ],
)
def test_limit_and_dpi_are_checked_before_any_work(tmp_path, capsys, figure, flags, message):
    run = _fabricated_curve_run(tmp_path, "a0", 0, [50.0, 70.0], [10.0, 20.0])  # no checkpoint needed
    assert main(["plot", figure, str(run), *flags, "--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_every_run_is_checked_before_the_first_panel(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert main(["plot", "features", str(tiny_run), str(tmp_path / "missing"), "--out", out]) == 2
    assert f"{tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    checkpoint = tiny_run / "checkpoints" / "last.pt"
    assert main(["plot", "histograms", str(checkpoint), "--out", out]) == 2
    assert f"{checkpoint} is a file; give a run directory" in capsys.readouterr().err


def test_band_curves_of_a_run_without_epochs_are_refused(tmp_path, capsys):
    run = _fabricated_curve_run(tmp_path, "a0", 0, [50.0, 70.0], [10.0, 20.0])
    (run / "metrics.csv").unlink()
    for band in ([], ["--band"]):
        assert main(["plot", "curves", str(run), *band, "--out", str(tmp_path / "x.png")]) == 2
        assert "metrics.csv has no epochs yet" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_one_path_where_a_list_of_runs_is_expected_is_refused(tmp_path):
    """A string is a sequence too: each of its characters would be read as a run directory."""
    from slac.analysis import plots, report
    from slac.errors import ConfigError

    run = _fabricated_curve_run(tmp_path, "a0", 0, [50.0, 70.0], [10.0, 20.0])
    for call in (
        lambda: plots.plot_curves(str(run), tmp_path / "x.png"),
        lambda: plots.plot_features(run, tmp_path / "x.png"),
        lambda: report.experiments(str(run)),
    ):
        with pytest.raises(ConfigError, match=r"a list of run directories, e\.g\. \[.*a0'?\]"):
            call()
