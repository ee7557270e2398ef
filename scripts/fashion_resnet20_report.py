"""Tables and figures of the ResNet-20 Fashion-MNIST study from its committed records (REPRODUCTION.md).

    .venv/bin/python scripts/fashion_resnet20_report.py [--out docs/reproduction/fashion-resnet20]

Reads docs/reproduction/records/fashion-resnet20/ only (the checkpoints under runs/ are needed just for
the Figure 1 histograms of seed 0, which are drawn when they are still there). Writes:

    table.md / table.csv    accuracy per arm (recalibrated BN, running BN beside), paired differences with
                            95% intervals and Welch's, per-seed values, and the protocol's verdicts
    convergence.md          the pilot's 12-epoch finals against the study's means
    figure1.md              Gaussian vs Laplace fits of the weights and features, every run
    skewness.md             the skewness angles of the SL and SLAC heads
    cost.md                 images/s, minutes per run, the machines
    curves.png              test and training top-1 per epoch, mean and min-max band over seeds, per arm
    fig1_<run>.png          Figure 1 histograms of the seed-0 ANN and SLAC-ANN (when the checkpoints exist)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "reproduction" / "records" / "fashion-resnet20"
OUT = ROOT / "docs" / "reproduction" / "fashion-resnet20"
RUNS = ROOT / "runs" / "fashion-resnet20"
COMPARISONS = ["SLAC-ANN:ANN", "ANN:CNN", "SLAC-ANN:SL-ANN", "SLAC-ANN:LGM-ANN", "SLAC-ANN:L-Softmax-ANN",
               "SLAC-ANN:MoM-ANN", "SL-ANN:ANN", "LGM-ANN:ANN"]  # fmt: skip
SMALLEST_CLAIMED_GAIN = 0.3  # the protocol's threshold (the paper's gains: +0.3 to +1.0)


def verdict(row: dict) -> str:
    """The protocol's reading of a paired interval (REPRODUCTION.md, "What counts as what")."""
    low, high = row["paired"]["low"], row["paired"]["high"]
    if math.isnan(low):
        return "n/a (fewer than 2 pairs)"
    if row["a"].split()[1] == "ANN" and row["b"].split()[1] == "CNN":
        if low >= -1.0 and high <= 1.0:
            return "supported (within 1 point of the CNN)"
        if high < -1.0:
            return "contradicted (more than 1 point below the CNN)"
        return "not supported (interval reaches beyond 1 point)"
    if low > 0:
        return "supported"
    if high < SMALLEST_CLAIMED_GAIN:
        return "contradicted" + (" (A is worse)" if high < 0 else " (rules out a gain of +0.3)")
    return "not supported (inconclusive)"


def _runs(phase: str) -> list[Path]:
    return sorted(p for p in (RECORDS / phase).glob("*_seed*") if (p / "summary.json").is_file())


def accuracy_tables(out: Path) -> str:
    from slac.analysis import report

    items, notes = report.experiments(_runs("main"))
    rows = report.summarize(items, "ANN")
    text = report.format_report(rows, items, "long")
    present = {e.method for e in items}
    specs = [s for s in COMPARISONS if set(s.split(":")) <= present]
    compared = report.compare(items, specs) if specs else []
    if compared:
        text += "\n\n" + report.format_comparisons(compared)
        text += "\n\n" + report.markdown_table(
            ["difference", "protocol's reading"], [[f"{r['a']} - {r['b']}", verdict(r)] for r in compared]
        )
    text += "\n\nPer seed, recalibrated / running BN statistics:\n\n" + report.format_per_seed(items)
    (out / "table.csv").write_text(report.to_csv(rows))
    return text + "".join(f"\n\nnote: {note}" for note in notes)


def convergence() -> str:
    from slac.analysis import report

    pilot, _ = report.experiments(_runs("pilot"))
    main, _ = report.experiments(_runs("main"))
    lines = []
    for p in pilot:
        match = [e for e in main if e.method == p.method]
        if not match:
            continue
        m = match[0]
        gap = m.mean - p.mean
        lines.append([p.method, f"{p.accuracies[0]:.2f}", f"{m.mean:.2f} (n={m.n})", f"{gap:+.2f}",
                      "near" if gap >= -1.0 else "short of convergence"])  # fmt: skip
    header = ["arm", f"pilot, {pilot[0].config.epochs} epochs (seed 100)" if pilot else "pilot",
              f"study, {main[0].config.epochs} epochs: mean" if main else "study", "study - pilot",
              "reading (1-point rule)"]  # fmt: skip
    return report.markdown_table(header, lines)


