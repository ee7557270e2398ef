"""The benchmark code: measurement helpers, tables, and the `slac bench` commands on tiny settings."""

import math

import numpy as np
import pytest
import torch

from slac.bench import adder, probes
from slac.bench.measure import peak_memory_bytes, time_call, time_phases
from slac.cli import main
from slac.ops import cpu


def test_peak_memory_sees_a_temporary_and_only_this_window():
    n = 1 << 20  # 4 MiB of float32, freed before the function returns
    kept = []

    def work():
        t = torch.ones(n)
        return float(t.sum())

    # memory allocated in an earlier measured window and kept must not count in the next one
    assert 16 * n <= peak_memory_bytes(lambda: kept.append(torch.ones(4 * n)), torch.device("cpu")) < 20 * n
    peak = peak_memory_bytes(work, torch.device("cpu"))
    assert 4 * n <= peak < 8 * n


def test_time_call_is_positive_and_small():
    assert 0 < time_call(lambda: sum(range(1000)), torch.device("cpu"), repeats=3) < 1


def test_the_phases_of_a_step_are_timed_as_they_run_and_add_up():
    seen = []
    times = time_phases(
        [lambda _: seen.append("a") or 3, lambda value: seen.append(value)], torch.device("cpu")
    )
    assert seen == ["a", 3] and len(times) == 2 and all(t >= 0 for t in times)


def test_the_consistency_line_names_a_part_that_runs_differently_alone():
    steady = adder.Result(
        "a", "cpu", 2.0, 4.0, 6.0, 1.0, 1.0, 1e9, forward_alone_ms=2.1, backward_alone_ms=3.9
    )
    warm = adder.Result("b", "cpu", 2.0, 4.0, 6.0, 1.0, 1.0, 1e9, forward_alone_ms=1.0, backward_alone_ms=4.0)
    line = adder.consistency([steady, warm])
    assert line.startswith("cpu: (forward alone + backward alone) / fwd+bwd 0.83-1.00")
    assert "b forward 1.00 vs 2.00 ms" in line and "a forward" not in line


def test_layer_shape_arithmetic():
    shape = adder.LayerShape("t", 16, 32, 32, 3, 2)
    assert shape.padding == 1 and shape.output_size() == 16
    assert shape.unfolded_elements(2) == 2 * 16 * 9 * 16 * 16
    assert shape.pairs(2) == shape.unfolded_elements(2) * 32


def _result(layer, method, both, peak=10.0):
    return adder.Result(layer, method, both / 2, both / 2, both, peak, 1.0, 1e9)


def test_table_and_summary_ratios():
    results = [
        _result("a", "official", 100.0, peak=400.0), _result("a", "cpu", 4.0, peak=8.0),
        _result("a", "conv2d", 2.0), _result("b", "official", 50.0, peak=200.0),
        _result("b", "cpu", 5.0, peak=4.0), _result("b", "conv2d", 4.0),
    ]  # fmt: skip
    table = adder.format_table(results, batch=8)
    assert "| a | cpu | 2.00 | 2.00 | 4.00 | 2.00x | 25.0x |" in table
    summary = adder.summary(results)
    assert "fwd+bwd vs conv2d worst 2.00x, best 1.25x" in summary
    assert "speed-up over official at least 10.0x" in summary
    assert "official peak memory / method's at least 50.0x" in summary


def test_out_of_memory_rows_are_reported_not_averaged():
    nan = float("nan")
    results = [adder.Result("a", "official", nan, nan, nan, nan, nan, nan), _result("a", "cpu", 4.0)]
    assert "| a | official | out of memory |" in adder.format_table(results, batch=8)
    assert "nan" not in adder.summary(results)  # the out-of-memory layer enters no ratio


