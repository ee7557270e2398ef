"""The paper's figures from run directories, as PNG files (matplotlib, the ``plot`` extra).

    slac plot features RUN...      Figure 3: 2-D features coloured by class, the head's fitted
                                   distributions (density contours, means, 1-sigma ellipses, skewness
                                   arrows; linear heads: class weight directions), decision regions
    slac plot histograms RUN       Figure 1: adder weights and last-layer features of an ANN with fitted
                                   Gaussian and Laplace curves and their mean log-likelihoods
    slac plot curves RUN...        Figure 4: train and test top-1 per epoch, runs overlaid (``--band``:
                                   the mean over seeds per experiment with a min-max band)

Every figure has a title, labelled axes and a legend, and is written at ``dpi`` with a fixed size
(``FIGURE_WIDTH`` inches per panel by ``FIGURE_HEIGHT``), so its pixel size is known in advance. The
output is a ``.png`` file in a folder that exists (none is created); it, the runs, ``limit`` and ``dpi``
are checked before anything is computed.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slac.analysis.report import check_run_list, experiments
from slac.analysis.runs import collect_features, load_model, load_run
from slac.analysis.tails import check_limit
from slac.errors import ConfigError, MissingDependencyError, RunError
from slac.files import check_output_file
from slac.train.config import other_bn

__all__ = [
    "FIGURE_HEIGHT",
    "FIGURE_WIDTH",
    "plot_curves",
    "plot_features",
    "plot_histograms",
]

FIGURE_WIDTH = 5.0  # inches per panel
FIGURE_HEIGHT = 4.5
DPI = 100


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(
            "plots need matplotlib: pip install slac[plot] (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_dpi(dpi: int, panels: int) -> None:
    """A positive dpi that gives an image the Agg renderer can draw (under 2^16 pixels a side)."""
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 1:
        raise ConfigError(f"dpi must be an integer >= 1, got {dpi!r}")
    width, height = expected_size(panels, dpi)
    if max(width, height) >= 2**16:
        largest = math.floor((2**16 - 1) / (panels * FIGURE_WIDTH))
        raise ConfigError(
            f"dpi {dpi} gives a {width}x{height} pixels image; the PNG renderer draws under 65536 pixels a "
            f"side, so give a dpi of at most {largest}"
        )


def _check_runs(runs: list[str | Path]) -> list[Path]:
    """Every run, read before any is drawn: a mistake in the last one costs nothing."""
    return [load_run(run).path for run in runs]


def _save(figure: Any, out: Path, dpi: int) -> Path:
    # no bbox "tight": the pixel size stays panels * FIGURE_WIDTH * dpi; the format is PNG whatever the
    # name (check_output_file has made sure it ends in .png)
    figure.savefig(out, dpi=dpi, format="png")
    _pyplot().close(figure)
    return out


def _run_label(run: Any) -> str:
    config = run.config
    return f"{config.model} {config.form} {config.head} seed {config.seed}"


# ---------------------------------------------------------------------------------------------- features


def _head_geometry(head: torch.nn.Module) -> dict[str, np.ndarray]:
    """Means (K, C, 2), standard deviations (K, C, 2), skewness (K, 2) or class directions (K, 2)."""
    geometry: dict[str, np.ndarray] = {}
    if hasattr(head, "loc") and hasattr(head, "log_variance"):
        loc = head.loc.detach().float()
        std = (0.5 * head.log_variance.detach().float()).exp()
        geometry["loc"] = loc.reshape(loc.shape[0], -1, loc.shape[-1]).numpy()
        geometry["std"] = std.reshape(std.shape[0], -1, std.shape[-1]).numpy()
    if hasattr(head, "skewness"):
        geometry["skewness"] = head.skewness.detach().float().numpy()
    weight = getattr(head, "weight", None)
    if weight is None and hasattr(head, "linear"):
        weight = head.linear.weight
    if weight is not None and "loc" not in geometry:
        geometry["direction"] = weight.detach().float().numpy()
    return geometry


def _two_dimensional_model(run_path: Path, checkpoint: str) -> tuple[torch.nn.Module, Any]:
    model, config = load_model(run_path, checkpoint)
    if model.num_features != 2:
        raise RunError(
            f"{run_path}: its features have {model.num_features} dimensions; the feature plot needs a 2-D "
            "feature layer (train with --model_options.feature_dim 2, e.g. configs/fig3/)"
        )
    return model, config


def _feature_panel(
    axes: Any, run_path: Path, model: torch.nn.Module, config: Any, split: str, limit: int | None
) -> None:
    plt = _pyplot()
    features, labels = collect_features(model, config, split, limit)
    x, y = features[:, 0].numpy(), features[:, 1].numpy()
    num_classes = model.num_classes
    colours = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    pad = max(0.15 * max(np.ptp(x), np.ptp(y)), 1e-3 * max(abs(x).max(), abs(y).max()), 1e-3)
    grid_x, grid_y = np.meshgrid(
        np.linspace(x.min() - pad, x.max() + pad, 200), np.linspace(y.min() - pad, y.max() + pad, 200)
    )
    grid = torch.tensor(np.stack([grid_x.ravel(), grid_y.ravel()], 1), dtype=getattr(torch, config.dtype))
    with torch.no_grad():
        logits = model.forward_head(grid).float()  # (G, K): log densities for density heads
    regions = logits.argmax(1).reshape(grid_x.shape).numpy()
    axes.contourf(
        grid_x, grid_y, regions, levels=np.arange(num_classes + 1) - 0.5, cmap=colours, alpha=0.12,
        vmin=-0.5, vmax=(10 if num_classes <= 10 else 20) - 0.5,
    )  # fmt: skip
    geometry = _head_geometry(model.head)
    if "loc" in geometry:  # density heads: contours of the most likely class's log density
        density = logits.max(1).values.reshape(grid_x.shape).numpy()
        top = float(density.max())
        levels = np.sort(top - np.array([1.0, 3.0, 6.0]))
        axes.contour(grid_x, grid_y, density, levels=levels, colors="0.35", linewidths=0.6)
    for k in range(num_classes):
        chosen = labels.numpy() == k
        axes.scatter(x[chosen], y[chosen], s=4, color=colours(k), alpha=0.6, label=str(k), rasterized=True)
    if "loc" in geometry:
        from matplotlib.patches import Ellipse

        for k in range(num_classes):
            for mean, std in zip(geometry["loc"][k], geometry["std"][k], strict=True):
                axes.add_patch(
                    Ellipse(mean, 2 * std[0], 2 * std[1], fill=False, color=colours(k), linewidth=1.2)
                )
                axes.plot(*mean, marker="x", color="black", markersize=6)
            if "skewness" in geometry:
                mean, gamma = geometry["loc"][k][0], geometry["skewness"][k]
                axes.annotate(
                    "", xy=mean + gamma, xytext=mean,
                    arrowprops={"arrowstyle": "->", "color": colours(k), "linewidth": 1.5},
                )  # fmt: skip
    elif "direction" in geometry:
        scale = (
            0.4 * max(np.ptp(x), np.ptp(y)) / max(np.linalg.norm(geometry["direction"], axis=1).max(), 1e-12)
        )
        for k, direction in enumerate(geometry["direction"]):
            axes.annotate(
                "", xy=direction * scale, xytext=(0, 0),
                arrowprops={"arrowstyle": "->", "color": colours(k), "linewidth": 1.5},
            )  # fmt: skip
    run = load_run(run_path)
    final = run.final_test_top1
    title = f"{config.head} head ({config.form}, {config.dataset}, seed {config.seed})"
    if final is not None:
        title += f"\ntest top-1 {final:.2f}%"
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("feature 1")
    axes.set_ylabel("feature 2")
    axes.set_xlim(grid_x.min(), grid_x.max())
    axes.set_ylim(grid_y.min(), grid_y.max())


def plot_features(
    runs: list[str | Path],
    out: str | Path,
    split: str = "test",
    limit: int | None = 2000,
    checkpoint: str = "last",
    dpi: int = DPI,
) -> Path:
    """Figure 3: one panel per run with 2-D features (``feature_dim: 2``) and the head's distributions."""
    plt = _pyplot()
    runs = check_run_list(runs, "plot features")
    out = check_output_file(out, "plot features", ".png")
    check_limit(limit)
    _check_dpi(dpi, len(runs))
    models = [(run, *_two_dimensional_model(run, checkpoint)) for run in _check_runs(runs)]
    figure, panels = plt.subplots(
        1, len(runs), figsize=(FIGURE_WIDTH * len(runs), FIGURE_HEIGHT), squeeze=False, layout="constrained"
    )
    for axes, (run, model, config) in zip(panels[0], models, strict=True):
        _feature_panel(axes, run, model, config, split, limit)
    panels[0][-1].legend(title="class", fontsize=7, markerscale=3, loc="upper right", ncols=2)
    figure.suptitle(
        f"2-D features ({split} split); x: means, ellipses: 1 sigma, arrows: skewness", fontsize=9
    )
    return _save(figure, out, dpi)


