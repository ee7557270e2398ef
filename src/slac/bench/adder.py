"""Adder layer benchmark: forward, backward and both, and peak memory, on the paper's layer shapes.

Methods, all on the same input in one run: the official broadcast formulation (``slac.ops.official``),
each adder backend that runs on the device, and ``torch.nn.functional.conv2d`` of the same shape (the
speed a CNN layer has; on CUDA three ways: float32 with TF32 off, TF32 on, and bfloat16). Speeds are
reported as ratios measured in this run, since the machines are shared and noisy: adder/conv2d (lower is
better) and official/adder (higher is better). On CUDA the adder's forward throughput is also given as a
fraction of the device's ceiling of |x - w| pairs per second (``--pair-ceiling``, default the H100 SXM's
16.7 T/s: 66.9 TFLOP/s FP32 at two instructions a pair). On the CPU the cpu backend's forward and input
gradient are given as fractions of ceilings measured on this machine by probe kernels, the kernels' own
hot loops on operands in L1 (``slac.bench.probes``).

Timing: each round runs one training-like call per method (the gradients cleared, forward, backward) and
times its two phases as they run in it (``time_phases``): forward, backward and fwd+bwd come from the
same calls, so the parts add up to the whole. The forward and the backward are also timed alone, each
repeated on its own; the consistency line compares those with the phases of the step, which shows a
measurement disturbed by caches, thread hand-overs or allocation. Medians over rounds, the fastest
round beside them.

    slac bench adder                       # CPU: ResNet-20 CIFAR shapes at batch 64
    slac bench adder --device cuda         # GPU: ResNet-20 at batch 256 and ResNet-18 ImageNet at 64
    slac bench adder --methods cpu conv2d  # a subset
    python benchmarks/bench_adder.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from slac import functional
from slac.bench.measure import peak_memory_bytes, time_once, time_phases
from slac.bench.probes import measure_ceilings
from slac.ops import available_backends
from slac.ops.official import official_adder2d

__all__ = ["RESNET20_CIFAR_SHAPES", "LayerShape", "consistency", "main", "run"]


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


RESNET18_IMAGENET_SHAPES = [
    LayerShape("layer1 3x3 64-64 56px", 64, 64, 56, 3, 1),
    LayerShape("layer2 3x3 64-128 56px s2", 64, 128, 56, 3, 2),
    LayerShape("layer2 3x3 128-128 28px", 128, 128, 28, 3, 1),
    LayerShape("layer3 3x3 128-256 28px s2", 128, 256, 28, 3, 2),
    LayerShape("layer3 3x3 256-256 14px", 256, 256, 14, 3, 1),
    LayerShape("layer4 3x3 256-512 14px s2", 256, 512, 14, 3, 2),
    LayerShape("layer4 3x3 512-512 7px", 512, 512, 7, 3, 1),
    LayerShape("shortcut 1x1 128-256 28px s2", 128, 256, 28, 1, 2),
]

# conv2d variants on CUDA: (allow TF32, compute dtype)
_CONV_VARIANTS = {
    "conv2d": (False, None),
    "conv2d-tf32": (True, None),
    "conv2d-bf16": (False, torch.bfloat16),
}


def _layer_fn(method: str, shape: LayerShape):
    s, p = shape.stride, shape.padding
    if method in _CONV_VARIANTS:
        allow_tf32, dtype = _CONV_VARIANTS[method]

        def conv(x, w):
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=allow_tf32):
                if dtype is None:
                    return F.conv2d(x, w, stride=s, padding=p)
                return F.conv2d(x.to(dtype), w.to(dtype), stride=s, padding=p)

        return conv
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
    forward_pairs_per_s: float  # |x - w| terms (or multiply-adds) of the forward per second
    grad_input_ms: float = math.nan  # the cpu backend's input-gradient kernel alone (CPU only)
    both_min_ms: float = math.nan  # the fastest round's fwd+bwd
    forward_alone_ms: float = math.nan  # the forward repeated on its own
    backward_alone_ms: float = math.nan  # the backward repeated on its own (after an untimed forward)


class _Case:
    """One method on one layer: its inputs, the three timed steps and the times collected so far."""

    def __init__(self, shape: LayerShape, method: str, batch: int, device: torch.device, dtype: torch.dtype):
        self.shape, self.method, self.batch, self.device = shape, method, batch, device
        size = (shape.out_channels, shape.in_channels, shape.kernel, shape.kernel)
        self.x = torch.randn(batch, shape.in_channels, shape.size, shape.size, device=device, dtype=dtype)
        self.w = torch.randn(size, device=device, dtype=dtype)
        self.x.requires_grad_()
        self.w.requires_grad_()
        self.fn = _layer_fn(method, shape)
        self.grad = torch.randn_like(self.fn(self.x, self.w))
        self.times: dict[str, list[float]] = {
            name: []
            for name in ("forward", "backward", "both", "forward_alone", "backward_alone", "grad_input")
        }
        self.both()  # warm-up: kernels compiled and autotuned, caches filled
        if method == "cpu":
            self.grad_input()

    def forward(self):
        return self.fn(self.x, self.w)

    def backward(self, output):
        output.backward(self.grad)

    def both(self):
        self.x.grad = self.w.grad = None
        self.fn(self.x, self.w).backward(self.grad)

    def grad_input(self):
        from slac.ops import cpu

        s, p = self.shape.stride, self.shape.padding
        return cpu.adder2d_grad_input(self.grad, self.x.detach(), self.w.detach(), (s, s), (p, p), (1, 1), 1)

    def clear(self) -> None:
        self.x.grad = self.w.grad = None

    def time_round(self) -> None:
        self.clear()
        forward, backward = time_phases([lambda _: self.forward(), self.backward], self.device)
        self.times["forward"].append(forward)
        self.times["backward"].append(backward)
        self.times["both"].append(forward + backward)
        self.times["forward_alone"].append(time_once(self.forward, self.device))
        self.clear()
        self.times["backward_alone"].append(time_once(self.backward, self.device, setup=self.forward))
        if self.method == "cpu":
            self.times["grad_input"].append(time_once(self.grad_input, self.device))

    def result(self) -> Result:
        forward, backward, both, forward_alone, backward_alone = (
            statistics.median(self.times[k])
            for k in ("forward", "backward", "both", "forward_alone", "backward_alone")
        )
        self.x.grad = self.w.grad = None
        peak = peak_memory_bytes(self.both, self.device)
        unfolded_bytes = self.shape.unfolded_elements(self.batch) * self.x.element_size()
        grad_input = statistics.median(self.times["grad_input"]) if self.times["grad_input"] else math.nan
        pairs_per_s = self.shape.pairs(self.batch) / forward
        return Result(self.shape.name, self.method, forward * 1e3, backward * 1e3, both * 1e3, peak / 2**20,
                      peak / unfolded_bytes, pairs_per_s, grad_input * 1e3, min(self.times["both"]) * 1e3,
                      forward_alone * 1e3, backward_alone * 1e3)  # fmt: skip


def run(
    shapes: list[LayerShape],
    methods: list[str],
    batch: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    progress=print,
) -> list[Result]:
    """Time every method on every layer. Per layer, the methods are timed in interleaved rounds (each
    round times each method once), so a change in the machine's load affects them alike; medians are
    reported. The official formulation, which takes seconds per call, is timed in the first 2 rounds."""
    results = []
    for shape in shapes:
        cases: dict[str, _Case | None] = {}
        for method in methods:
            try:
                cases[method] = _Case(shape, method, batch, device, dtype)
            except torch.OutOfMemoryError:  # the official formulation on large layers: a result, not a crash
                cases[method] = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        for round_ in range(repeats):
            for method, case in cases.items():
                if case is not None and (method != "official" or round_ < 2):
                    case.time_round()
        for method, case in cases.items():
            if case is None:
                progress(f"  {shape.name:28s} {method:12s} out of memory")
                nan = float("nan")
                results.append(Result(shape.name, method, nan, nan, nan, nan, nan, nan))
                continue
            r = case.result()
            progress(f"  {shape.name:28s} {method:12s} both {r.both_ms:9.2f} ms  peak {r.peak_mib:8.1f} MiB")
            results.append(r)
        del cases
    return results


def format_table(results: list[Result], batch: int, pair_ceiling: float | None = None) -> str:
    """Markdown table with ratios against conv2d and the official formulation of the same layer."""
    by_layer: dict[str, dict[str, Result]] = {}
    for r in results:
        by_layer.setdefault(r.layer, {})[r.method] = r
    lines = [
        f"| layer (batch {batch}) | method | forward ms | backward ms | fwd+bwd ms (fastest) "
        "| fwd+bwd / conv2d | official / method | peak MiB | peak / unfolded input | forward T pairs/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if pair_ceiling:
        lines[0] += " of ceiling |"
        lines[1] += "---:|"
    for layer, methods in by_layer.items():
        conv, official = methods.get("conv2d"), methods.get("official")
        for method, r in methods.items():
            if math.isnan(r.both_ms):
                lines.append(f"| {layer} | {method} | out of memory |" + " |" * (8 if pair_ceiling else 7))
                continue
            vs_conv = f"{r.both_ms / conv.both_ms:.2f}x" if conv else "-"
            vs_official = f"{official.both_ms / r.both_ms:.1f}x" if official else "-"
            lines.append(
                f"| {layer} | {method} | {r.forward_ms:.2f} | {r.backward_ms:.2f} | {r.both_ms:.2f}"
                + (f" ({r.both_min_ms:.2f})" if not math.isnan(r.both_min_ms) else "")
                + " "
                f"| {vs_conv} | {vs_official} | {r.peak_mib:.1f} | {r.peak_per_unfolded:.2f} "
                f"| {r.forward_pairs_per_s / 1e12:.3f} |"
                + (f" {r.forward_pairs_per_s / pair_ceiling:.0%} |" if pair_ceiling else "")
            )
    return "\n".join(lines)


def ceiling_table(results: list[Result], batch: int, ceilings: dict | None) -> str:
    """The cpu backend against the ceilings measured by the probe kernels (``slac.bench.probes``): the
    rates of the kernels' own hot loops (min + add for the forward, clamp + FMA for the input gradient)
    on operands in L1, at the thread count the kernels run with. conv2d's best multiply-add rate of this
    run and the probes' ratio min+add / FMA are printed beside them: that ratio is what a ceiling derived
    from an instruction count assumes, and it differs between CPUs."""
    conv = [r for r in results if r.method == "conv2d" and not math.isnan(r.forward_ms)]
    mine = [r for r in results if r.method == "cpu" and not math.isnan(r.grad_input_ms)]
    if not mine or not ceilings:
        return ""
    forward, grad_input, fma = ceilings["forward"], ceilings["grad_input"], ceilings["fma"]
    tiles = {kind: "{}x{} {}-bit".format(*tile) for kind, tile in ceilings["tiles"].items()}
    line = (
        f"Measured ceilings (probe kernels on {ceilings['threads']} threads): "
        f"min+add {forward / 1e9:.1f} G pairs/s (tile {tiles['forward']}), "
        f"clamp+FMA {grad_input / 1e9:.1f} G pairs/s ({tiles['grad_input']}), "
        f"FMA {fma / 1e9:.1f} G multiply-adds/s ({tiles['fma']}); min+add / FMA {forward / fma:.2f}."
    )
    if conv:
        conv_rate = max(r.forward_pairs_per_s for r in conv)
        line += f" For comparison, conv2d's best forward: {conv_rate / 1e9:.0f} G multiply-adds/s."
    lines = [
        line,
        "",
        f"| layer (batch {batch}) | cpu forward G pairs/s | of ceiling | cpu grad input ms "
        "| grad input G pairs/s | of ceiling |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in mine:
        grad_rate = r.forward_pairs_per_s * r.forward_ms / r.grad_input_ms  # the same pairs
        lines.append(
            f"| {r.layer} | {r.forward_pairs_per_s / 1e9:.1f} | {r.forward_pairs_per_s / forward:.0%} "
            f"| {r.grad_input_ms:.2f} | {grad_rate / 1e9:.1f} | {grad_rate / grad_input:.0%} |"
        )
    return "\n".join(lines)


# A part timed alone that differs from the same phase inside the step by more than this fraction is named.
CONSISTENCY_TOLERANCE = 0.15


def consistency(results: list[Result]) -> str:
    """The parts timed alone against the same phases inside the step, per method: the sum of the parts
    alone over the step's fwd+bwd (1.00 when a phase costs the same alone as in the step), and the layers
    where a part alone is off by more than ``CONSISTENCY_TOLERANCE``, the sign of a disturbed measurement
    (caches warmed by repeating one phase, a thread team handed over between libraries, allocation)."""
    lines = []
    for method in sorted({r.method for r in results}):
        rows = [r for r in results if r.method == method and not math.isnan(r.forward_alone_ms)]
        if not rows:
            continue
        ratios = [(r.forward_alone_ms + r.backward_alone_ms) / r.both_ms for r in rows]
        off = []
        for r in rows:
            for part, alone, inside in (("forward", r.forward_alone_ms, r.forward_ms),
                                        ("backward", r.backward_alone_ms, r.backward_ms)):  # fmt: skip
                if abs(alone / inside - 1) > CONSISTENCY_TOLERANCE:
                    off.append(f"{r.layer} {part} {alone:.2f} vs {inside:.2f} ms")
        line = f"{method}: (forward alone + backward alone) / fwd+bwd {min(ratios):.2f}-{max(ratios):.2f}"
        if off:
            line += f"; parts alone off by more than {CONSISTENCY_TOLERANCE:.0%}: " + "; ".join(off)
        lines.append(line)
    return "\n".join(lines)


def summary(results: list[Result]) -> str:
    """Worst-case ratios of each adder method over the layers (the benchmark's targets)."""
    by_layer: dict[str, dict[str, Result]] = {}
    for r in results:
        by_layer.setdefault(r.layer, {})[r.method] = r
    methods = sorted({r.method for r in results} - {"official", *_CONV_VARIANTS})
    out = []

    def ratios(numerator: str, denominator: str, field: str) -> list[float]:
        values = [
            getattr(d[numerator], field) / getattr(d[denominator], field)
            for d in by_layer.values()
            if numerator in d and denominator in d
        ]
        return [v for v in values if not math.isnan(v)]  # a layer where the official one ran out of memory

    for m in methods:
        vs_conv = ratios(m, "conv2d", "both_ms")
        vs_off = ratios("official", m, "both_ms")
        mem = ratios("official", m, "peak_mib")
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
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 64 on CPU, 256 on CUDA)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument(
        "--methods", nargs="+", default=None,
        help="subset of: official, conv2d and the adder backends (default: all that run on the device)",
    )  # fmt: skip
    parser.add_argument(
        "--shapes", choices=["resnet20", "resnet18"], nargs="+", default=None,
        help="layer sets (default resnet20 on CPU; resnet20 and resnet18 on CUDA)",
    )  # fmt: skip
    parser.add_argument("--layers", nargs="+", type=int, default=None, help="indices of layers to run")
    parser.add_argument("--imagenet-batch", type=int, default=64, help="batch for the resnet18 shapes")
    parser.add_argument(
        "--pair-ceiling", type=float, default=16.7e12,
        help="device ceiling of |x-w| pairs/s for the CUDA report (default: H100 SXM, 16.7e12)",
    )  # fmt: skip
    parser.add_argument("--json", default=None, help="also write the results as JSON to this path")


