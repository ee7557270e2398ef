"""``slac report`` statistics against hand-computed values on fabricated run directories."""

from __future__ import annotations

import json
import math

import pytest

from slac.analysis import report
from slac.cli import main
from slac.train import TrainConfig, save_config


def fabricate(root, name, accuracy, finished=True, **recipe):
    run = root / name
    run.mkdir(parents=True)
    config = TrainConfig(**recipe)
    save_config(config, run / "config.yaml")
    if finished:
        (run / "summary.json").write_text(json.dumps({"final_test_top1": accuracy, "best_test_top1": 99.0}))
    return run


@pytest.fixture
def runs(tmp_path):
    paths = []
    for seed, accuracy in zip((0, 1, 2), (90.0, 92.0, 94.0), strict=True):  # SLAC-ANN: mean 92, std 2
        paths.append(fabricate(tmp_path, f"slac{seed}", accuracy, seed=seed, head="slac", device="cpu"))
    for seed, accuracy in zip((0, 1, 2), (88.0, 89.0, 90.0), strict=True):  # ANN: mean 89, std 1
        paths.append(
            fabricate(tmp_path, f"ann{seed}", accuracy, seed=seed, head="linear", out_dir=f"x{seed}")
        )
    paths.append(fabricate(tmp_path, "cnn0", 95.0, form="cnn", head="linear"))  # n = 1
    paths.append(fabricate(tmp_path, "unfinished", None, finished=False, head="sl"))
    return paths


def test_grouping_mean_std_and_welch_interval(runs):
    items, notes = report.experiments(runs)
    assert any("not finished" in note for note in notes)
    by_method = {e.method: e for e in items}
    assert set(by_method) == {"SLAC-ANN", "ANN", "CNN"}  # seeds and execution keys do not split groups
    slac, ann, cnn = by_method["SLAC-ANN"], by_method["ANN"], by_method["CNN"]
    assert (slac.n, slac.mean, slac.std) == (3, 92.0, 2.0)
    assert (ann.n, ann.mean, ann.std) == (3, 89.0, 1.0)
    assert cnn.n == 1 and math.isnan(cnn.std)
    rows = {row["method"]: row for row in report.summarize(items, baseline="ANN")}
    # By hand: diff 3, se^2 = 4/3 + 1/3 = 5/3, Welch df = (5/3)^2 / ((4/3)^2/2 + (1/3)^2/2) = 50/17,
    # t_{0.975}(50/17) = 3.2187586 (tables), half-width 3.2187586 * sqrt(5/3) = 4.1553995.
    assert rows["SLAC-ANN"]["diff"] == pytest.approx(3.0)
    assert rows["SLAC-ANN"]["ci_low"] == pytest.approx(3.0 - 4.1553995, abs=1e-6)
    assert rows["SLAC-ANN"]["ci_high"] == pytest.approx(3.0 + 4.1553995, abs=1e-6)
    assert rows["CNN"]["diff"] == pytest.approx(6.0) and math.isnan(rows["CNN"]["ci_low"])  # n = 1: no CI
    assert "diff" not in rows["ANN"]


def test_layouts_and_outputs(runs, tmp_path, capsys):
    markdown, table = tmp_path / "t.md", tmp_path / "t.csv"
    code = main(
        ["report", *map(str, runs), "--baseline", "ANN", "--markdown", str(markdown), "--csv", str(table)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| lenet SLAC-ANN digits | 3 | 92.00 | 2.00 | 0 1 2 | 3.00 | [-1.16, 7.16] |" in out
    assert markdown.read_text().strip() == out.strip()
    lines = table.read_text().splitlines()
    assert lines[0].startswith("experiment,method,model,dataset") and len(lines) == 4
    items, _ = report.experiments(runs)
    rows = report.summarize(items, "ANN")
    assert "| lenet | SLAC-ANN | 92.00 ± 2.00 (n=3); +3.00 [-1.16, 7.16] |" in report.format_report(
        rows, items, "table1"
    )
    assert report.format_report(rows, items, "table3").splitlines()[0] == "| dataset | ANN | CNN | SLAC-ANN |"
    assert "location learned, covariance learned, skewness learned" in report.format_report(
        rows, items, "table4"
    )


def test_errors(runs, tmp_path):
    items, _ = report.experiments(runs)
    with pytest.raises(ValueError, match="matches 0 experiments"):
        report.summarize(items, "BNN")
    with pytest.raises(FileNotFoundError, match="not a slac run directory"):
        report.experiments([tmp_path / "nothing"])
    with pytest.raises(ValueError, match="none of the given runs has finished"):
        report.experiments([runs[-1]])
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_labels_name_what_tells_runs_of_one_kind_apart(runs, tmp_path):
    ablation = fabricate(tmp_path, "beta0", 91.0, head="slac", head_options={"angle_weight": 0.0})
    items, _ = report.experiments([*runs, ablation])
    labels = sorted(e.label for e in items)
    assert "lenet ANN digits" in labels and "lenet CNN digits" in labels  # heads differ: no options shown
    assert "lenet SLAC-ANN digits, head_options={'angle_weight': 0.0}" in labels
    assert "lenet SLAC-ANN digits, head_options={}" in labels
    rows = report.summarize(items)
    assert "location learned, covariance learned, skewness learned; lambda 0.01, beta 0.0" in (
        report.format_report(rows, items, "table4")
    )


def test_a_method_baseline_is_chosen_per_model_and_dataset(runs, tmp_path):
    other = [
        fabricate(tmp_path, f"m{seed}", 80.0 + seed, seed=seed, dataset="mnist", head="linear")
        for seed in (0, 1)
    ]
    other += [
        fabricate(tmp_path, f"ms{seed}", 85.0 + seed, seed=seed, dataset="mnist", head="slac")
        for seed in (0, 1)
    ]
    items, _ = report.experiments([*runs, *other])
    rows = {(r["method"], r["dataset"]): r for r in report.summarize(items, baseline="ANN")}
    assert rows[("SLAC-ANN", "mnist")]["diff"] == pytest.approx(5.0)  # against the mnist ANN
    assert rows[("SLAC-ANN", "digits")]["diff"] == pytest.approx(3.0)  # against the digits ANN
