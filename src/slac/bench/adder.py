"""Adder layer benchmark: forward, backward and both, and peak memory, on the ResNet-20 CIFAR shapes.

Methods, all on the same input in one run: the official broadcast formulation (``slac.ops.official``),
each adder backend that runs on the device, and ``torch.nn.functional.conv2d`` of the same shape (the
speed a CNN layer has). Speeds are reported as ratios measured in this run, since the machines are
shared and noisy: adder/conv2d (lower is better) and official/adder (higher is better).

    slac bench adder                       # CPU, batch 64, every backend
    slac bench adder --methods cpu conv2d  # a subset
    python benchmarks/bench_adder.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from slac import functional
from slac.bench.measure import peak_memory_bytes, time_call
from slac.ops import available_backends
from slac.ops.official import official_adder2d

__all__ = ["RESNET20_CIFAR_SHAPES", "LayerShape", "main", "run"]


@dataclass(frozen=True)
class LayerShape:
    name: str
    in_channels: int
    out_channels: int
    size: int  # input height = width
    kernel: int
    stride: int

    @property
    def padding(self) -> int:
        return self.kernel // 2

    def output_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    def unfolded_elements(self, batch: int) -> int:
        return batch * self.in_channels * self.kernel**2 * self.output_size() ** 2

    def pairs(self, batch: int) -> int:
        """|x - w| terms of the forward: output elements times K."""
        return self.unfolded_elements(batch) * self.out_channels


RESNET20_CIFAR_SHAPES = [
    LayerShape("stage1 3x3 16-16 32px", 16, 16, 32, 3, 1),
    LayerShape("stage2 3x3 16-32 32px s2", 16, 32, 32, 3, 2),
    LayerShape("stage2 3x3 32-32 16px", 32, 32, 16, 3, 1),
    LayerShape("stage3 3x3 32-64 16px s2", 32, 64, 16, 3, 2),
    LayerShape("stage3 3x3 64-64 8px", 64, 64, 8, 3, 1),
    LayerShape("shortcut 1x1 16-32 32px s2", 16, 32, 32, 1, 2),
    LayerShape("shortcut 1x1 32-64 16px s2", 32, 64, 16, 1, 2),
]


def _layer_fn(method: str, shape: LayerShape):
    s, p = shape.stride, shape.padding
    if method == "conv2d":
        return lambda x, w: F.conv2d(x, w, stride=s, padding=p)
    if method == "official":
        return lambda x, w: official_adder2d(x, w, stride=s, padding=p)
    return lambda x, w: functional.adder2d(x, w, stride=s, padding=p, backend=method)


@dataclass
class Result:
    layer: str
    method: str
    forward_ms: float
    backward_ms: float
    both_ms: float
    peak_mib: float
    peak_per_unfolded: float  # peak memory / bytes of the unfolded input


def bench_layer(
    shape: LayerShape, method: str, batch: int, device: torch.device, dtype: torch.dtype, repeats: int
) -> Result:
    x = torch.randn(batch, shape.in_channels, shape.size, shape.size, device=device, dtype=dtype)
    w = torch.randn(shape.out_channels, shape.in_channels, shape.kernel, shape.kernel, device=device, dtype=dtype)
    x.requires_grad_()
    w.requires_grad_()
    fn = _layer_fn(method, shape)
    grad = torch.randn_like(fn(x, w))

    def forward():
        return fn(x, w)

    def both():
        x.grad = w.grad = None
        fn(x, w).backward(grad)

    forward_s = time_call(forward, device, repeats)
    both_s = time_call(both, device, repeats)
    # backward alone: time forward+backward minus a forward, measured in the same loop
    outputs = []

    def backward_only():
        outputs.pop().backward(grad)

    def prepare_and_backward():
        outputs.append(forward())
        backward_only()

    backward_s = max(0.0, time_call(prepare_and_backward, device, repeats) - forward_s)
    x.grad = w.grad = None
    peak = peak_memory_bytes(both, device)
    unfolded_bytes = shape.unfolded_elements(batch) * x.element_size()
    return Result(shape.name, method, forward_s * 1e3, backward_s * 1e3, both_s * 1e3, peak / 2**20,
                  peak / unfolded_bytes)  # fmt: skip


def run(
    shapes: list[LayerShape],
    methods: list[str],
    batch: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    progress=print,
) -> list[Result]:
    results = []
    for shape in shapes:
        for method in methods:
            r = bench_layer(shape, method, batch, device, dtype, repeats if method != "official" else 2)
            progress(f"  {shape.name:28s} {method:10s} both {r.both_ms:9.2f} ms  peak {r.peak_mib:8.1f} MiB")
            results.append(r)
    return results


def format_table(results: list[Result], batch: int) -> str:
    """Markdown table with ratios against conv2d and the official formulation of the same layer."""
    by_layer: dict[str, dict[str, Result]] = {}
    for r in results:
        by_layer.setdefault(r.layer, {})[r.method] = r
    lines = [
        f"| layer (batch {batch}) | method | forward ms | backward ms | fwd+bwd ms | fwd+bwd / conv2d "
        "| official / method | peak MiB | peak / unfolded input |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for layer, methods in by_layer.items():
        conv, official = methods.get("conv2d"), methods.get("official")
        for method, r in methods.items():
            vs_conv = f"{r.both_ms / conv.both_ms:.2f}x" if conv else "-"
            vs_official = f"{official.both_ms / r.both_ms:.1f}x" if official else "-"
            lines.append(
                f"| {layer} | {method} | {r.forward_ms:.2f} | {r.backward_ms:.2f} | {r.both_ms:.2f} | {vs_conv} "
                f"| {vs_official} | {r.peak_mib:.1f} | {r.peak_per_unfolded:.2f} |"
            )
    return "\n".join(lines)


def summary(results: list[Result]) -> str:
    """Worst-case ratios of each adder method over the layers (the benchmark's targets)."""
    by_layer: dict[str, dict[str, Result]] = {}
    for r in results:
        by_layer.setdefault(r.layer, {})[r.method] = r
    methods = sorted({r.method for r in results} - {"conv2d", "official"})
    out = []
    for m in methods:
        vs_conv = [d[m].both_ms / d["conv2d"].both_ms for d in by_layer.values() if m in d and "conv2d" in d]
        vs_off = [d["official"].both_ms / d[m].both_ms for d in by_layer.values() if m in d and "official" in d]
        mem = [d["official"].peak_mib / d[m].peak_mib for d in by_layer.values() if m in d and "official" in d]
        parts = [f"{m}:"]
        if vs_conv:
            parts.append(f"fwd+bwd vs conv2d worst {max(vs_conv):.2f}x, best {min(vs_conv):.2f}x;")
        if vs_off:
            parts.append(f"speed-up over official at least {min(vs_off):.1f}x;")
        if mem:
            parts.append(f"official peak memory / method's at least {min(mem):.1f}x")
        out.append(" ".join(parts))
    return "\n".join(out)


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument(
        "--methods", nargs="+", default=None,
        help="subset of: official, conv2d and the adder backends (default: all that run on the device)",
    )  # fmt: skip
    parser.add_argument("--layers", nargs="+", type=int, default=None, help="indices of layers to run")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this path")


def main(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if args.batch < 1 or args.repeats < 1:
        raise SystemExit("--batch and --repeats must be positive")
    known = ["official", *available_backends(device.type), "conv2d"]
    methods = args.methods or known
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise SystemExit(f"unknown or unavailable methods {unknown} on {device.type}; choose from {known}")
    shapes = RESNET20_CIFAR_SHAPES
    if args.layers is not None:
        shapes = [shapes[i] for i in args.layers]
    print(f"adder benchmark on {machine_description(device)}")
    results = run(shapes, methods, args.batch, device, repeats=args.repeats)
    print()
    print(format_table(results, args.batch))
    print()
    print(summary(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(device), "batch": args.batch,
                       "results": [asdict(r) for r in results]}, f, indent=1)  # fmt: skip
    return 0