def main(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    batch = args.batch if args.batch is not None else (256 if cuda else 64)
    if batch < 1 or args.repeats < 1 or args.imagenet_batch < 1:
        raise SystemExit("--batch, --imagenet-batch and --repeats must be positive")
    conv = list(_CONV_VARIANTS) if cuda else ["conv2d"]
    known = ["official", *available_backends(device.type), *conv]
    # by default no backend that only an interpreter runs here (Triton on CPU tensors): name it to time it
    methods = args.methods or ["official", *available_backends(device.type, interpreted=False), *conv]
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise SystemExit(f"unknown or unavailable methods {unknown} on {device.type}; choose from {known}")
    sets = args.shapes or (["resnet20", "resnet18"] if cuda else ["resnet20"])
    print(f"adder benchmark on {machine_description(device)}")
    report, everything = [], []
    ceilings = None  # measured once, after the first set of layers, when the cpu backend was timed
    for name in sets:
        shapes, set_batch = (
            (RESNET20_CIFAR_SHAPES, batch)
            if name == "resnet20"
            else (RESNET18_IMAGENET_SHAPES, args.imagenet_batch)
        )
        if args.layers is not None:
            shapes = [shapes[i] for i in args.layers if i < len(shapes)]
        results = run(shapes, methods, set_batch, device, repeats=args.repeats)
        if ceilings is None and device.type == "cpu" and "cpu" in methods:
            ceilings = measure_ceilings()
        everything.append({"shapes": name, "batch": set_batch, "results": [asdict(r) for r in results]})
        report += [f"### {name} layer shapes, batch {set_batch}", "",
                   format_table(results, set_batch, args.pair_ceiling if cuda else None), "",
                   summary(results), "", "Consistency of the parts with the step:", consistency(results),
                   "", ceiling_table(results, set_batch, ceilings), ""]  # fmt: skip
    print()
    print("\n".join(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(device), "ceilings": ceilings, "sets": everything}, f,
                      indent=1)  # fmt: skip
    return 0