def test_bench_adder_command(capsys, tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "adder", "--methods", "cpu", "conv2d", "--layers", "5", "--batch", "2", "--repeats", "1"]
    assert main([*args, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| shortcut 1x1 16-32 32px s2 | cpu |" in printed and out.stat().st_size > 0
    assert "Measured ceilings (probe kernels on" in printed and "min+add / FMA" in printed
    assert "| cpu forward G pairs/s | of ceiling |" in printed


def test_bench_step_command(capsys):
    assert main(["bench", "step", "--models", "lenet", "--batch", "4", "--steps", "1"]) == 0
    assert "| lenet | linear | 4 |" in capsys.readouterr().out


def test_adder_op_profile_finds_the_torch_ops_inside_the_adder_ops():
    from slac.bench.step import _Trainer, adder_op_profile, format_profile

    trainer = _Trainer("lenet", "ann", "linear", 4, torch.device("cpu"), compile=False)
    trainer.step()  # warm-up outside the profile
    profile = adder_op_profile(trainer.step, steps=2)
    assert profile["steps"] == 2
    assert {"slac::adder2d", "slac::adder2d_grad_input", "slac::adder2d_grad_weight",
            "GeneratedBackwardFor_slac_adder2d_default"} <= set(profile["adder_ops"])  # fmt: skip
    # the weight gradient's GEMM runs inside slac::adder2d_grad_weight and is counted apart
    assert profile["inside"]["aten::convolution_backward"]["self_ms"] == pytest.approx(profile["gemm_ms"])
    # LeNet++ has 5 adder layers; a convolution's own ops (outside any adder op) are not counted inside
    assert profile["adder_ops"]["slac::adder2d_grad_input"]["calls"] == 5
    assert "aten::convolution" not in profile["inside"] and "aten::native_batch_norm" not in profile["inside"]
    adder_ms = sum(e["self_ms"] for e in profile["adder_ops"].values())
    assert profile["inside_ms"] > 0
    assert adder_ms + profile["inside_ms"] + profile["gemm_ms"] < profile["step_ms"]
    assert profile["inside_fraction"] == pytest.approx(profile["inside_ms"] / profile["step_ms"])
    text = format_profile("lenet ann linear", profile)
    assert "| slac::adder2d_grad_input | adder op | 5 |" in text
    assert "torch-op self time around adder calls:" in text


def _probe_reference(kind, x, w, lo, hi):
    """The tile's sums in float64: (P, K), (Q, K), (P, Q), (P, Q) -> (P, Q)."""
    x, w = x.astype(np.float64)[:, None, :], w.astype(np.float64)[None, :, :]
    if kind == "forward":
        return np.minimum(x, w).sum(-1)
    if kind == "grad_input":
        return (x * np.clip(w, lo[:, :, None], hi[:, :, None])).sum(-1)
    return (x * w).sum(-1)


@pytest.mark.parametrize("kind", list(probes.PROBES))
def test_probe_kernels_compute_their_tile(kind):
    p, q, bits = cpu.tile(probes._KERNEL_OF[kind])
    one, team = probes.probe_kernels(kind, p, q, bits)
    k = 37  # whole vectors and a remainder
    x, w, lo, hi, out = probes._operands(2, p, q, k)
    one(x[0], w[0], lo[0], hi[0], np.float32(0), 3, out[0])  # out += the tile's sums, 3 times
    expected = [_probe_reference(kind, x[t], w[t], lo[t], hi[t]) for t in range(2)]
    np.testing.assert_allclose(out[0], 3 * expected[0], rtol=1e-5, atol=1e-4)
    out[:] = 0
    team(x, w, lo, hi, np.float32(0), 2, out)  # each thread its own operands
    np.testing.assert_allclose(out, 2 * np.stack(expected), rtol=1e-5, atol=1e-4)


def test_probe_source_follows_the_tile():
    source = probes.probe_source("grad_input", 2, 2, 256)
    assert "a11 += x1 * min(max(w1, lo11), hi11)" in source and "a12" not in source
    assert "prefer_512_bit_vectors" not in source
    assert "prefer_512_bit_vectors()" in probes.probe_source("forward", 4, 4, 512)
    with pytest.raises(ValueError, match="unknown probe"):
        probes.probe_kernels("abs", 4, 4, 512)


def test_measured_ceilings_are_positive_rates():
    ceilings = probes.measure_ceilings(threads=1)
    assert ceilings["threads"] == 1
    assert ceilings["tiles"]["forward"] == cpu.tile("forward")
    assert ceilings["tiles"]["grad_input"] == cpu.tile("grad_input")
    for kind in probes.PROBES:
        for rate in (ceilings[kind], ceilings["one_thread"][kind]):
            assert math.isfinite(rate) and rate > 1e8


def test_ceiling_table_divides_by_the_measured_ceilings():
    r = adder.Result("a", "cpu", 2.0, 4.0, 6.0, 1.0, 1.0, 30e9, grad_input_ms=3.0)
    conv = adder.Result("a", "conv2d", 1.0, 1.0, 2.0, 1.0, 1.0, 80e9)
    ceilings = {"forward": 60e9, "grad_input": 40e9, "fma": 100e9, "threads": 2,
                "tiles": {"forward": (4, 4, 512), "grad_input": (2, 4, 512), "fma": (4, 4, 512)}}  # fmt: skip
    table = adder.ceiling_table([r, conv], 8, ceilings)
    assert "min+add 60.0 G pairs/s (tile 4x4 512-bit)" in table and "min+add / FMA 0.60" in table
    assert "conv2d's best forward: 80 G multiply-adds/s" in table
    assert "| a | 30.0 | 50% | 3.00 | 20.0 | 50% |" in table  # grad input: 30e9 * 2 / 3 pairs/s
    assert adder.ceiling_table([r], 8, None) == ""


def test_bench_infer_command(capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install slac[export])")
    assert main(["bench", "infer", "--models", "lenet", "--batches", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "| lenet | 2 |" in out and "onnxruntime" in out


@pytest.mark.parametrize(
    "args,match",
    [(["--methods", "nonsense"], "unknown or unavailable methods"), (["--batch", "0"], "must be positive")],
)
def test_bench_adder_bad_arguments(args, match):
    with pytest.raises(SystemExit, match=match):
        main(["bench", "adder", *args])


def test_train_benchmark_compares_real_and_synthetic_batches():
    from slac.bench.train import format_table, train_benchmark

    lines = []
    rows = train_benchmark(["lenet"], ["cnn", "ann"], "digits", 16, steps=2, rounds=1, device="cpu",
                           progress=lines.append)  # fmt: skip
    assert [(r["model"], r["form"]) for r in rows] == [("lenet", "cnn"), ("lenet", "ann")]
    assert all(r["real"] > 0 and r["synthetic"] > 0 for r in rows)
    table = format_table(rows)
    assert "| lenet | ann | digits | 16 |" in table and "ANN/CNN time per image" in table
    assert len(lines) == 2