# -------------------------------------------------------------------------------------------- histograms


def _fit_panel(axes: Any, values: np.ndarray, title: str, xlabel: str) -> dict[str, float]:
    """Histogram with maximum-likelihood Gaussian and Laplace fits; returns their mean log-likelihoods."""
    from scipy import stats

    from slac.analysis.tails import distribution_fits

    fitted = distribution_fits(values)
    if fitted["gaussian"] is None:
        raise RunError(f"{title}: every value is {fitted['mean']:g}; there is no distribution to fit")
    mean, std, location, scale = fitted["mean"], fitted["std"], fitted["median"], fitted["mad"]
    fits = {"gaussian": fitted["gaussian"], "laplace": fitted["laplace"]}
    low, high = np.quantile(values, [0.001, 0.999])
    axes.hist(values, bins=120, range=(low, high), density=True, color="0.7", label=f"{values.size:,} values")
    grid = np.linspace(low, high, 400)
    axes.plot(grid, stats.norm.pdf(grid, mean, std), label=f"Gaussian, mean log-lik {fits['gaussian']:.3f}")
    axes.plot(
        grid, stats.laplace.pdf(grid, location, scale), label=f"Laplace, mean log-lik {fits['laplace']:.3f}"
    )
    axes.set_title(title, fontsize=9)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("density")
    axes.legend(fontsize=7)
    return fits


