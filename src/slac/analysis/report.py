"""``slac report``: accuracy tables from run directories, with the spread over seeds.

Runs whose recipes differ only in the seed (and in how they were executed: device, output place, ...)
are one experiment. For each, the table gives the mean of the final test top-1 (the last epoch's, not
the best epoch's: choosing the best epoch on the test split flatters every method), the sample standard
deviation (n - 1), n, and the difference of means to a baseline experiment with a 95% confidence
interval from Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom):

    diff = mean_a - mean_b,  se = sqrt(s_a^2 / n_a + s_b^2 / n_b),
    df = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1)),
    CI = diff -+ t_{0.975, df} * se.

With n = 1 in either group there is no interval ("n/a"). Layouts: ``long`` (one row per experiment),
``table1`` (rows model and method, columns dataset), ``table3`` (rows dataset, columns head),
``table4`` (rows: the SLAC-ANN ablation settings).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slac.analysis.runs import Run, load_run
from slac.errors import ConfigError, RunError

__all__ = ["Experiment", "difference_interval", "experiments", "format_report", "summarize"]

LAYOUTS = ("long", "table1", "table3", "table4")


@dataclass
class Experiment:
    label: str
    method: str
    runs: list[Run]
    accuracies: list[float]

    @property
    def config(self) -> Any:
        return self.runs[0].config

    @property
    def n(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / self.n

    @property
    def std(self) -> float:
        if self.n < 2:
            return math.nan
        mean = self.mean
        return math.sqrt(sum((a - mean) ** 2 for a in self.accuracies) / (self.n - 1))


def method_name(config: Any) -> str:
    """The paper's name of a (form, head) pair: CNN, BNN, ANN, SLAC-ANN, or ANN with another head."""
    if config.form != "ann":
        return config.form.upper() + ("" if config.head == "linear" else f" ({config.head})")
    names = {"linear": "ANN", "slac": "SLAC-ANN", "sl": "SL-ANN", "lgm": "LGM-ANN", "mom": "MoM-ANN",
             "lsoftmax": "L-Softmax-ANN"}  # fmt: skip
    return names.get(config.head, f"ANN ({config.head})")


def _label(config: Any, varying: set[str]) -> str:
    parts = [f"{config.model} {method_name(config)} {config.dataset}"]
    for key in sorted(varying - {"model", "form", "head", "dataset"}):
        parts.append(f"{key}={getattr(config, key)}")
    return ", ".join(parts)


def experiments(paths: list[str | Path]) -> tuple[list[Experiment], list[str]]:
    """Group runs into experiments; returns them and notes on runs left out (unfinished, duplicates)."""
    notes: list[str] = []
    groups: dict[tuple, list[Run]] = {}
    for path in paths:
        run = load_run(path)
        if run.final_test_top1 is None:
            notes.append(f"{path}: not finished (no summary.json with a test accuracy); left out")
            continue
        groups.setdefault(run.experiment, []).append(run)
    if not groups:
        raise RunError("report: none of the given runs has finished (summary.json)")
    keys = {experiment: dict(experiment) for experiment in groups}
    identity = ("model", "form", "head", "dataset")
    result = []
    for experiment, runs in groups.items():
        # The label names the recipe keys that tell this experiment from others of the same model, form,
        # head and dataset (e.g. the ablation switches), not those every experiment of its kind shares.
        same_kind = [k for k in keys.values() if all(k[i] == keys[experiment][i] for i in identity)]
        varying = {key for key in keys[experiment] if len({k.get(key) for k in same_kind}) > 1}
        seeds = [run.config.seed for run in runs]
        if len(set(seeds)) != len(seeds):
            notes.append(
                f"{runs[0].path}: several runs share a seed ({sorted(seeds)}): they are not independent"
            )
        runs.sort(key=lambda run: run.config.seed)
        result.append(
            Experiment(
                _label(runs[0].config, varying),
                method_name(runs[0].config),
                runs,
                [run.final_test_top1 for run in runs],  # type: ignore[misc]
            )
        )
    result.sort(key=lambda e: e.label)
    return result, notes


