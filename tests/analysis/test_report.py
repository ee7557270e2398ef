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
    with pytest.raises(FileNotFoundError, match="nothing does not exist"):
        report.experiments([tmp_path / "nothing"])
    with pytest.raises(FileNotFoundError, match="not a slac run directory"):
        report.experiments([tmp_path])
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


def test_paired_interval_by_hand_and_over_shared_seeds():
    # d = 2, 3, 4: mean 3, sd 1, t_{0.975}(2) = 4.3026527 (tables), half-width 4.3026527 / sqrt(3) = 2.4841377
    paired = report.paired_interval({0: 90.0, 1: 92.0, 2: 94.0}, {0: 88.0, 1: 89.0, 2: 90.0})
    assert (paired["n"], paired["diff"], paired["sd"]) == (3, 3.0, 1.0)
    assert paired["low"] == pytest.approx(3.0 - 2.4841377, abs=1e-6)
    assert paired["high"] == pytest.approx(3.0 + 2.4841377, abs=1e-6)
    shared = report.paired_interval({0: 90.0, 1: 92.0, 7: 50.0}, {0: 88.0, 1: 89.0, 2: 10.0})
    assert shared["seeds"] == [0, 1] and shared["diff"] == pytest.approx(2.5)
    single = report.paired_interval({0: 90.0}, {0: 88.0})
    assert single["n"] == 1 and math.isnan(single["low"])


def test_pairing_removes_the_seed_effect_welch_keeps():
    # A seed effect shared by both arms (+-3) with a constant +1 difference: paired sd 0, Welch wide.
    a = {0: 91.0, 1: 97.0, 2: 94.0}
    b = {0: 90.0, 1: 96.0, 2: 93.0}
    paired = report.paired_interval(a, b)
    diff, low, high = report.difference_interval(list(a.values()), list(b.values()))
    assert paired["low"] == pytest.approx(1.0) and paired["high"] == pytest.approx(1.0)
    assert diff == pytest.approx(1.0) and low < -3 and high > 5


def _recalibrated(root, name, accuracy, running, **recipe):
    run = fabricate(root, name, accuracy, eval_bn="recalibrated", **recipe)
    summary = json.loads((run / "summary.json").read_text())
    summary.update({"final_test_top1_running": running, "final_test_top1_recalibrated": accuracy})
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_compare_per_seed_and_the_running_column(tmp_path, capsys):
    paths = []
    for seed, (acc, running) in enumerate(((90.0, 80.0), (92.0, 85.0), (94.0, 90.0))):
        paths.append(_recalibrated(tmp_path, f"slac{seed}", acc, running, seed=seed, head="slac"))
    for seed, (acc, running) in enumerate(((88.0, 81.0), (89.0, 82.0), (90.0, 83.0))):
        paths.append(_recalibrated(tmp_path, f"ann{seed}", acc, running, seed=seed, head="linear"))
    paths.append(_recalibrated(tmp_path, "cnn0", 95.0, 94.0, seed=0, form="cnn", head="linear"))
    items, _ = report.experiments(paths)
    rows = report.compare(items, ["SLAC-ANN:ANN", "ANN:CNN"])
    assert [(r["a"], r["b"]) for r in rows] == [("lenet SLAC-ANN digits", "lenet ANN digits"),
                                               ("lenet ANN digits", "lenet CNN digits")]  # fmt: skip
    first = rows[0]
    assert first["paired"]["diff"] == pytest.approx(3.0) and first["paired"]["n"] == 3
    assert first["beside"]["diff"] == pytest.approx((-1 + 3 + 7) / 3)  # running: 80-81, 85-82, 90-83
    assert rows[1]["paired"]["n"] == 1 and math.isnan(rows[1]["paired"]["low"])
    table = report.format_comparisons(rows)
    assert "| lenet SLAC-ANN digits - lenet ANN digits | 3 | +3.00 | 1.00 | [+0.52, +5.48] |" in table
    assert "paired, running BN" in table.splitlines()[0]
    code = main(["report", *map(str, paths), "--compare", "SLAC-ANN:ANN", "--per_seed"])
    out = capsys.readouterr().out
    assert code == 0
    assert "mean top-1 % (recalibrated BN)" in out and "running BN: mean ± std" in out
    assert "| lenet SLAC-ANN digits | 3 | 92.00 | 2.00 | 0 1 2 |  |  | 85.00 ± 5.00 |" in out
    assert "| lenet ANN digits | 88.00 / 81.00 | 89.00 / 82.00 | 90.00 / 83.00 |" in out
    assert "| lenet CNN digits | 95.00 / 94.00 |  |  |" in out
    with pytest.raises(ValueError, match="takes A:B"):
        report.compare(items, ["SLAC-ANN"])
    with pytest.raises(ValueError, match="matches 0 experiments"):
        report.compare(items, ["SLAC-ANN:BNN"])