def _analysis(run: Path) -> dict | None:
    path = run / "analysis.json"
    return json.loads(path.read_text()) if path.is_file() else None


def figure1() -> str:
    from slac.analysis.report import markdown_table, method_name
    from slac.analysis.runs import load_run

    body, wins = [], {}
    for path in _runs("main"):
        analysis = _analysis(path)
        if analysis is None:
            continue
        run = load_run(path)
        fits = analysis["figure1"]
        cells = [method_name(run.config), str(run.config.seed), fits["layer"]]
        for part in ("weights", "features"):
            g, laplace = fits[part]["gaussian"], fits[part]["laplace"]
            if g is None:
                cells.append("constant")
                continue
            cells.append(f"{g:.3f} / {laplace:.3f}" + (" L" if laplace > g else " G"))
            key = (method_name(run.config), part)
            wins.setdefault(key, [0, 0])[0 if laplace > g else 1] += 1
        body.append(cells)
    header = ["arm", "seed", "layer", "weights: Gaussian / Laplace", "features: Gaussian / Laplace"]
    table = markdown_table(header, body)
    counts = [[arm, part, str(w[0]), str(w[1])] for (arm, part), w in sorted(wins.items())]
    tally = markdown_table(["arm", "part", "Laplace fits better", "Gaussian fits better"], counts)
    return table + "\n\n" + tally


def skewness() -> str:
    from slac.analysis.report import markdown_table, method_name
    from slac.analysis.runs import load_run

    by_seed: dict[int, dict[str, dict]] = {}
    for path in _runs("main"):
        analysis = _analysis(path)
        if analysis is None or analysis.get("skewness") is None:
            continue
        run = load_run(path)
        by_seed.setdefault(run.config.seed, {})[method_name(run.config)] = analysis["skewness"]
    arms = sorted({arm for seeds in by_seed.values() for arm in seeds})
    body = []
    for seed in sorted(by_seed):
        cells = [str(seed)]
        for arm in arms:
            s = by_seed[seed].get(arm)
            cells.append(f"{s['mean_cosine']:.3f} (L_ac {s['angle_loss']:.3f})" if s else "")
        body.append(cells)
    return markdown_table(["seed", *(f"{arm}: mean cos(gamma)" for arm in arms)], body)


def _machine(entry: dict) -> str:
    """A CPU in words: its name, and the extensions that tell a Sapphire Rapids (AMX) from a Zen 1 (AVX2)."""
    extensions = entry.get("extensions") or [entry.get("vector", "?")]
    return f"{entry['cpu']} ({', '.join(extensions)}; {entry['threads']} threads)"


def cost() -> str:
    from slac.analysis.report import markdown_table, method_name
    from slac.analysis.runs import load_run

    body = []
    for phase in ("pilot", "main"):
        for path in _runs(phase):
            run = load_run(path)
            minutes = sum(run.epoch_minutes)
            machine = path / "machine.json"
            machines = json.loads(machine.read_text()) if machine.is_file() else []
            cpus = sorted({_machine(m) for m in machines})
            body.append([phase, method_name(run.config), str(run.config.seed), str(len(run.metrics)),
                         f"{run.summary['train_images_per_s']:.0f}", f"{minutes:.1f}",
                         str(len(machines)), "; ".join(cpus)])  # fmt: skip
    return markdown_table(["phase", "arm", "seed", "epochs", "train images/s", "minutes (train + eval)",
                      "processes", "machine"], body)  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--records", default=str(RECORDS), help="the study's records folder")
    args = parser.parse_args(argv)
    global RECORDS
    RECORDS = Path(args.records)
    if not _runs("main") or not _runs("pilot"):
        raise SystemExit(f"{RECORDS}: the pilot and at least one main run must have finished first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from slac.analysis import plots

    parts = {
        "table.md": accuracy_tables(out),
        "convergence.md": convergence(),
        "figure1.md": figure1(),
        "skewness.md": skewness(),
        "cost.md": cost(),
    }
    for name, text in parts.items():
        (out / name).write_text(text + "\n")
        print(f"## {name}\n\n{text}\n")
    plots.plot_curves(_runs("main"), out / "curves.png", band=True)
    plots.plot_curves(_runs("pilot"), out / "pilot_curves.png")
    for name in ("resnet20_ann_linear_seed0", "resnet20_ann_slac_seed0", "resnet20_cnn_linear_seed0"):
        if (RUNS / "main" / name / "checkpoints" / "last.pt").is_file():
            plots.plot_histograms(RUNS / "main" / name, out / f"fig1_{name}.png")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