def difference_interval(
    a: list[float], b: list[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) of Welch's interval; low/high are NaN when a group has n < 2."""
    from scipy import stats

    n_a, n_b = len(a), len(b)
    mean_a, mean_b = sum(a) / n_a, sum(b) / n_b
    diff = mean_a - mean_b
    if n_a < 2 or n_b < 2:
        return diff, math.nan, math.nan
    var_a = sum((x - mean_a) ** 2 for x in a) / (n_a - 1)
    var_b = sum((x - mean_b) ** 2 for x in b) / (n_b - 1)
    se2 = var_a / n_a + var_b / n_b
    if se2 == 0:
        return diff, diff, diff
    df = se2**2 / ((var_a / n_a) ** 2 / (n_a - 1) + (var_b / n_b) ** 2 / (n_b - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * math.sqrt(se2)
    return diff, diff - half, diff + half


def _find_baselines(items: list[Experiment], baseline: str | None) -> dict[tuple[str, str], Experiment]:
    """The baseline experiment of each (model, dataset): the one whose label or method is ``baseline``
    (a method such as "ANN" picks one per model and dataset)."""
    if baseline is None:
        return {}
    matches = [e for e in items if e.label == baseline] or [e for e in items if baseline == e.method]
    if not matches:
        matches = [e for e in items if baseline.lower() in e.label.lower()]
    if not matches:
        raise ConfigError(
            f"baseline {baseline!r} matches 0 experiments; choose one of: "
            + "; ".join(e.label for e in items)
        )
    chosen: dict[tuple[str, str], Experiment] = {}
    for e in matches:
        key = (e.config.model, e.config.dataset)
        if key in chosen:
            raise ConfigError(
                f"baseline {baseline!r} matches several experiments of {key[0]} on {key[1]} "
                f"({chosen[key].label!r}, {e.label!r}); give a full label"
            )
        chosen[key] = e
    return chosen


def summarize(items: list[Experiment], baseline: str | None = None) -> list[dict[str, Any]]:
    """One row per experiment: label, method, model, dataset, n, mean, std, seeds, and the difference to
    the baseline of its model and dataset with its 95% interval."""
    bases = _find_baselines(items, baseline)
    rows = []
    for e in items:
        row: dict[str, Any] = {
            "experiment": e.label, "method": e.method, "model": e.config.model, "dataset": e.config.dataset,
            "head": e.config.head, "n": e.n, "mean": e.mean, "std": e.std,
            "seeds": " ".join(str(r.config.seed) for r in e.runs),
        }  # fmt: skip
        base = bases.get((e.config.model, e.config.dataset))
        if base is not None and e is not base:
            diff, low, high = difference_interval(e.accuracies, base.accuracies)
            row.update({"diff": diff, "ci_low": low, "ci_high": high})
        rows.append(row)
    return rows


def _number(value: float, digits: int = 2) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


def _cell(row: dict[str, Any]) -> str:
    text = f"{_number(row['mean'])} ± {_number(row['std'])} (n={row['n']})"
    if "diff" in row:
        text += f"; {row['diff']:+.2f} [{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
    return text


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _ablation_label(config: Any) -> str:
    options = config.head_options
    flags = ", ".join(
        f"{name} {'learned' if options.get(f'learn_{name}', True) else 'fixed'}"
        for name in ("location", "covariance", "skewness")
    )
    return (
        f"{flags}; lambda {options.get('likelihood_weight', 0.01)}, beta {options.get('angle_weight', 0.1)}"
    )


def format_report(rows: list[dict[str, Any]], items: list[Experiment], layout: str = "long") -> str:
    """Markdown of the summarized rows in one of ``LAYOUTS``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    by_label = {row["experiment"]: row for row in rows}
    if layout == "long":
        body = [
            [r["experiment"], str(r["n"]), _number(r["mean"]), _number(r["std"]), r["seeds"],
             _number(r.get("diff")) if "diff" in r else "",
             f"[{_number(r['ci_low'])}, {_number(r['ci_high'])}]" if "diff" in r else ""]
            for r in rows
        ]  # fmt: skip
        return _markdown(
            ["experiment", "n", "mean top-1 %", "std", "seeds", "diff to baseline", "95% CI"], body
        )
    datasets = sorted({e.config.dataset for e in items})
    if layout == "table1":
        keys = sorted({(e.config.model, e.method) for e in items})
        body = []
        for model, method in keys:
            cells = []
            for dataset in datasets:
                match = [
                    e
                    for e in items
                    if (e.config.model, e.method, e.config.dataset) == (model, method, dataset)
                ]
                cells.append("; ".join(_cell(by_label[e.label]) for e in match) or "")
            body.append([model, method, *cells])
        return _markdown(["model", "method", *datasets], body)
    if layout == "table3":
        heads = sorted({e.method for e in items})
        body = []
        for dataset in datasets:
            cells = []
            for method in heads:
                match = [e for e in items if (e.method, e.config.dataset) == (method, dataset)]
                cells.append("; ".join(_cell(by_label[e.label]) for e in match))
            body.append([dataset, *cells])
        return _markdown(["dataset", *heads], body)
    body = [[_ablation_label(e.config), e.config.dataset, _cell(by_label[e.label])] for e in items]
    return _markdown(["SL parameters and loss weights", "dataset", "top-1 %"], body)


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns = ["experiment", "method", "model", "dataset", "head", "n", "mean", "std", "seeds", "diff",
               "ci_low", "ci_high"]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()
