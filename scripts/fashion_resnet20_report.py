"""Tables and figures of the ResNet-20 Fashion-MNIST study from its committed records (REPRODUCTION.md).

    .venv/bin/python scripts/fashion_resnet20_report.py [--out docs/reproduction/fashion-resnet20]

Reads docs/reproduction/records/fashion-resnet20/ only (the checkpoints under runs/ are needed just for
the Figure 1 histograms, drawn for each main arm from its lowest seed whose checkpoint is still there;
checkpoints are never committed, so a fresh checkout draws them from the runs trained in it). Writes:

    table.md / table.csv    accuracy per arm (recalibrated BN, running BN beside), paired differences with
                            95% intervals and Welch's, the protocol's readings, per-seed values
    convergence.md          the pilot's 12-epoch finals against the study's means (decided on the ANN)
    figure1.md              Gaussian vs Laplace fits of the weights and features, every run, and readings
    skewness.md             the skewness angles of the SL and SLAC heads, and the reading
    cost.md                 images/s, minutes per run, the machines
    curves.png              test and training top-1 per epoch, mean and min-max band over seeds, per arm
    pilot_curves.png        the pilot's curves
    fig1_<run>.png          Figure 1 histograms, one run per main arm (listed at the end of figure1.md)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "reproduction" / "records" / "fashion-resnet20"
OUT = ROOT / "docs" / "reproduction" / "fashion-resnet20"
RUNS = ROOT / "runs" / "fashion-resnet20"
# Comparisons with a pre-registered reading (REPRODUCTION.md, "What counts as what"), then exploratory ones.
REGISTERED = ["SLAC-ANN:ANN", "ANN:CNN", "SLAC-ANN:SL-ANN", "SLAC-ANN:LGM-ANN"]
EXPLORATORY = ["SLAC-ANN:L-Softmax-ANN", "SLAC-ANN:MoM-ANN", "SL-ANN:ANN", "LGM-ANN:ANN"]
SMALLEST_CLAIMED_GAIN = 0.3  # the protocol's threshold (the paper's gains: +0.3 to +1.0)
CONVERGENCE_POINTS = 1.0  # the protocol's "near convergence": the ANN within 1 point of the pilot
ANN_CNN_POINTS = 1.0  # "ANNs approach the CNN": the paired ANN - CNN interval within +-1 point
FIGURE1_ARMS = ("ANN", "SLAC-ANN")  # the protocol's Figure 1 reading; the other heads are exploratory
MAIN_SEEDS = 5  # the protocol's seeds of the main arms (the study script's MAIN_SEEDS); fewer are said


def verdict(row: dict, qualifier: str = "") -> str:
    """The protocol's reading of a paired interval (REPRODUCTION.md, "What counts as what", with the
    amendment of 2026-12-02 for overlapping readings). ``qualifier`` (e.g. " at 6 epochs") is added to the
    readings of accuracy claims when the study is short of convergence."""
    pair = (row["method_a"], row["method_b"])
    if f"{pair[0]}:{pair[1]}" not in REGISTERED:
        return "exploratory (no pre-registered reading)"
    low, high, n = row["paired"]["low"], row["paired"]["high"], row["paired"]["n"]
    if math.isnan(low):
        return "n/a (fewer than 2 pairs)"
    caveat = f", {n} pairs" if n < MAIN_SEEDS else ""
    if pair == ("ANN", "CNN"):
        if low >= -ANN_CNN_POINTS and high <= ANN_CNN_POINTS:
            text = "supported (within 1 point of the CNN"
        elif high < -ANN_CNN_POINTS:
            text = "contradicted (more than 1 point below the CNN"
        else:
            text = "not supported (the interval reaches beyond 1 point"
        return f"{text}{caveat}){qualifier}"
    if low > 0 and high < SMALLEST_CLAIMED_GAIN:
        text = f"a gain smaller than the paper's (supported in sign, contradicted in size{caveat})"
    elif low > 0:
        text = f"supported{caveat}"
    elif high < SMALLEST_CLAIMED_GAIN:
        text = "contradicted" + (" (A is worse" if high < 0 else " (rules out a gain of +0.3") + f"{caveat})"
    else:
        text = f"not supported (inconclusive{caveat})"
    return text + qualifier


def _runs(records: Path, phase: str) -> list[Path]:
    return sorted(p for p in (records / phase).glob("*_seed*") if (p / "summary.json").is_file())


def _all_runs(items: list) -> list:
    return sorted((run for e in items for run in e.runs), key=lambda run: str(run.path))


def failed_runs(records: Path) -> list[str]:
    """One line per failed run (failed.json): its arm, seed, the epoch it failed in and its last logged
    test top-1 (amendment 4: reported with its last epoch, not replaced, its arm's n says so)."""
    from slac.analysis.report import method_name
    from slac.analysis.runs import load_run

    lines, per_arm = [], {}
    for path in sorted((records / "main").glob("*_seed*")):  # the pilot is not in the tables
        if not (path / "failed.json").is_file():
            continue
        failed = json.loads((path / "failed.json").read_text())
        run = load_run(path)
        tested = [row for row in run.metrics if row.get("test_top1") is not None]
        last = (
            f"last logged test top-1 {tested[-1]['test_top1']:.2f}% at epoch {tested[-1]['epoch']}"
            if tested
            else "no epoch was evaluated"
        )
        arm = method_name(run.config)
        per_arm[arm] = per_arm.get(arm, 0) + 1
        lines.append(
            f"main/{path.name} ({arm}, seed {run.config.seed}): failed in epoch {failed.get('epoch')} "
            f"({failed.get('error')}); {last}; not in the table"
        )
    lines += [f"{arm}: n is {count} smaller than planned (failed runs)" for arm, count in per_arm.items()]
    return lines


def convergence_gap(pilot: list, main: list, method: str = "ANN") -> float | None:
    """The study's mean of an arm minus its pilot's final (None until both exist)."""
    p = [e for e in pilot if e.method == method]
    m = [e for e in main if e.method == method]
    return m[0].mean - p[0].mean if p and m else None


def short_of_convergence(gap: float) -> bool:
    """The protocol's rule, decided on the ANN's gap: more than 1 point below the 12-epoch pilot."""
    return gap < -CONVERGENCE_POINTS


def accuracy_tables(main: list, notes: list[str], out: Path, qualifier: str = "") -> str:
    from slac.analysis import report

    rows = report.summarize(main, "ANN")
    text = report.format_report(rows, main, "long")
    present = {e.method for e in main}
    specs = [s for s in REGISTERED + EXPLORATORY if set(s.split(":")) <= present]
    compared = report.compare(main, specs) if specs else []
    if compared:
        text += "\n\n" + report.format_comparisons(compared)
        readings = [[f"{r['method_a']} - {r['method_b']}", verdict(r, qualifier)] for r in compared]
        text += "\n\n" + report.markdown_table(["difference", "the protocol's reading"], readings)
    text += "\n\nPer seed, recalibrated / running BN statistics:\n\n" + report.format_per_seed(main)
    (out / "table.csv").write_text(report.to_csv(rows))
    return text + "".join(f"\n\nnote: {note}" for note in notes)


def convergence(pilot: list, main: list) -> str:
    from slac.analysis import report

    lines = []
    for p in pilot:
        gap = convergence_gap(pilot, main, p.method)
        if gap is None:
            continue
        m = next(e for e in main if e.method == p.method)
        if p.method == "ANN":
            reading = "short of convergence" if short_of_convergence(gap) else "near convergence"
        else:
            reading = "(reported beside; the ANN decides)"
        lines.append([p.method, f"{p.accuracies[0]:.2f}", f"{m.mean:.2f} (n={m.n})", f"{gap:+.2f}", reading])
    epochs = f"{pilot[0].config.epochs} epochs (seed 100)" if pilot else ""
    header = ["arm", f"pilot, {epochs}", f"study, {main[0].config.epochs} epochs: mean" if main else "study",
              "study - pilot", "reading (1-point rule)"]  # fmt: skip
    return report.markdown_table(header, lines)


def _analysis(run: Path) -> dict | None:
    path = run / "analysis.json"
    return json.loads(path.read_text()) if path.is_file() else None


HISTOGRAM_ARMS = ("ANN", "SLAC-ANN", "CNN")  # one Figure 1 histogram per main arm


def histogram_run(experiment, main_runs: Path):
    """The finished run of ``experiment`` (its runs are the finished ones, sorted by seed) with the lowest
    seed whose last checkpoint is still under ``main_runs``; None when no finished run has one (an
    interrupted run's checkpoint is not the final model, and it has no records to be listed by)."""
    return next((run for run in experiment.runs
                 if (main_runs / run.path.name / "checkpoints" / "last.pt").is_file()), None)  # fmt: skip


def histograms(main: list, main_runs: Path, out: Path) -> str:
    """Draws fig1_<run>.png for each main arm from histogram_run's choice (an earlier seed's figure of the
    arm goes); keeps and names an earlier report's figure when no checkpoint is left. Returns the list."""
    from slac.analysis import plots

    drawn = []
    for e in main:
        if e.method not in HISTOGRAM_ARMS:
            continue
        stem = e.runs[0].path.name.rsplit("_seed", 1)[0]
        earlier = sorted(path.name for path in out.glob(f"fig1_{stem}_seed*.png"))
        run = histogram_run(e, main_runs)
        if run is None:
            # the committed doc names the repository's folder, not this machine's path to it
            shown = main_runs.relative_to(ROOT) if main_runs.is_relative_to(ROOT) else main_runs
            missing = f"no finished run's checkpoint under {shown}"
            kept = f"`{earlier[0]}`, drawn by an earlier report ({missing} now)" if earlier else None
            drawn.append(f"- {e.method}: {kept or f'not drawn ({missing})'}")
            continue
        for name in earlier:
            (out / name).unlink()
        plots.plot_histograms(main_runs / run.path.name, out / f"fig1_{run.path.name}.png")
        drawn.append(f"- {e.method}: `fig1_{run.path.name}.png`")
    return "Histograms (each arm's lowest seed with a checkpoint here):\n\n" + "\n".join(drawn)


def figure1(main: list) -> str:
    from slac.analysis.report import markdown_table

    body, wins, analysed = [], {}, {}
    for e in main:
        for run in e.runs:
            analysis = _analysis(run.path)
            if analysis is None:
                continue
            analysed[e.method] = analysed.get(e.method, 0) + 1
            fits = analysis["figure1"]
            cells = [e.method, str(run.config.seed), fits["layer"]]
            for part in ("weights", "features"):
                g, laplace = fits[part]["gaussian"], fits[part]["laplace"]
                if g is None:
                    cells.append("constant")
                    continue
                cells.append(f"{g:.3f} / {laplace:.3f}" + (" L" if laplace > g else " G"))
                wins.setdefault((e.method, part), [0, 0])[0 if laplace > g else 1] += 1
            body.append(cells)
    header = ["arm", "seed", "layer", "weights: Gaussian / Laplace", "features: Gaussian / Laplace"]
    runs = {e.method: e.n for e in main}
    counts = []
    for (arm, part), (laplace, gaussian) in sorted(wins.items()):
        if arm == "CNN":
            reading = "(comparison)"
        elif arm not in FIGURE1_ARMS:
            reading = "exploratory (no pre-registered reading)"
        elif analysed.get(arm, 0) < runs[arm]:  # "every seed" needs every seed's analysis
            reading = f"withheld ({analysed.get(arm, 0)} of {runs[arm]} runs analysed)"
        elif laplace + gaussian < runs[arm]:
            reading = f"withheld ({runs[arm] - laplace - gaussian} of {runs[arm]} runs constant)"
        elif gaussian == 0:
            reading = "heavy tails supported (Laplace in every seed)"
        elif laplace == 0:
            reading = "heavy tails contradicted (Gaussian in every seed)"
        else:
            reading = "neither (mixed over seeds)"
        counts.append([arm, part, str(laplace), str(gaussian), reading])
    tally = markdown_table(["arm", "part", "Laplace fits better", "Gaussian fits better", "reading"], counts)
    missing = [f"{arm}: {analysed.get(arm, 0)} of {n} runs analysed" for arm, n in runs.items()
               if analysed.get(arm, 0) < n]  # fmt: skip
    note = "".join(f"\n\nnote: {line} (analysis.json missing)" for line in missing)
    return markdown_table(header, body) + "\n\n" + tally + note


def skewness(main: list) -> str:
    from slac.analysis.report import markdown_table

    by_seed: dict[int, dict[str, dict | None]] = {}
    for e in main:
        if e.method not in ("SL-ANN", "SLAC-ANN"):
            continue
        for run in e.runs:
            analysis = _analysis(run.path)
            by_seed.setdefault(run.config.seed, {})[e.method] = analysis and analysis.get("skewness")
    arms = sorted({arm for seeds in by_seed.values() for arm in seeds})
    body = []
    for seed in sorted(by_seed):
        cells = [str(seed)]
        for arm in arms:
            s = by_seed[seed].get(arm, {})
            cells.append(f"{s['mean_cosine']:.3f} (L_ac {s['angle_loss']:.3f})" if s else
                         ("not analysed" if arm in by_seed[seed] else ""))  # fmt: skip
        body.append(cells)
    text = markdown_table(["seed", *(f"{arm}: mean cos(gamma)" for arm in arms)], body)
    both = [s for s in by_seed.values() if "SLAC-ANN" in s and "SL-ANN" in s]
    pairs = [(s["SLAC-ANN"]["mean_cosine"], s["SL-ANN"]["mean_cosine"]) for s in both
             if s["SLAC-ANN"] and s["SL-ANN"]]  # fmt: skip
    if both:
        below = sum(slac < sl for slac, sl in pairs)
        if len(pairs) < len(both):
            reading = f"withheld ({len(pairs)} of {len(both)} seed pairs analysed)"
        else:
            reading = "supported as a mechanism" if below == len(pairs) else "not supported"
        text += f"\n\nSLAC's mean cosine below SL's in {below} of {len(pairs)} seed pairs: {reading}."
    return text


def _machine(entry: dict) -> str:
    """A CPU in words: its name, and the extensions that tell a Sapphire Rapids (AMX) from a Zen 1 (AVX2)."""
    if entry.get("extensions") is not None:
        extensions = ", ".join(entry["extensions"])
    else:  # entries written before the extensions were recorded name only the vector unit in use
        extensions = f"vector unit {entry.get('vector', '?')}, extensions not recorded"
    return f"{entry['cpu']} ({extensions}; {entry['threads']} threads)"


def cost(pilot: list, main: list) -> str:
    from slac.analysis.report import markdown_table, method_name

    body = []
    for phase, items in (("pilot", pilot), ("main", main)):
        for run in _all_runs(items):
            minutes = run.epoch_minutes
            machine = run.path / "machine.json"
            machines = json.loads(machine.read_text()) if machine.is_file() else []
            body.append([phase, method_name(run.config), str(run.config.seed), str(len(minutes)),
                         f"{run.summary['train_images_per_s']:.0f}", f"{sum(minutes):.1f}",
                         f"{statistics.median(minutes):.2f}", str(len(machines)),
                         "; ".join(sorted({_machine(m) for m in machines}))])  # fmt: skip
    header = ["phase", "arm", "seed", "epochs", "train images/s", "minutes (train + eval)",
              "median minutes per epoch", "processes", "machine"]  # fmt: skip
    return markdown_table(header, body)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--records", default=str(RECORDS), help="the study's records folder")
    parser.add_argument("--runs", default=str(RUNS), help="the study's run directories (for the histograms)")
    args = parser.parse_args(argv)
    records, out, runs = Path(args.records), Path(args.out), Path(args.runs)
    if not _runs(records, "main") or not _runs(records, "pilot"):
        print(f"{records}: the pilot and at least one main run must have finished first", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    from slac.analysis import plots, report

    pilot, _ = report.experiments(_runs(records, "pilot"))
    main, notes = report.experiments(_runs(records, "main"))
    gap, epochs = convergence_gap(pilot, main), main[0].config.epochs
    short = gap is not None and short_of_convergence(gap)  # the protocol: claims are then "at E epochs"
    qualifier = f" at {epochs} epochs (short of convergence)" if short else ""
    if gap is None:
        heading = "Convergence undetermined: the pilot ANN or the study's ANN has not finished.\n\n"
    elif short:
        heading = (f"Every accuracy below is at {epochs} epochs: the study's ANN mean is {-gap:.2f} points "
                   "below the 12-epoch pilot, short of convergence by the protocol's rule.\n\n")  # fmt: skip
    else:
        heading = (f"{epochs} epochs; the study's ANN mean is within {CONVERGENCE_POINTS:g} point of the "
                   f"12-epoch pilot ({gap:+.2f}): near convergence by the protocol's rule.\n\n")  # fmt: skip
    parts = {
        "table.md": heading + accuracy_tables(main, notes + failed_runs(records), out, qualifier),
        "convergence.md": convergence(pilot, main),
        "figure1.md": figure1(main) + "\n\n" + histograms(main, runs / "main", out),
        "skewness.md": skewness(main),
        "cost.md": cost(pilot, main),
    }
    for name, text in parts.items():
        (out / name).write_text(text + "\n")
        print(f"## {name}\n\n{text}\n")
    plots.plot_curves(_runs(records, "main"), out / "curves.png", band=True)
    plots.plot_curves(_runs(records, "pilot"), out / "pilot_curves.png")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
