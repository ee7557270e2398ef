"""Inference benchmark: a model in CNN and ANN form, in slac (PyTorch eager, evaluation mode) and in
onnxruntime (``slac.export``: adder layers as standard operators), on the CPU.

Each configuration is timed in interleaved rounds (one call of each per round) on the same synthetic batch;
the medians are reported with images per second and the ANN/CNN ratios, all from one run.

    slac bench infer                          # resnet20, batches 1 and 64
    slac bench infer --models resnet20 lenet --batches 64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from slac.bench.adder import machine_description
from slac.bench.measure import time_once
from slac.errors import MissingDependencyError
from slac.models import create_model, model_cfg
from slac.nn import recalibrate_batchnorm

__all__ = ["add_arguments", "infer_benchmark", "main"]


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("slac bench infer needs onnxruntime: pip install slac[export]") from None
    return onnxruntime


def infer_benchmark(models: list[str], batches: list[int], rounds: int = 7, progress=print) -> list[dict]:
    ort = _onnxruntime()
    from slac.export import export_onnx

    device = torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            cfg = model_cfg(name)
            nets = {}
            for form in ("cnn", "ann"):
                torch.manual_seed(0)
                net = create_model(name, form=form, head="linear")
                recalibrate_batchnorm(net, [torch.randn(32, *cfg.input_size) for _ in range(2)])
                nets[form] = net.eval()
            for batch in batches:
                x = torch.randn(batch, *cfg.input_size)
                calls = {}
                for form, net in nets.items():
                    path = export_onnx(net, x, Path(folder) / f"{name}_{form}.onnx")
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = torch.get_num_threads()
                    # onnxruntime's workers spin between runs by default, on the cores the next (slac) call
                    # of the round needs: a batch-1 ResNet-20 ANN measured 17.5 ms after them against 5 ms
                    # alone. Without spinning each runtime finds the cores free (BENCHMARKS.md).
                    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    feed = {session.get_inputs()[0].name: x.numpy()}

                    def eager(net=net, x=x):
                        with torch.no_grad():
                            net(x)

                    calls[("slac", form)] = eager
                    calls[("onnxruntime", form)] = lambda session=session, feed=feed: session.run(None, feed)
                times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
                for fn in calls.values():  # warm-up
                    fn()
                for _ in range(rounds):
                    for key, fn in calls.items():
                        times[key].append(time_once(fn, device))
                medians = {key: statistics.median(values) for key, values in times.items()}
                for (runtime, form), seconds in medians.items():
                    progress(f"  {name} {form} batch {batch:4d} {runtime:12s} {seconds * 1e3:9.2f} ms")
                rows.append(
                    {
                        "model": name,
                        "batch": batch,
                        **{f"{r}_{f}_ms": s * 1e3 for (r, f), s in medians.items()},
                    }
                )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| model | batch | slac CNN ms | slac ANN ms | slac ANN/CNN | onnxruntime CNN ms "
        "| onnxruntime ANN ms | onnxruntime ANN/CNN | ANN: onnxruntime / slac |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['slac_cnn_ms']:.2f} | {r['slac_ann_ms']:.2f} "
            f"| {r['slac_ann_ms'] / r['slac_cnn_ms']:.2f}x | {r['onnxruntime_cnn_ms']:.2f} "
            f"| {r['onnxruntime_ann_ms']:.2f} | {r['onnxruntime_ann_ms'] / r['onnxruntime_cnn_ms']:.2f}x "
            f"| {r['onnxruntime_ann_ms'] / r['slac_ann_ms']:.2f}x |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["resnet20"], help="registered model names")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64], help="batch sizes")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median)")


def main(args: argparse.Namespace) -> int:
    if min(args.batches) < 1 or args.rounds < 1:
        raise SystemExit("slac bench infer: --batches and --rounds must be positive")
    print(f"inference benchmark on {machine_description(torch.device('cpu'))}")
    rows = infer_benchmark(args.models, args.batches, args.rounds)
    print()
    print(format_table(rows))
    return 0
