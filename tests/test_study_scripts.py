"""The Fashion-MNIST ResNet-20 study's scripts against the protocol in REPRODUCTION.md: the epochs rule,
the order of runs, the readings of the intervals, and the report from fabricated records."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from slac.train import TrainConfig, save_config

SCRIPTS = Path(__file__).parents[1] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = load_script("fashion_resnet20_study")
reporting = load_script("fashion_resnet20_report")
converged = load_script("fashion_resnet20_converged")


def test_the_epochs_rule():
    # 360 / (5 * (1.9 + 2 * 4.35)) = 6.79: six epochs; capped at the pilot's 12; over budget is refused.
    assert study.epochs_rule(1.9, 4.35) == 6
    assert study.epochs_rule(0.1, 0.1) == 12
    assert study.epochs_rule(2.0, 5.0) == 6 and study.epochs_rule(2.0, 5.9) == 5
    with pytest.raises(SystemExit, match="over the budget"):
        study.epochs_rule(30.0, 30.0)


def test_the_plan_follows_the_protocols_order():
    keys = [run.key for run in study.plan(6, ["pilot", "main", "secondary"])]
    assert keys[:2] == ["pilot/resnet20_cnn_linear_seed100", "pilot/resnet20_ann_linear_seed100"]
    assert keys[2:5] == ["main/resnet20_cnn_linear_seed0", "main/resnet20_ann_linear_seed0",
                         "main/resnet20_ann_slac_seed0"]  # fmt: skip
    assert keys[16:19] == [
        "main/resnet20_ann_slac_seed4",
        "main/resnet20_ann_sl_seed0",
        "main/resnet20_ann_lgm_seed0",
    ]
    assert keys[-2:] == ["main/resnet20_ann_lsoftmax_seed2", "main/resnet20_ann_mom_seed2"]
    assert len(keys) == 2 + 15 + 12
    runs = study.plan(6, ["main"])
    assert {r.overrides["epochs"] for r in runs} == {6} and {r.seed for r in runs} == {0, 1, 2, 3, 4}
    assert study.plan(None, ["main", "secondary"]) == []  # nothing before the pilot fixes E


def _row(a, b, low, high, n=5):
    return {"method_a": a, "method_b": b, "paired": {"low": low, "high": high, "n": n}}


@pytest.mark.parametrize(
    ("a", "b", "low", "high", "reading"),
    [
        ("SLAC-ANN", "ANN", 0.1, 0.9, "supported"),
        ("SLAC-ANN", "ANN", -0.5, 0.25, "contradicted (rules out a gain of +0.3)"),
        ("SLAC-ANN", "ANN", -0.5, -0.1, "contradicted (A is worse)"),
        ("SLAC-ANN", "ANN", -0.2, 0.6, "not supported (inconclusive)"),
        ("SLAC-ANN", "ANN", 0.05, 0.25, "a gain smaller than the paper's"),
        ("SLAC-ANN", "ANN", 0.0, 0.9, "not supported (inconclusive)"),  # lo = 0 is not above 0
        ("SLAC-ANN", "ANN", -0.2, 0.3, "not supported (inconclusive)"),  # hi = +0.3 does not rule it out
        ("ANN", "CNN", -1.0, 1.0, "supported (within 1 point of the CNN)"),
        ("ANN", "CNN", 0.5, 1.5, "not supported (the interval reaches beyond 1 point)"),
        ("ANN", "CNN", -0.8, -0.2, "supported (within 1 point of the CNN)"),
        ("ANN", "CNN", -1.6, -1.1, "contradicted (more than 1 point below the CNN)"),
        ("ANN", "CNN", -1.3, -0.5, "not supported"),
        ("SL-ANN", "ANN", 0.5, 1.0, "exploratory"),
        ("SLAC-ANN", "ANN", math.nan, math.nan, "n/a"),
    ],
)
def test_readings_of_the_intervals(a, b, low, high, reading):
    assert reporting.verdict(_row(a, b, low, high)).startswith(reading)


def test_fewer_pairs_and_short_convergence_qualify_the_reading():
    assert reporting.verdict(_row("SLAC-ANN", "SL-ANN", 0.1, 0.9, n=3)) == "supported, 3 pairs"
    assert reporting.verdict(_row("SLAC-ANN", "ANN", 0.1, 0.9, n=4)) == "supported, 4 pairs"
    assert reporting.verdict(_row("SLAC-ANN", "ANN", 0.1, 0.9), " at 6 epochs") == "supported at 6 epochs"
    assert reporting.verdict(_row("ANN", "CNN", -0.8, -0.2, n=3), " at 6 epochs") == (
        "supported (within 1 point of the CNN, 3 pairs) at 6 epochs"
    )


def _fabricate(records, phase, head, form, seed, final, running, epochs, analysis=None):
    run = records / phase / f"resnet20_{form}_{head}_seed{seed}"
    run.mkdir(parents=True)
    config = TrainConfig(model="resnet20", dataset="fashion-mnist", form=form, head=head, seed=seed,
                         epochs=epochs, eval_bn="recalibrated")  # fmt: skip
    save_config(config, run / "config.yaml")
    rows = ["epoch,train_top1,test_top1,test_top1_running,epoch_seconds,eval_seconds"]
    for epoch in range(1, epochs + 1):
        rows.append(f"{epoch},{final - epochs + epoch},{final - epochs + epoch},{running},60,12")
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    summary = {"epochs": epochs, "final_test_top1": final, "final_test_top1_running": running,
               "train_images_per_s": 250.0}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    machine = [{"cpu": "Test CPU", "extensions": ["avx2"], "threads": 2}]
    (run / "machine.json").write_text(json.dumps(machine))
    if analysis is not None:
        (run / "analysis.json").write_text(json.dumps(analysis))
    return run


def _fits(gaussian, laplace):
    return {"gaussian": gaussian, "laplace": laplace}


def test_study_epochs_from_fabricated_pilot_records(tmp_path):
    records = tmp_path / "records"
    _fabricate(records, "pilot", "linear", "cnn", 100, 93.0, 93.0, 12)
    assert study.study_epochs(None, records) is None  # the ANN pilot has not finished
    _fabricate(records, "pilot", "linear", "ann", 100, 91.0, 91.0, 12)
    # t = (60 + 12) s = 1.2 min for both: 360 / (5 * 3.6) = 20, capped at 12
    assert study.study_epochs(None, records, save=False) == 12 and not (records / "study.json").exists()
    assert study.study_epochs(None, records) == 12
    saved = json.loads((records / "study.json").read_text())
    assert saved["t_ann_minutes"] == pytest.approx(1.2) and saved["epochs"] == 12


def test_the_report_from_fabricated_records(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    records, out = tmp_path / "records", tmp_path / "out"
    _fabricate(records, "pilot", "linear", "cnn", 100, 93.0, 93.0, 4)
    _fabricate(records, "pilot", "linear", "ann", 100, 92.0, 92.0, 4)
    figure1 = {
        "figure1": {"layer": "layer3.2.conv2", "weights": _fits(-2.0, -1.8), "features": _fits(-0.9, -1.0)}
    }
    for seed, (cnn, ann, slac, sl) in enumerate([(93.0, 91.0, 91.5, 91.2), (93.2, 91.4, 91.7, 91.1),
                                                 (92.8, 90.9, 91.3, 91.0)]):  # fmt: skip
        _fabricate(records, "main", "linear", "cnn", seed, cnn, cnn - 0.1, 2, {**figure1, "skewness": None})
        _fabricate(records, "main", "linear", "ann", seed, ann, ann - 0.3, 2, {**figure1, "skewness": None})
        _fabricate(records, "main", "slac", "ann", seed, slac, slac - 0.2, 2,
                   {**figure1, "skewness": {"mean_cosine": 0.0, "angle_loss": 0.3}})  # fmt: skip
        _fabricate(records, "main", "sl", "ann", seed, sl, sl, 2,
                   {**figure1, "skewness": {"mean_cosine": 0.4, "angle_loss": 0.8}})  # fmt: skip
    out.mkdir()
    (out / "fig1_resnet20_ann_linear_seed0.png").write_bytes(b"")  # an earlier report's, its checkpoint gone
    assert reporting.main(["--records", str(records), "--out", str(out), "--runs", str(tmp_path)]) == 0
    table = (out / "table.md").read_text()
    # SLAC-ANN - ANN: differences 0.5, 0.3, 0.4 (mean 0.4, sd 0.1): paired CI 0.4 -+ 4.303 * 0.1 / sqrt(3)
    assert (
        "| resnet20 SLAC-ANN fashion-mnist - resnet20 ANN fashion-mnist | 3 | +0.40 | 0.10 | [+0.15, +0.65] |"
        in table
    )
    assert "| SLAC-ANN - ANN | supported, 3 pairs |" in table
    assert "| ANN - CNN | contradicted (more than 1 point below the CNN, 3 pairs) |" in table  # -1.9
    assert "| SL-ANN - ANN | exploratory (no pre-registered reading) |" in table
    convergence = (out / "convergence.md").read_text()
    assert "| ANN | 92.00 | 91.10 (n=3) | -0.90 | near convergence |" in convergence
    assert "the ANN decides" in convergence
    figure = (out / "figure1.md").read_text()
    assert "| SLAC-ANN | weights | 3 | 0 | heavy tails supported (Laplace in every seed) |" in figure
    assert "| ANN | features | 0 | 3 | heavy tails contradicted (Gaussian in every seed) |" in figure
    assert "in 3 of 3 seed pairs: supported as a mechanism" in (out / "skewness.md").read_text()
    assert "- SLAC-ANN: not drawn (no finished run's checkpoint" in figure  # no runs/ here
    assert "- ANN: `fig1_resnet20_ann_linear_seed0.png`, drawn by an earlier report (no finished" in figure
    assert "Test CPU (avx2; 2 threads)" in (out / "cost.md").read_text()
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "pilot_curves.png").is_file()
    assert reporting.main(["--records", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_the_histograms_come_from_the_lowest_finished_seed_with_a_checkpoint(tmp_path):
    from slac.analysis.report import experiments

    runs, records = tmp_path / "runs", tmp_path / "records"
    finished = [_fabricate(records, "main", "slac", "ann", seed, 91.0, 91.0, 2) for seed in (12, 4)]
    for seed in (1, 4, 12):  # seed 1 has a checkpoint but no records: interrupted, not the final model
        (runs / f"resnet20_ann_slac_seed{seed}" / "checkpoints").mkdir(parents=True)
        (runs / f"resnet20_ann_slac_seed{seed}" / "checkpoints" / "last.pt").write_bytes(b"")
    (slac,), _ = experiments(finished)
    assert reporting.histogram_run(slac, runs).path.name == "resnet20_ann_slac_seed4"  # 4 before 12
    (runs / "resnet20_ann_slac_seed4" / "checkpoints" / "last.pt").unlink()
    assert reporting.histogram_run(slac, runs).path.name == "resnet20_ann_slac_seed12"
    (runs / "resnet20_ann_slac_seed12" / "checkpoints" / "last.pt").unlink()
    assert reporting.histogram_run(slac, runs) is None


def test_the_report_qualifies_short_convergence_failed_runs_and_missing_analyses(tmp_path):
    pytest.importorskip("matplotlib")
    records, out = tmp_path / "records", tmp_path / "out"
    _fabricate(records, "pilot", "linear", "cnn", 100, 93.0, 93.0, 4)
    _fabricate(records, "pilot", "linear", "ann", 100, 93.0, 93.0, 4)  # the study's ANN is 1.9 below
    figure1 = {
        "figure1": {"layer": "layer3.2.conv2", "weights": _fits(-2.0, -1.8), "features": _fits(-0.9, -1.0)}
    }
    for seed, (ann, slac, sl) in enumerate([(91.0, 91.5, 91.2), (91.4, 91.7, 91.1), (90.9, 91.3, 91.0)]):
        _fabricate(records, "main", "linear", "ann", seed, ann, ann - 0.3, 2, {**figure1, "skewness": None})
        slac_analysis = (
            None if seed == 2 else {**figure1, "skewness": {"mean_cosine": 0.0, "angle_loss": 0.3}}
        )
        _fabricate(records, "main", "slac", "ann", seed, slac, slac - 0.2, 2, slac_analysis)
        _fabricate(records, "main", "sl", "ann", seed, sl, sl, 2,
                   {**figure1, "skewness": {"mean_cosine": 0.4, "angle_loss": 0.8}})  # fmt: skip
    failed = _fabricate(records, "main", "linear", "ann", 3, 50.0, 50.0, 2)
    (failed / "summary.json").unlink()
    (failed / "failed.json").write_text(json.dumps({"error": "the training loss became nan in epoch 2",
                                                    "epoch": 2}))  # fmt: skip
    assert reporting.main(["--records", str(records), "--out", str(out), "--runs", str(tmp_path)]) == 0
    table = (out / "table.md").read_text()
    assert "| SLAC-ANN - ANN | supported, 3 pairs at 2 epochs (short of convergence) |" in table
    assert "main/resnet20_ann_linear_seed3 (ANN, seed 3): failed in epoch 2" in table
    assert "last logged test top-1 50.00% at epoch 2" in table
    assert "note: ANN: n is 1 smaller than planned (failed runs)" in table
    assert table.startswith("Every accuracy below is at 2 epochs: the study's ANN mean is 1.90 points below")
    assert (
        "| ANN | 93.00 | 91.10 (n=3) | -1.90 | short of convergence |" in (out / "convergence.md").read_text()
    )
    figure = (out / "figure1.md").read_text()
    assert "| SLAC-ANN | weights | 2 | 0 | withheld (2 of 3 runs analysed) |" in figure
    assert "| SL-ANN | weights | 3 | 0 | exploratory (no pre-registered reading) |" in figure
    assert "| ANN | weights | 3 | 0 | heavy tails supported (Laplace in every seed) |" in figure
    assert "note: SLAC-ANN: 2 of 3 runs analysed" in figure
    skew = (out / "skewness.md").read_text()
    assert "not analysed" in skew and "withheld (2 of 3 seed pairs analysed)" in skew


def test_an_epoch_cost_without_its_evaluation_time_is_refused(tmp_path):
    from slac.analysis.runs import load_run
    from slac.errors import RunError

    run = _fabricate(tmp_path, "pilot", "linear", "ann", 100, 91.0, 91.0, 2)
    assert load_run(run).epoch_minutes == [pytest.approx(1.2)] * 2
    text = (run / "metrics.csv").read_text().replace(",eval_seconds", "").replace(",60,12", ",60")
    (run / "metrics.csv").write_text(text)
    with pytest.raises(RunError, match=r"epoch 1 was evaluated but its evaluation time .* not logged"):
        _ = load_run(run).epoch_minutes


def test_the_time_left_uses_each_arms_kept_epochs(tmp_path):
    from tools.study import Study

    records = tmp_path / "records"
    (records).mkdir()
    runs = study.plan(2, ["main"])
    planner = Study(tmp_path / "runs", records, log=lambda m: None)
    assert study.remaining_minutes(planner, runs, records) is None  # before the pilot fixed E
    (records / "study.json").write_text(
        json.dumps({"epochs": 2, "t_cnn_minutes": 9.0, "t_ann_minutes": 10.0})
    )
    _fabricate(records, "main", "linear", "cnn", 0, 93.0, 93.0, 2)  # epochs of 1.2 min
    # CNN: 4 runs x 2 epochs x 1.2; ANN and SLAC-ANN at the pilot's 10 min: 10 runs x 2 x 10.
    assert study.remaining_minutes(planner, runs, records) == pytest.approx(9.6 + 200.0)
    _fabricate(records, "main", "linear", "ann", 0, 91.0, 91.0, 2)
    # the SLAC-ANN is costed as the kept ANN before its own first run
    assert study.remaining_minutes(planner, runs, records) == pytest.approx(9.6 + 9.6 + 12.0)


def test_the_converged_studys_epochs_rule():
    # 720 / (10 * 2.6) = 27.7: 27 epochs; capped at 100; over budget is refused.
    assert converged.epochs_rule(2.6) == 27
    assert converged.epochs_rule(0.1) == 100
    assert converged.epochs_rule(7.2) == 10 and converged.epochs_rule(7.3) == 9
    with pytest.raises(SystemExit, match="over the budget"):
        converged.epochs_rule(100.0)


def test_the_converged_studys_plan_follows_its_protocol():
    assert [r.key for r in converged.plan(None, converged.PHASES)] == ["cost/resnet20_ann_linear_seed100"]
    runs = converged.plan(27, converged.PHASES)
    keys = [r.key for r in runs]
    assert keys[:3] == [
        "cost/resnet20_ann_linear_seed100",
        "pilot/resnet20_ann_linear_seed100_27ep",
        "pilot/resnet20_ann_linear_seed100_54ep",
    ]
    assert [r.overrides["epochs"] for r in runs[:3]] == [1, 27, 54]
    assert keys[3:5] == ["main/resnet20_ann_linear_seed0", "main/resnet20_ann_slac_seed0"]
    assert keys[-4:] == ["main/resnet20_ann_slac_seed4", "main/resnet20_cnn_linear_seed0",
                         "main/resnet20_cnn_linear_seed1", "main/resnet20_cnn_linear_seed2"]  # fmt: skip
    assert len(keys) == 1 + 2 + 10 + 3
    assert {r.overrides["epochs"] for r in runs[3:]} == {27}
    assert {r.seed for r in runs[:3]} == {100} and {r.seed for r in runs[3:]} <= {0, 1, 2, 3, 4}


def test_the_converged_studys_epochs_and_pilot_distance_from_records(tmp_path):
    assert converged.study_epochs(None, tmp_path) is None
    _fabricate(tmp_path, "cost", "linear", "ann", 100, 91.0, 90.0, 1)  # one epoch of (60 + 12) s
    epochs = converged.study_epochs(None, tmp_path)
    fixed = json.loads((tmp_path / "study.json").read_text())
    assert epochs == fixed["epochs"] == converged.epochs_rule(1.2) == 60  # 720 / (10 * 1.2)
    assert fixed["probe_machine"] == [{"cpu": "Test CPU", "extensions": ["avx2"], "threads": 2}]
    assert converged.pilot_distance(epochs, tmp_path) is None
    for length, final in ((epochs, 93.1), (2 * epochs, 93.3)):
        run = _fabricate(tmp_path, "pilot", "linear", "ann", 100, final, final, 2)
        run.rename(run.with_name(f"{run.name}_{length}ep"))
    assert converged.pilot_distance(epochs, tmp_path) == pytest.approx(0.2)