def plot_histograms(
    run: str | Path,
    out: str | Path,
    layer: str | None = None,
    split: str = "test",
    limit: int | None = 2000,
    checkpoint: str = "last",
    dpi: int = DPI,
) -> tuple[Path, dict[str, dict[str, float]]]:
    """Figure 1 (a, b): weights of one adder layer (default: the last) and the pooled last-layer features.

    Returns the PNG path and the fitted mean log-likelihoods {"weights"|"features": {"gaussian", "laplace"}}.
    """
    from slac.analysis.tails import weight_layer

    plt = _pyplot()
    out = check_output_file(out, "plot histograms", ".png")
    check_limit(limit)
    _check_dpi(dpi, 2)
    (run,) = _check_runs([run])
    model, config = load_model(run, checkpoint)
    chosen, module, kind = weight_layer(model, layer)
    weights = module.weight.detach().float().flatten().numpy()
    features, _ = collect_features(model, config, split, limit)
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(2 * FIGURE_WIDTH, FIGURE_HEIGHT), layout="constrained"
    )
    fits = {
        "weights": _fit_panel(left, weights, f"weights of {kind} layer {chosen}", "weight value"),
        "features": _fit_panel(
            right,
            features.flatten().numpy(),
            f"last-layer features ({split} split, {features.shape[0]} images)",
            "feature value",
        ),
    }
    figure.suptitle(f"{config.model} {config.form} ({config.head} head) on {config.dataset}: heavy tails")
    return _save(figure, out, dpi), fits


# ------------------------------------------------------------------------------------------------ curves


