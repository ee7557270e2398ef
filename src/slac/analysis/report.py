"""``slac report``: accuracy tables from run directories, with the spread over seeds.

Runs whose recipes differ only in the seed (and in how they were executed: device, output place, ...)
are one experiment. For each, the table gives the mean of the final test top-1 (the last epoch's, not
the best epoch's: choosing the best epoch on the test split flatters every method), the sample standard
deviation (n - 1), n, and the difference of means to a baseline experiment with a 95% confidence
interval from Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom):

    diff = mean_a - mean_b,  se = sqrt(s_a^2 / n_a + s_b^2 / n_b),
    df = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1)),
    CI = diff -+ t_{0.975, df} * se.

With n = 1 in either group there is no interval ("n/a").

Comparisons (``--compare A:B``, methods or labels): A - B paired by seed, over the seeds both have
(d_i = a_i - b_i, mean d, sd s_d, CI = d -+ t_{0.975, n-1} s_d / sqrt(n)), with Welch's interval beside
as a check, on the headline figures and on the BatchNorm statistics logged beside them (the running
statistics when the headline is recalibrated). Runs of one seed in two arms share their data order and
augmentation (the loader's generator is seeded by the run's seed), which is what the pairing uses.
``--per_seed`` lists every run's figure. Layouts: ``long`` (one row per experiment),
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
from slac.train.config import other_bn

__all__ = [
    "Experiment",
    "check_run_list",
    "compare",
    "difference_interval",
    "experiments",
    "format_comparisons",
    "format_per_seed",
    "format_report",
    "markdown_table",
    "paired_interval",
    "summarize",
]

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
        return _std(self.accuracies)

    @property
    def seeds(self) -> list[int]:
        return [run.config.seed for run in self.runs]

    @property
    def beside(self) -> list[float] | None:
        """The final test top-1 of every run on the other BatchNorm statistics; None unless all logged it."""
        return self.on(other_bn(self.config.eval_bn))

    def on(self, bn: str) -> list[float] | None:
        """The final test top-1 of every run on the given BatchNorm statistics; None unless all logged it."""
        values = [run.final_test_top1_on(bn) for run in self.runs]
        return None if any(v is None for v in values) else values  # type: ignore[return-value]


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((a - mean) ** 2 for a in values) / (len(values) - 1))


_ANN_METHODS = {"linear": "ANN", "slac": "SLAC-ANN", "sl": "SL-ANN", "lgm": "LGM-ANN", "mom": "MoM-ANN",
                "lsoftmax": "L-Softmax-ANN"}  # fmt: skip
METHODS = ("CNN", "BNN", *_ANN_METHODS.values())
"""The paper's method names (``method_name``); other heads give "ANN (head)", "CNN (head)"."""


def method_name(config: Any) -> str:
    """The paper's name of a (form, head) pair: CNN, BNN, ANN, SLAC-ANN, or ANN with another head."""
    if config.form != "ann":
        return config.form.upper() + ("" if config.head == "linear" else f" ({config.head})")
    return _ANN_METHODS.get(config.head, f"ANN ({config.head})")


def _label(config: Any, varying: set[str]) -> str:
    parts = [f"{config.model} {method_name(config)} {config.dataset}"]
    for key in sorted(varying - {"model", "form", "head", "dataset"}):
        parts.append(f"{key}={getattr(config, key)}")
    return ", ".join(parts)


def check_run_list(paths: Any, what: str) -> list[Path]:
    """``paths`` as a non-empty list of run directories; one path alone is refused, not read as the list
    of its characters."""
    if isinstance(paths, str | Path):
        raise ConfigError(f"{what}: give a list of run directories, e.g. [{str(paths)!r}]")
    if not paths:
        raise ConfigError(f"{what}: give at least one run directory")
    return [Path(path) for path in paths]


