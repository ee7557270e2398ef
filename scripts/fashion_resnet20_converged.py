"""The ResNet-20 study on the full Fashion-MNIST near convergence (REPRODUCTION.md, "ResNet-20 on the full
Fashion-MNIST near convergence", "Protocol"): cost probe, pilots at E and 2E, the main arms, then the CNN,
in the protocol's order. Run it again after an interruption: finished runs are skipped, an interrupted one
resumes from its checkpoint.

    .venv/bin/python scripts/fashion_resnet20_converged.py --plan        # what is done, partial, to do
    .venv/bin/python scripts/fashion_resnet20_converged.py --commit      # run (and commit each run's records)
    .venv/bin/python scripts/fashion_resnet20_converged.py --phases cost pilot

Checkpoints: runs/fashion-resnet20-converged/ (never committed). Records:
docs/reproduction/records/fashion-resnet20-converged/. The study's epochs E come from the cost probe by
the protocol's rule and are written once to study.json there, before any pilot starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tools/ (the study runner) lives beside the library, not in it
RECIPES = ROOT / "configs" / "fashion-mnist"
RUNS = ROOT / "runs" / "fashion-resnet20-converged"
RECORDS = ROOT / "docs" / "reproduction" / "records" / "fashion-resnet20-converged"

PROBE_SEED, PROBE_EPOCHS = 100, 1
PILOT_ARM = "resnet20_ann_linear"
MAIN_ARMS = ("resnet20_ann_linear", "resnet20_ann_slac")
MAIN_SEEDS = (0, 1, 2, 3, 4)
CNN_ARM, CNN_SEEDS = "resnet20_cnn_linear", (0, 1, 2)
BUDGET_MINUTES = 720.0  # the 10 main runs
MAX_EPOCHS = 100
PHASES = ("cost", "pilot", "main", "cnn")
COMMON = {"progress": False, "tensorboard": "off", "device": "cpu"}


def _six_epoch_study():
    """The 6-epoch study's script, for what the two share (the epoch cost of a run, the analysis)."""
    path = Path(__file__).with_name("fashion_resnet20_study.py")
    spec = importlib.util.spec_from_file_location("fashion_resnet20_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def epochs_rule(t_ann: float) -> int:
    """The protocol's E: the most epochs at which the 10 main runs (SLAC-ANN costed as the ANN) fit in
    the budget at ``t_ann`` minutes per epoch, at most MAX_EPOCHS."""
    per_epoch = 2 * len(MAIN_SEEDS) * t_ann
    epochs = min(MAX_EPOCHS, math.floor(BUDGET_MINUTES / per_epoch))
    if epochs < 1:
        raise SystemExit(f"one epoch of the 10 main runs costs {per_epoch:.0f} min, over the budget")
    return epochs


def study_epochs(study, records: Path = RECORDS, save: bool = True) -> int | None:
    """E from study.json, or computed from the finished cost probe by the protocol's rule (and saved when
    ``save``, and committed when ``study`` commits); None while the probe is not finished."""
    from slac.train.records import write_json_atomic

    path = records / "study.json"
    if path.is_file():
        return int(json.loads(path.read_text())["epochs"])
    probe = records / "cost" / f"{PILOT_ARM}_seed{PROBE_SEED}"
    if not (probe / "summary.json").is_file():
        return None
    t_ann = _six_epoch_study().minutes_per_epoch(probe)
    epochs = epochs_rule(t_ann)
    if save:
        machines = (
            json.loads((probe / "machine.json").read_text()) if (probe / "machine.json").is_file() else []
        )
        write_json_atomic(
            path,
            {
                "epochs": epochs,
                "rule": "E = min(100, floor(720 / (10 * t_ann))), t_ann = the cost probe's minutes per epoch",
                "t_ann_minutes": t_ann,
                "main_minutes_estimate": epochs * 2 * len(MAIN_SEEDS) * t_ann,
                "probe_machine": machines,
            },
        )
        if study is not None and study.commit:
            study.commit_path(path, "converged study: epochs fixed from the cost probe")
    return epochs


def plan(epochs: int | None, phases) -> list:
    """The runs of ``phases`` in the protocol's order; only the cost probe before E is fixed."""
    from tools.study import PlannedRun

    runs = []

    def add(phase: str, arm: str, seed: int, epochs: int, name: str | None = None) -> None:
        runs.append(PlannedRun(phase, name or f"{arm}_seed{seed}", str(RECIPES / f"{arm}.yaml"), seed,
                               {**COMMON, "epochs": epochs}))  # fmt: skip

    if "cost" in phases:
        add("cost", PILOT_ARM, PROBE_SEED, PROBE_EPOCHS)
    if epochs is None:
        return runs
    if "pilot" in phases:
        for length in (epochs, 2 * epochs):
            add("pilot", PILOT_ARM, PROBE_SEED, length, f"{PILOT_ARM}_seed{PROBE_SEED}_{length}ep")
    if "main" in phases:
        for seed in MAIN_SEEDS:
            for arm in MAIN_ARMS:
                add("main", arm, seed, epochs)
    if "cnn" in phases:
        for seed in CNN_SEEDS:
            add("main", CNN_ARM, seed, epochs)
    return runs


def pilot_distance(epochs: int, records: Path = RECORDS) -> float | None:
    """d: the 2E pilot's final test top-1 (the headline: recalibrated statistics, the recipes' eval_bn) minus
    the E pilot's; None until both are kept."""
    values = []
    for length in (epochs, 2 * epochs):
        summary = records / "pilot" / f"{PILOT_ARM}_seed{PROBE_SEED}_{length}ep" / "summary.json"
        if not summary.is_file():
            return None
        values.append(json.loads(summary.read_text())["final_test_top1"])
    return values[1] - values[0]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--plan", action="store_true", help="print each run's state and stop (writes nothing)"
    )
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--commit", action="store_true", help="git-commit each run's records when it ends")
    parser.add_argument("--max_runs", type=int, default=None, help="stop after this many runs were trained")
    args = parser.parse_args(argv)

    import slac.analysis.runs  # the analysis code is loaded now, with the training code
    import slac.analysis.tails  # noqa: F401
    from slac.train import TrainingInterrupted
    from tools.study import Study

    study = Study(RUNS, RECORDS, analyze=_six_epoch_study().analyze, commit=args.commit, root=ROOT)
    epochs = study_epochs(study, save=not args.plan)
    print(
        f"study epochs: {epochs if epochs is not None else 'not fixed yet (the cost probe has not finished)'}"
    )
    if epochs is not None and (d := pilot_distance(epochs)) is not None:
        print(f"pilots: the {2 * epochs}-epoch ANN ends {d:+.2f} points from the {epochs}-epoch one "
              f"({'within' if d <= 0.3 else 'beyond'} the protocol's 0.3)")  # fmt: skip
    if args.plan:
        for key, state in study.status(plan(epochs, args.phases)):
            print(f"  {key:50s} {state}")
        return 0
    if epochs is None and "cost" not in args.phases:
        print(
            "the study's epochs are fixed by the cost probe, which has not finished: run --phases cost first"
        )
        return 2
    with study.lock():
        if args.commit:
            study.commit_pending()
        study.analyze_missing(plan(epochs, args.phases))
        trained = 0
        while True:
            todo = [run for run in plan(study_epochs(study), args.phases) if not study.is_done(run)]
            if not todo:
                print("every planned run is done")
                return 0
            if args.max_runs is not None and trained >= args.max_runs:
                print(f"stopped after {trained} runs; {len(todo)} left")
                return 0
            try:
                summary = study.execute(todo[0])
            except TrainingInterrupted as stop:
                print(f"interrupted: {todo[0].key} keeps its checkpoint or records; run this script again")
                return 128 + stop.signum
            trained += 1
            if summary is not None:
                print(f"{todo[0].key}: test top-1 {summary['final_test_top1']:.2f}% "
                      f"(running statistics {summary['final_test_top1_running']:.2f}%)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
