"""The ResNet-20 study on the full Fashion-MNIST (REPRODUCTION.md, "Protocol"): pilot, main arms, secondary
heads, in the protocol's order. Run it again after an interruption: finished runs are skipped, an
interrupted one resumes from its checkpoint.

    .venv/bin/python scripts/fashion_resnet20_study.py --plan          # what is done, partial, to do
    .venv/bin/python scripts/fashion_resnet20_study.py --commit        # run (and commit each run's records)
    .venv/bin/python scripts/fashion_resnet20_study.py --phases pilot  # only the pilot

Checkpoints: runs/fashion-resnet20/ (never committed). Records: docs/reproduction/records/fashion-resnet20/.
The study's epochs E come from the pilot's measured cost by the protocol's rule and are written once to
study.json there; a later change of the rule or of the pilot does not silently change a running study.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tools/ (the study runner) lives beside the library, not in it
RECIPES = ROOT / "configs" / "fashion-mnist"
RUNS = ROOT / "runs" / "fashion-resnet20"
RECORDS = ROOT / "docs" / "reproduction" / "records" / "fashion-resnet20"

PILOT_SEED, PILOT_EPOCHS = 100, 12
MAIN_ARMS = ("resnet20_cnn_linear", "resnet20_ann_linear", "resnet20_ann_slac")
MAIN_SEEDS = (0, 1, 2, 3, 4)
SECONDARY_ARMS = (("resnet20_ann_sl", "resnet20_ann_lgm"), ("resnet20_ann_lsoftmax", "resnet20_ann_mom"))
SECONDARY_SEEDS = (0, 1, 2)
BUDGET_MINUTES = 360.0  # the main three arms' 15 runs
COMMON = {"progress": False, "tensorboard": "off", "device": "cpu"}


def minutes_per_epoch(run_records: Path) -> float:
    """Mean wall-clock minutes of an epoch of a finished run: training plus evaluation (metrics.csv)."""
    from slac.analysis.runs import load_run

    minutes = load_run(run_records).epoch_minutes
    if not minutes:
        raise SystemExit(f"{run_records}/metrics.csv has no epochs")
    return sum(minutes) / len(minutes)


def epochs_rule(t_cnn: float, t_ann: float) -> int:
    """The protocol's E: the most epochs at which the 15 main runs (SLAC-ANN costed as the ANN) fit the
    budget, at most the pilot's length. t: minutes per epoch."""
    per_epoch = len(MAIN_SEEDS) * (t_cnn + 2 * t_ann)
    epochs = min(PILOT_EPOCHS, math.floor(BUDGET_MINUTES / per_epoch))
    if epochs < 1:
        raise SystemExit(f"one epoch of the 15 main runs costs {per_epoch:.0f} min, over the budget")
    return epochs


def study_epochs(study, records: Path = RECORDS, save: bool = True) -> int | None:
    """E from study.json, or computed from the finished pilot by the protocol's rule (and saved when
    ``save``, and committed when ``study`` commits); None while the pilot is not finished."""
    from slac.train.records import write_json_atomic

    path = records / "study.json"
    if path.is_file():
        return int(json.loads(path.read_text())["epochs"])
    pilot = [records / "pilot" / f"{arm}_seed{PILOT_SEED}" for arm in MAIN_ARMS[:2]]
    if not all((p / "summary.json").is_file() for p in pilot):
        return None
    t_cnn, t_ann = (minutes_per_epoch(p) for p in pilot)
    epochs = epochs_rule(t_cnn, t_ann)
    if save:
        write_json_atomic(
            path,
            {
                "epochs": epochs,
                "rule": "E = min(12, floor(360 / (5 * (t_cnn + 2 * t_ann)))), t = pilot minutes per epoch",
                "t_cnn_minutes": t_cnn,
                "t_ann_minutes": t_ann,
                "main_minutes_estimate": epochs * len(MAIN_SEEDS) * (t_cnn + 2 * t_ann),
            },
        )
        if study is not None and study.commit:
            study.commit_path(path, "study: epochs fixed from the pilot's cost")
    return epochs