def test_arms_reported_on_different_statistics_are_compared_on_the_same_ones(tmp_path):
    # SLAC headlines recalibrated BN (running beside); the ANN headlines running BN and logged the
    # recalibrated figure beside. Both differences must take like with like.
    paths = [_recalibrated(tmp_path, f"slac{seed}", acc, running, seed=seed, head="slac")
             for seed, (acc, running) in enumerate(((90.0, 80.0), (92.0, 85.0), (94.0, 90.0)))]  # fmt: skip
    for seed, (running, recalibrated) in enumerate(((81.0, 88.0), (82.0, 89.0), (83.0, 90.0))):
        run = fabricate(tmp_path, f"ann{seed}", running, seed=seed, head="linear", eval_bn="running")
        summary = json.loads((run / "summary.json").read_text())
        summary.update({"final_test_top1_running": running, "final_test_top1_recalibrated": recalibrated})
        (run / "summary.json").write_text(json.dumps(summary))
        paths.append(run)
    items, _ = report.experiments(paths)
    rows = report.compare(items, ["SLAC-ANN:ANN", "ANN:SLAC-ANN"])
    assert rows[0]["headline"] == "recalibrated" and rows[0]["paired"]["diff"] == pytest.approx(3.0)
    assert rows[0]["beside"]["diff"] == pytest.approx(3.0)  # running: 80-81, 85-82, 90-83
    assert rows[1]["headline"] == "running" and rows[1]["paired"]["diff"] == pytest.approx(-3.0)
    table = report.format_comparisons(rows)
    assert table.splitlines()[0].startswith("| difference | pairs |")  # no single statistic to name
    assert "lenet SLAC-ANN digits - lenet ANN digits (recalibrated BN) | 3 | +3.00 |" in table
    summary_rows = report.summarize(items, baseline="ANN")
    slac_row = next(r for r in summary_rows if r["method"] == "SLAC-ANN")
    assert slac_row["diff"] == pytest.approx(3.0)  # against the ANN's recalibrated figures
    long = report.format_report(summary_rows, items).splitlines()
    assert long[0].startswith("| experiment | BN statistics | n | mean top-1 % |")
    assert "other BN statistics: mean ± std" in long[0]
    assert "| lenet ANN digits | running | 3 | 82.00 | 1.00 | 0 1 2 |  |  | 89.00 ± 1.00 |" in long
    without = [p for p in paths if p.name.startswith("slac")]
    for run in (tmp_path / "ann0", tmp_path / "ann1", tmp_path / "ann2"):
        summary = json.loads((run / "summary.json").read_text())
        del summary["final_test_top1_recalibrated"]
        (run / "summary.json").write_text(json.dumps(summary))
    items, _ = report.experiments([*without, tmp_path / "ann0", tmp_path / "ann1", tmp_path / "ann2"])
    with pytest.raises(ValueError, match="no final test top-1 on recalibrated BatchNorm"):
        report.compare(items, ["SLAC-ANN:ANN"])
    slac_row = next(r for r in report.summarize(items, baseline="ANN") if r["method"] == "SLAC-ANN")
    assert math.isnan(slac_row["diff"])  # said, not left out
    cells = "| 0 1 2 | n/a (the baseline lacks these BatchNorm statistics) | [n/a, n/a] |"
    assert f"| lenet SLAC-ANN digits | recalibrated | 3 | 92.00 | 2.00 {cells}" in report.format_report(
        report.summarize(items, baseline="ANN"), items
    )


def test_welch_says_its_groups_when_they_are_not_the_pairs_and_ambiguous_arms_are_refused(tmp_path):
    paths = [fabricate(tmp_path, f"slac{seed}", 90.0 + seed, seed=seed, head="slac") for seed in (0, 1, 2)]
    paths += [fabricate(tmp_path, f"ann{seed}", 88.0 + seed, seed=seed, head="linear") for seed in (0, 1)]
    items, _ = report.experiments(paths)
    rows = report.compare(items, ["SLAC-ANN:ANN"])
    assert rows[0]["paired"]["n"] == 2
    assert "(n 3 / 2) |" in report.format_comparisons(rows)
    paths.append(fabricate(tmp_path, "slac_lr", 91.0, seed=0, head="slac", lr=0.05))
    items, _ = report.experiments(paths)
    for call in (
        lambda: report.compare(items, ["SLAC-ANN:ANN"]),
        lambda: report.summarize(items, "SLAC-ANN"),
    ):
        with pytest.raises(ValueError, match=r"matches several experiments of lenet on digits .*full label"):
            call()