def experiments(paths: list[str | Path]) -> tuple[list[Experiment], list[str]]:
    """Group runs into experiments; returns them and notes on runs left out (unfinished, duplicates)."""
    check_run_list(paths, "report")
    notes: list[str] = []
    groups: dict[tuple, list[Run]] = {}
    seen: set[Path] = set()
    for path in paths:
        run = load_run(path)
        if run.path.resolve() in seen:  # one run given twice (a shell glob and a name) is one run
            notes.append(f"{path}: given more than once; counted once")
            continue
        seen.add(run.path.resolve())
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
    if n_a == 0 or n_b == 0:
        raise ConfigError(
            f"a difference of means needs at least one value in each group, got {n_a} and {n_b}"
        )
    mean_a, mean_b = sum(a) / n_a, sum(b) / n_b
    diff = mean_a - mean_b
    if n_a < 2 or n_b < 2:
        return diff, math.nan, math.nan
    var_a, var_b = _std(a) ** 2, _std(b) ** 2
    se2 = var_a / n_a + var_b / n_b
    if se2 == 0:
        return diff, diff, diff
    df = se2**2 / ((var_a / n_a) ** 2 / (n_a - 1) + (var_b / n_b) ** 2 / (n_b - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * math.sqrt(se2)
    return diff, diff - half, diff + half


def paired_interval(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> dict[str, Any]:
    """A - B paired by key (seed): {"n", "diff", "sd", "low", "high", "seeds"} over the keys both have;
    low/high are NaN with fewer than 2 pairs."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    differences = [a[s] - b[s] for s in seeds]
    n = len(differences)
    if n == 0:
        return {"n": 0, "diff": math.nan, "sd": math.nan, "low": math.nan, "high": math.nan, "seeds": []}
    diff, sd = sum(differences) / n, _std(differences)
    if n < 2:
        low = high = math.nan
    else:
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
        low, high = diff - half, diff + half
    return {"n": n, "diff": diff, "sd": sd, "low": low, "high": high, "seeds": seeds}


def _select(items: list[Experiment], name: str, what: str) -> dict[tuple[str, str], Experiment]:
    """The experiment named ``name`` of each (model, dataset): by full label, else by method ("ANN" picks
    one per model and dataset; any case), else by a part of the label; raises when none matches or one
    model and dataset has several. A method name is only a method: "ANN" does not fall back to the
    SLAC-ANN whose label contains it."""
    if not name.strip():
        raise ConfigError(f"{what} {name!r}: give a method or an experiment label, e.g. ANN")
    methods = {m.casefold() for m in (*METHODS, *(e.method for e in items))}
    if any(e.label == name for e in items):
        matches = [e for e in items if e.label == name]
    elif name.casefold() in methods:
        matches = [e for e in items if e.method.casefold() == name.casefold()]
    else:
        matches = [e for e in items if name.casefold() in e.label.casefold()]
    if not matches:
        raise ConfigError(f"{what} {name!r} matches 0 experiments; choose among: "
                          + "; ".join(e.label for e in items))  # fmt: skip
    chosen: dict[tuple[str, str], Experiment] = {}
    for e in matches:
        key = (e.config.model, e.config.dataset)
        if key in chosen:
            raise ConfigError(
                f"{what} {name!r} matches several experiments of {key[0]} on {key[1]} "
                f"({chosen[key].label!r}, {e.label!r}); give a full label"
            )
        chosen[key] = e
    return chosen


def _arms(spec: str) -> tuple[str, str]:
    """Split "A:B" at its one colon outside brackets and quotes: a full label may hold a recipe value that
    prints with colons ("head_options={'angle_weight': 0.0}")."""
    depth, quote, colons = 0, "", []
    for index, char in enumerate(spec):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == ":" and depth == 0:
            colons.append(index)
    if len(colons) != 1 or colons[0] in (0, len(spec) - 1):
        raise ConfigError(f"--compare takes A:B (two methods or labels, e.g. SLAC-ANN:ANN), got {spec!r}")
    return spec[: colons[0]], spec[colons[0] + 1 :]


def compare(items: list[Experiment], specs: list[str]) -> list[dict[str, Any]]:
    """One row per comparison "A:B" and (model, dataset) both arms have: A - B paired by seed and by
    Welch, on the headline figures and on those beside them."""
    rows = []
    for spec in specs:
        first, second = _arms(spec)
        arms_a = _select(items, first, f"--compare {spec}:")
        arms_b = _select(items, second, f"--compare {spec}:")
        found = False
        for key, a in arms_a.items():
            b = arms_b.get(key)
            if b is a:
                raise ConfigError(f"--compare {spec}: both arms are the experiment {a.label!r}")
            if b is None:
                continue
            found = True
            # Both arms on A's headline BatchNorm statistics, and on the other ones beside.
            headline = a.config.eval_bn
            values_b = b.on(headline)
            if values_b is None:
                raise ConfigError(
                    f"--compare {spec}: {b.label!r} has no final test top-1 on {headline} BatchNorm "
                    f"statistics, on which {a.label!r} is reported; compare runs that log both "
                    "(eval_bn: recalibrated logs the running figure beside)"
                )
            row: dict[str, Any] = {"a": a.label, "b": b.label, "method_a": a.method, "method_b": b.method,
                                   "model": a.config.model, "dataset": a.config.dataset,
                                   "headline": headline}  # fmt: skip
            row["paired"] = paired_interval(dict(zip(a.seeds, a.accuracies, strict=True)),
                                            dict(zip(b.seeds, values_b, strict=True)))  # fmt: skip
            diff, low, high = difference_interval(a.accuracies, values_b)
            row["welch"] = {"diff": diff, "low": low, "high": high, "n_a": a.n, "n_b": b.n}
            beside_b = b.on(other_bn(headline))
            if a.beside is not None and beside_b is not None:
                row["beside"] = paired_interval(dict(zip(a.seeds, a.beside, strict=True)),
                                                dict(zip(b.seeds, beside_b, strict=True)))  # fmt: skip
            rows.append(row)
        if not found:
            raise ConfigError(f"--compare {spec}: no model and dataset has both arms")
    return rows


def _interval(low: float, high: float) -> str:
    return f"[{low:+.2f}, {high:+.2f}]" if not (math.isnan(low) or math.isnan(high)) else "n/a"


def _group_sizes(welch: dict[str, Any], pairs: int) -> str:
    """Welch's n of each arm, when it covers other runs than the pairs do."""
    return "" if welch["n_a"] == welch["n_b"] == pairs else f" (n {welch['n_a']} / {welch['n_b']})"


def format_comparisons(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per comparison, paired and Welch intervals, and the paired figure beside."""
    headlines = {row["headline"] for row in rows}
    mixed = len(headlines) > 1  # then every row names its statistics
    body = []
    for row in rows:
        paired, welch, beside = row["paired"], row["welch"], row.get("beside")
        name = f"{row['a']} - {row['b']}" + (f" ({row['headline']} BN)" if mixed else "")
        body.append([
            name, str(paired["n"]), f"{paired['diff']:+.2f}", _number(paired["sd"]),
            _interval(paired["low"], paired["high"]),
            _interval(welch["low"], welch["high"]) + _group_sizes(welch, paired["n"]),
            f"{beside['diff']:+.2f} {_interval(beside['low'], beside['high'])}" if beside else "",
        ])  # fmt: skip
    if mixed or not rows:
        first, last = "difference", "paired, other BN"
    else:
        headline = rows[0]["headline"]
        first, last = f"difference ({headline} BN)", f"paired, {other_bn(headline)} BN"
    header = [first, "pairs", "mean", "sd of pairs", "paired 95% CI", "Welch 95% CI", last]
    return markdown_table(header, body)


def format_per_seed(items: list[Experiment]) -> str:
    """Markdown: every run's final test top-1 (headline / beside), one row per experiment."""
    seeds = sorted({s for e in items for s in e.seeds})
    body = []
    for e in items:
        by_seed = {}
        for index, seed in enumerate(e.seeds):
            text = f"{e.accuracies[index]:.2f}"
            if e.beside is not None:
                text += f" / {e.beside[index]:.2f}"
            by_seed[seed] = text
        body.append([e.label, *(by_seed.get(s, "") for s in seeds)])
    return markdown_table(["experiment", *(f"seed {s}" for s in seeds)], body)


def _find_baselines(items: list[Experiment], baseline: str | None) -> dict[tuple[str, str], Experiment]:
    """The baseline experiment of each (model, dataset) (see ``_select``); none without a baseline."""
    return {} if baseline is None else _select(items, baseline, "baseline")


def summarize(items: list[Experiment], baseline: str | None = None) -> list[dict[str, Any]]:
    """One row per experiment: label, method, model, dataset, n, mean, std, seeds, and the difference to
    the baseline of its model and dataset with its 95% interval."""
    bases = _find_baselines(items, baseline)
    rows = []
    for e in items:
        row: dict[str, Any] = {
            "experiment": e.label, "method": e.method, "model": e.config.model, "dataset": e.config.dataset,
            "head": e.config.head, "n": e.n, "mean": e.mean, "std": e.std,
            "seeds": " ".join(str(r.config.seed) for r in e.runs), "eval_bn": e.config.eval_bn,
        }  # fmt: skip
        if e.beside is not None:
            row.update({"beside_mean": sum(e.beside) / e.n, "beside_std": _std(e.beside)})
        base = bases.get((e.config.model, e.config.dataset))
        # The difference is taken on this experiment's headline BatchNorm statistics in both arms; n/a
        # (NaN) when the baseline did not log them.
        if base is not None and e is not base:
            base_values = base.on(e.config.eval_bn)
            diff, low, high = (
                difference_interval(e.accuracies, base_values) if base_values is not None else (math.nan,) * 3
            )
            row.update({"diff": diff, "ci_low": low, "ci_high": high})
        rows.append(row)
    return rows


def _number(value: float, digits: int = 2) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


NO_BASELINE_FIGURES = "n/a (the baseline lacks these BatchNorm statistics)"  # a NaN difference


def _difference(row: dict[str, Any]) -> str:
    return NO_BASELINE_FIGURES if math.isnan(row["diff"]) else _number(row["diff"])


def _cell(row: dict[str, Any]) -> str:
    text = f"{_number(row['mean'])} ± {_number(row['std'])} (n={row['n']})"
    if "diff" in row and math.isnan(row["diff"]):
        text += f"; {NO_BASELINE_FIGURES}"
    elif "diff" in row:
        text += f"; {row['diff']:+.2f} [{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
    return text


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _ablation_label(config: Any) -> str:
    """The SL parameters learned or fixed and the loss weights of an SL/SLAC head, with the head's own
    defaults for what the recipe leaves out; other heads have none of them and are named by their method."""
    import inspect

    from slac.heads import SkewLaplaceHead

    if config.head not in ("sl", "slac"):
        return method_name(config)
    defaults = {name: parameter.default for name, parameter in
                inspect.signature(SkewLaplaceHead.__init__).parameters.items()}  # fmt: skip
    options = {**defaults, **config.head_options}
    if config.head == "sl":  # the "sl" head is the SL head without the angle constraint: beta is 0
        options["angle_weight"] = 0.0
    flags = ", ".join(
        f"{name} {'learned' if options[f'learn_{name}'] else 'fixed'}"
        for name in ("location", "covariance", "skewness")
    )
    return f"{flags}; lambda {options['likelihood_weight']}, beta {options['angle_weight']}"


def format_report(rows: list[dict[str, Any]], items: list[Experiment], layout: str = "long") -> str:
    """Markdown of the summarized rows in one of ``LAYOUTS``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    by_label = {row["experiment"]: row for row in rows}
    if layout == "long":
        body = [
            [r["experiment"], str(r["n"]), _number(r["mean"]), _number(r["std"]), r["seeds"],
             _difference(r) if "diff" in r else "",
             f"[{_number(r['ci_low'])}, {_number(r['ci_high'])}]" if "diff" in r else ""]
            for r in rows
        ]  # fmt: skip
        header = ["experiment", "n", "mean top-1 %", "std", "seeds", "diff to baseline", "Welch 95% CI"]
        headlines = {r["eval_bn"] for r in rows}
        if len(headlines) > 1:  # experiments reported on different statistics: each row says which
            header.insert(1, "BN statistics")
            for line, r in zip(body, rows, strict=True):
                line.insert(1, r["eval_bn"])
        if any("beside_mean" in r for r in rows):
            if len(headlines) == 1:
                header[2] = f"mean top-1 % ({rows[0]['eval_bn']} BN)"
            header.append(f"{other_bn(rows[0]['eval_bn'])} BN: mean ± std" if len(headlines) == 1
                          else "other BN statistics: mean ± std")  # fmt: skip
            for line, r in zip(body, rows, strict=True):
                line.append(f"{_number(r['beside_mean'])} ± {_number(r['beside_std'])}" if "beside_mean" in r
                            else "")  # fmt: skip
        return markdown_table(header, body)
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
        return markdown_table(["model", "method", *datasets], body)
    if layout == "table3":
        heads = sorted({e.method for e in items})
        body = []
        for dataset in datasets:
            cells = []
            for method in heads:
                match = [e for e in items if (e.method, e.config.dataset) == (method, dataset)]
                cells.append("; ".join(_cell(by_label[e.label]) for e in match))
            body.append([dataset, *cells])
        return markdown_table(["dataset", *heads], body)
    body = [[_ablation_label(e.config), e.config.dataset, _cell(by_label[e.label])] for e in items]
    return markdown_table(["SL parameters and loss weights", "dataset", "top-1 %"], body)


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns = ["experiment", "method", "model", "dataset", "head", "n", "mean", "std", "seeds", "diff",
               "ci_low", "ci_high", "eval_bn", "beside_mean", "beside_std"]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()