def _plot_bands(runs: list[str | Path], train_axes: Any, test_axes: Any) -> tuple[set[str], set[str]]:
    """One line per experiment (runs differing only in the seed): the mean over seeds per epoch, with a
    band from the lowest to the highest seed."""
    items, notes = experiments(runs)
    for note in notes:
        warnings.warn(note, stacklevel=3)
    for run in (run for e in items for run in e.runs):
        if not run.metrics:
            raise RunError(f"{run.path}: metrics.csv has no epochs yet")
    headlines, dashed = set(), set()
    for e in items:
        other = other_bn(e.config.eval_bn)
        columns = {"train_top1": train_axes, "test_top1": test_axes, f"test_top1_{other}": test_axes}
        color = None
        for column, axes in columns.items():
            series = [[row.get(column) for row in run.metrics] for run in e.runs]
            length = min(len(s) for s in series)
            table = np.array([s[:length] for s in series], dtype=object)
            if length == 0 or any(v in (None, "") for v in table.ravel()):
                continue  # not logged (or not every epoch)
            values = table.astype(float)
            epochs = np.arange(1, length + 1)
            beside = column.endswith(other)
            label = None if beside else f"{e.label} (n={e.n})"
            style = {"linestyle": "--", "linewidth": 1} if beside else {"linewidth": 1.5}
            (line,) = axes.plot(epochs, values.mean(0), label=label, color=color, **style)
            color = line.get_color()
            if not beside:
                axes.fill_between(epochs, values.min(0), values.max(0), color=color, alpha=0.2, linewidth=0)
            if column == "test_top1":
                headlines.add(e.config.eval_bn)
            elif beside:
                dashed.add(other)
    return headlines, dashed


def plot_curves(runs: list[str | Path], out: str | Path, dpi: int = DPI, band: bool = False) -> Path:
    """Figure 4 (a, b): train and test top-1 per epoch, one line per run; with ``band``, one line per
    experiment (the mean over its seeds) with a band from the lowest to the highest seed."""
    plt = _pyplot()
    runs = check_run_list(runs, "plot curves")
    out = check_output_file(out, "plot curves", ".png")
    _check_dpi(dpi, 2)
    if band:
        figure, (train_axes, test_axes) = plt.subplots(
            1, 2, figsize=(2 * FIGURE_WIDTH, FIGURE_HEIGHT), layout="constrained"
        )
        headlines, dashed = _plot_bands(runs, train_axes, test_axes)
        _finish_curves(figure, train_axes, test_axes, headlines, dashed, "mean over seeds, band: min-max")
        return _save(figure, out, dpi)
    figure, (train_axes, test_axes) = plt.subplots(
        1, 2, figsize=(2 * FIGURE_WIDTH, FIGURE_HEIGHT), layout="constrained"
    )
    headlines, dashed = set(), set()
    for path in runs:
        run = load_run(path)
        if not run.metrics:
            raise RunError(f"{path}: metrics.csv has no epochs yet")
        epochs = [row["epoch"] for row in run.metrics]
        label = _run_label(run)
        (line,) = train_axes.plot(epochs, [row["train_top1"] for row in run.metrics], label=label)
        tested = [(row["epoch"], row["test_top1"]) for row in run.metrics if row.get("test_top1") is not None]
        if tested:
            test_axes.plot(*zip(*tested, strict=True), label=label, color=line.get_color())
            headlines.add(run.config.eval_bn)
        # the test accuracy on the other BatchNorm statistics, when the run logged it: dashed
        other = other_bn(run.config.eval_bn)
        beside = [(row["epoch"], row[f"test_top1_{other}"]) for row in run.metrics
                  if row.get(f"test_top1_{other}") not in (None, "")]  # fmt: skip
        if beside:
            test_axes.plot(*zip(*beside, strict=True), color=line.get_color(), linestyle="--", linewidth=1)
            dashed.add(other)
    _finish_curves(figure, train_axes, test_axes, headlines, dashed)
    return _save(figure, out, dpi)


def _finish_curves(
    figure: Any, train_axes: Any, test_axes: Any, headlines: set[str], dashed: set[str], note: str = ""
) -> None:
    test_title = "test accuracy"
    if len(headlines) == 1:
        test_title += f", {headlines.pop()} BN statistics"
        if len(dashed) == 1:
            test_title += f" (dashed: {dashed.pop()})"
    for axes, split in ((train_axes, "train accuracy"), (test_axes, test_title)):
        axes.set_title(split, fontsize=10)
        axes.set_xlabel("epoch")
        axes.set_ylabel("top-1 accuracy (%)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle("Accuracy per epoch" + (f" ({note})" if note else ""))


def expected_size(panels: int, dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of a figure with ``panels`` panels."""
    return math.floor(panels * FIGURE_WIDTH * dpi + 1e-6), math.floor(FIGURE_HEIGHT * dpi + 1e-6)