def plan(epochs: int | None, phases: list[str]) -> list:
    from tools.study import PlannedRun

    runs = []

    def add(phase: str, arm: str, seed: int, epochs: int) -> None:
        runs.append(PlannedRun(phase, f"{arm}_seed{seed}", str(RECIPES / f"{arm}.yaml"), seed,
                               {**COMMON, "epochs": epochs}))  # fmt: skip

    if "pilot" in phases:
        for arm in MAIN_ARMS[:2]:
            add("pilot", arm, PILOT_SEED, PILOT_EPOCHS)
    if epochs is None:
        return runs
    if "main" in phases:
        for seed in MAIN_SEEDS:
            for arm in MAIN_ARMS:
                add("main", arm, seed, epochs)
    if "secondary" in phases:
        for arms in SECONDARY_ARMS:
            for seed in SECONDARY_SEEDS:
                for arm in arms:
                    add("main", arm, seed, epochs)
    return runs


def remaining_minutes(study, runs: list, records: Path = RECORDS) -> float | None:
    """Training time left for the runs not done: epochs left times the median epoch of the arm's kept
    main runs (the pilot's mean before any is kept; the SLAC and other heads are costed as the ANN before
    their first run); None before the pilot fixed the study."""
    import statistics

    from slac.analysis.runs import load_run
    from slac.errors import RunError

    path = records / "study.json"
    if not path.is_file():
        return None
    fixed = json.loads(path.read_text())
    medians = {}
    for summary in sorted((records / "main").glob("*_seed*/summary.json")):
        arm = summary.parent.name.rsplit("_seed", 1)[0]
        try:
            medians.setdefault(arm, []).extend(load_run(summary.parent).epoch_minutes)
        except RunError as error:  # a run without its evaluation times: costed from the others
            print(f"note: {error}")
    medians = {arm: statistics.median(minutes) for arm, minutes in medians.items() if minutes}
    total = 0.0
    for run in runs:
        if study.is_done(run):
            continue
        arm = run.name.rsplit("_seed", 1)[0]
        fallback = medians.get("resnet20_ann_linear", fixed["t_ann_minutes"])
        t = medians.get(arm) or (fixed["t_cnn_minutes"] if "_cnn_" in arm else fallback)
        progress = study.progress(run)
        total += (run.overrides["epochs"] - (progress[0] if progress else 0)) * t
    return total


def analyze(run_dir: Path) -> dict:
    """Figure 1 fits (weights of the last adder layer or convolution, pooled features of 2,000 test
    images) and, for SL/SLAC heads, the skewness angles."""
    from slac.analysis.tails import figure1_fits, skewness_angles

    return {"figure1": figure1_fits(run_dir), "skewness": skewness_angles(run_dir)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--plan", action="store_true", help="print each run's state and stop (writes nothing)"
    )
    parser.add_argument("--phases", nargs="+", default=["pilot", "main", "secondary"],
                        choices=["pilot", "main", "secondary"])  # fmt: skip
    parser.add_argument("--commit", action="store_true", help="git-commit each run's records when it ends")
    parser.add_argument("--max_runs", type=int, default=None, help="stop after this many runs were trained")
    args = parser.parse_args(argv)

    import slac.analysis.runs  # the analysis code is loaded now, with the training code
    import slac.analysis.tails  # noqa: F401
    from slac.train import TrainingInterrupted
    from tools.study import Study

    study = Study(RUNS, RECORDS, analyze=analyze, commit=args.commit, root=ROOT)
    epochs = study_epochs(study, save=not args.plan)
    print(f"study epochs: {epochs if epochs is not None else 'not fixed yet (the pilot has not finished)'}")
    if args.plan:
        runs = plan(epochs, args.phases)
        for key, state in study.status(runs):
            print(f"  {key:45s} {state}")
        left = remaining_minutes(study, runs)
        if left is not None:
            print(f"left: about {left / 60:.1f} h, one run at a time, at the median epoch of each arm's "
                  "kept runs on their machines")  # fmt: skip
        return 0
    if epochs is None and "pilot" not in args.phases:
        print("the study's epochs are fixed by the pilot, which has not finished: run --phases pilot first")
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