def test_a_method_name_is_not_matched_inside_another(tmp_path):
    """ "ANN" names the ANN method: with no ANN runs it matches nothing, not the SLAC-ANN whose label
    contains the letters."""
    paths = [fabricate(tmp_path, f"slac{seed}", 90.0 + seed, seed=seed, head="slac") for seed in (0, 1)]
    paths.append(fabricate(tmp_path, "cnn0", 95.0, form="cnn", head="linear"))
    items, _ = report.experiments(paths)
    with pytest.raises(ValueError, match="'ANN' matches 0 experiments"):
        report.summarize(items, "ANN")
    with pytest.raises(ValueError, match="'ANN' matches 0 experiments"):
        report.compare(items, ["ANN:CNN"])
    rows = report.compare(items, ["slac-ann:cnn"])  # a method in another case is still that method
    assert (rows[0]["method_a"], rows[0]["method_b"]) == ("SLAC-ANN", "CNN")
    cnn = report.summarize(items, "SLAC")[0]  # a part of a label
    assert cnn["method"] == "CNN" and cnn["diff"] == pytest.approx(95.0 - 90.5)


def test_one_run_directory_given_twice_counts_once(runs):
    items, notes = report.experiments([runs[0], runs[0], runs[0].parent / "." / runs[0].name, *runs[1:]])
    slac = next(e for e in items if e.method == "SLAC-ANN")
    assert slac.n == 3 and slac.seeds == [0, 1, 2]
    assert [note for note in notes if "given more than once" in note] == [
        f"{runs[0]}: given more than once; counted once"
    ] * 2


def test_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="give at least one run directory"):
        report.experiments([])
    with pytest.raises(ValueError, match="needs at least one value in each group"):
        report.difference_interval([], [1.0])


def test_comparing_an_experiment_with_itself_says_so(runs):
    items, _ = report.experiments(runs)
    with pytest.raises(ValueError, match="both arms are the experiment 'lenet ANN digits'"):
        report.compare(items, ["ANN:ANN"])


def test_table4_names_the_loss_weights_each_head_uses(tmp_path):
    """The SL head has no angle constraint (beta 0 whatever its options say nothing about); heads without
    SL parameters are named by their method, not given SL flags they do not have."""
    paths = [
        fabricate(tmp_path, "sl", 91.0, head="sl"),
        fabricate(tmp_path, "slac", 92.0, head="slac"),
        fabricate(tmp_path, "frozen", 90.0, head="slac", head_options={"learn_skewness": False}),
        fabricate(tmp_path, "ann", 89.0, head="linear"),
        fabricate(tmp_path, "cnn", 95.0, form="cnn", head="linear"),
    ]
    items, _ = report.experiments(paths)
    table = report.format_report(report.summarize(items), items, "table4").splitlines()
    assert table[2:] == [
        "| ANN | digits | 89.00 ± n/a (n=1) |",
        "| CNN | digits | 95.00 ± n/a (n=1) |",
        "| location learned, covariance learned, skewness learned; lambda 0.01, beta 0.0 | digits "
        "| 91.00 ± n/a (n=1) |",
        "| location learned, covariance learned, skewness fixed; lambda 0.01, beta 0.1 | digits "
        "| 90.00 ± n/a (n=1) |",
        "| location learned, covariance learned, skewness learned; lambda 0.01, beta 0.1 | digits "
        "| 92.00 ± n/a (n=1) |",
    ]  # sorted by label: ANN, CNN, SL-ANN, then the SLAC-ANN labels with their head_options


def test_compare_takes_full_labels_that_contain_a_colon(runs, tmp_path):
    """Labels name the recipe keys that tell experiments apart, and dict values print with ": "."""
    ablation = [fabricate(tmp_path, f"beta0_{seed}", 91.0 + seed, seed=seed, head="slac",
                          head_options={"angle_weight": 0.0}) for seed in (0, 1, 2)]  # fmt: skip
    items, _ = report.experiments([*runs, *ablation])
    label = "lenet SLAC-ANN digits, head_options={'angle_weight': 0.0}"
    (row,) = report.compare(items, [f"{label}:ANN"])
    assert (row["a"], row["b"], row["paired"]["diff"]) == (label, "lenet ANN digits", pytest.approx(3.0))
    (row,) = report.compare(items, [f"ANN:{label}"])
    assert row["a"] == "lenet ANN digits" and row["b"] == label
    with pytest.raises(ValueError, match="takes A:B"):
        report.compare(items, ["ANN:CNN:SLAC-ANN"])


def test_an_empty_name_selects_nothing(runs):
    """An empty part of a label would be in every label: it is refused, not matched everywhere."""
    items, _ = report.experiments(runs)
    for call in (lambda: report.summarize(items, ""), lambda: report.compare(items, [" :ANN"])):
        with pytest.raises(ValueError, match="give a method or an experiment label"):
            call()
