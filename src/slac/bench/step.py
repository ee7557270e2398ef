"""Training-step benchmark: one full SGD step of a model in CNN form against the same model in ANN form.

A step is what the training loop does per batch: forward, the head's loss, backward, adaptive
learning-rate scaling of the adder gradients, and the SGD update (momentum 0.9, weight decay 5e-4).
Synthetic inputs of the model's input size are held on the device, so the data pipeline is not part
of the figure. Steps are timed in interleaved rounds (one step of each model per round) and the median
is reported with images per second and the ANN/CNN ratio.

    slac bench step                                  # resnet20 and lenet, CPU, batch 64
    slac bench step --device cuda --batch 256        # the GPU figure of the adder issue
    slac bench step --models resnet20 --heads linear slac
    slac bench step --profile                        # and where the ANN step's time goes around the adder

``--profile``: after the timed steps, 3 more steps of each ANN model run under torch.profiler (CPU
activities) and the adder operators' share is printed: the self time of the adder ops themselves (the
``slac::`` ops and the autograd nodes of ``slac_adder2d`` / ``slac_adder_linear``, whose self time is
their kernels' and their Python code's) and, per name, the torch ops that run inside them (children in
the profiler's event tree: copies, sums, fills and the like around the kernels), as a percentage of the
step's self CPU time. The weight gradient's GEMM, which the cpu backend hands to oneDNN as a convolution
weight gradient (``aten::convolution_backward``; ``aten::mm`` in the linear form), is the kernel's own
arithmetic and is counted apart. The line "torch-op self time around adder calls" is the rest: the work
the issue asks to bring under 5% of the ANN step. The profiler adds a few microseconds to every op it
records, so the many small ops around the kernels weigh a little more here than in an unprofiled step.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from slac.bench.adder import machine_description
from slac.bench.measure import quiet_stderr, time_once
from slac.models import create_model, model_cfg
from slac.nn import scale_adder_grads

__all__ = ["add_arguments", "adder_op_profile", "format_profile", "main", "step_benchmark"]


class _Trainer:
    def __init__(self, name: str, form: str, head: str, batch: int, device: torch.device, compile: bool):
        cfg = model_cfg(name)
        self.label = f"{name} {form} {head}"
        self.model = create_model(name, form=form, head=head).to(device)
        self.model.train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.inputs = torch.randn(batch, *cfg.input_size, device=device)
        self.targets = torch.randint(0, cfg.num_classes, (batch,), device=device)
        self.features = torch.compile(self.model.forward_features) if compile else self.model.forward_features
        self.times: list[float] = []

    def step(self) -> None:
        features = self.features(self.inputs)
        logits = self.model.forward_head(features, self.targets)
        loss = self.model.loss(features, logits, self.targets).total
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        scale_adder_grads(self.model, eta=0.2)
        self.optimizer.step()


# the GEMM of the weight gradient, which the cpu backend runs through torch: the kernel's own arithmetic
_ADDER_GEMMS = {"aten::convolution_backward", "aten::mm"}


def _is_adder_op(name: str) -> bool:
    """The adder operators and the autograd nodes torch.library generates for them (forward and backward);
    not the autograd engine's wrapper around a backward node, whose own work is the engine's."""
    return name.startswith("slac::") or name.startswith("GeneratedBackwardFor_slac_adder")


def adder_op_profile(step: Callable[[], object], steps: int = 3) -> dict:
    """Profile ``steps`` calls of ``step`` (CPU activities) and split their self CPU time: the adder ops'
    own, the torch ops inside them (any depth, in the profiler's event tree), and the rest of the step.

    Returns per-step figures in milliseconds: {"steps", "step_ms" (self CPU time of everything profiled),
    "adder_ops" and "inside": {op name: {"calls", "self_ms"}} (calls per step), "inside_ms" (the torch ops
    inside adder ops, the GEMMs of ``_ADDER_GEMMS`` excepted), "gemm_ms" (those), "inside_fraction"
    (inside_ms / step_ms)}.
    """
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.events()
    adder_ops: dict[str, dict] = {}
    inside: dict[str, dict] = {}
    for event in events:
        if _is_adder_op(event.name):
            table = adder_ops
        else:
            parent = event.cpu_parent
            while parent is not None and not _is_adder_op(parent.name):
                parent = parent.cpu_parent
            if parent is None:
                continue
            table = inside
        entry = table.setdefault(event.name, {"calls": 0, "self_ms": 0.0})
        entry["calls"] += 1
        entry["self_ms"] += event.self_cpu_time_total / 1e3
    for table in (adder_ops, inside):
        for entry in table.values():
            entry["calls"] /= steps
            entry["self_ms"] /= steps
    step_ms = sum(event.self_cpu_time_total for event in events) / 1e3 / steps
    gemm_ms = sum(e["self_ms"] for name, e in inside.items() if name in _ADDER_GEMMS)
    inside_ms = sum(e["self_ms"] for e in inside.values()) - gemm_ms
    return {"steps": steps, "step_ms": step_ms, "adder_ops": adder_ops, "inside": inside,
            "inside_ms": inside_ms, "gemm_ms": gemm_ms, "inside_fraction": inside_ms / step_ms}  # fmt: skip


_SMALL_OP = 0.001  # ops below this share of the step are summed into one row


def format_profile(label: str, profile: dict) -> str:
    """The adder ops and the torch ops inside them, largest first, and the line of the issue's target."""
    step_ms = profile["step_ms"]
    lines = [
        f"{label}: {profile['steps']} steps profiled, self CPU time {step_ms:.1f} ms per step",
        "",
        "| op | where | calls per step | self ms per step | % of step |",
        "|---|---|---:|---:|---:|",
    ]
    for where, table in (("adder op", profile["adder_ops"]), ("inside adder ops", profile["inside"])):
        small = {"calls": 0.0, "self_ms": 0.0, "ops": 0}
        for name, e in sorted(table.items(), key=lambda item: -item[1]["self_ms"]):
            share = e["self_ms"] / step_ms
            if share < _SMALL_OP:
                small["calls"] += e["calls"]
                small["self_ms"] += e["self_ms"]
                small["ops"] += 1
                continue
            note = " (weight gradient GEMM)" if where != "adder op" and name in _ADDER_GEMMS else ""
            lines.append(f"| {name}{note} | {where} | {e['calls']:g} | {e['self_ms']:.2f} | {share:.1%} |")
        if small["ops"]:
            lines.append(
                f"| {small['ops']} other ops, each under {_SMALL_OP:.1%} | {where} | {small['calls']:g} "
                f"| {small['self_ms']:.2f} | {small['self_ms'] / step_ms:.1%} |"
            )
    adder_ms = sum(e["self_ms"] for e in profile["adder_ops"].values())
    lines += [
        "",
        f"adder ops' own self time: {adder_ms:.1f} ms per step ({adder_ms / step_ms:.1%} of the ANN step); "
        f"weight gradient GEMM inside them: {profile['gemm_ms']:.1f} ms ({profile['gemm_ms'] / step_ms:.1%})",
        f"torch-op self time around adder calls: {profile['inside_fraction']:.1%} of the ANN step "
        f"({profile['inside_ms']:.1f} ms per step; target < 5%)",
    ]
    return "\n".join(lines)


def step_benchmark(
    models: list[str],
    heads: list[str],
    batch: int,
    device: torch.device,
    steps: int = 5,
    compile: bool = False,
    progress=print,
    profile: bool = False,
) -> list[dict]:
    """Time ``steps`` steps of each model in both forms (rows of ms per step); with ``profile``, each row
    also holds ``adder_op_profile`` of 3 more steps of the ANN form."""
    rows = []
    for name in models:
        for head in heads:
            trainers = [_Trainer(name, form, head, batch, device, compile) for form in ("cnn", "ann")]
            for trainer in trainers:
                trainer.step()  # warm-up: kernels compiled, autotuned
                trainer.step()
            for _ in range(steps):
                for trainer in trainers:
                    trainer.times.append(time_once(trainer.step, device))
            medians = [statistics.median(t.times) for t in trainers]
            for trainer, seconds in zip(trainers, medians, strict=True):
                progress(
                    f"  {trainer.label:28s} {seconds * 1e3:9.1f} ms/step  {batch / seconds:9.1f} images/s"
                )
            cnn_ms, ann_ms = medians[0] * 1e3, medians[1] * 1e3
            row = {"model": name, "head": head, "batch": batch, "cnn_ms": cnn_ms, "ann_ms": ann_ms}
            if profile:
                row["profile"] = adder_op_profile(trainers[1].step)
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| model | head | batch | CNN ms/step | CNN images/s | ANN ms/step | ANN images/s | ANN / CNN time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cnn_rate, ann_rate = r["batch"] / r["cnn_ms"] * 1e3, r["batch"] / r["ann_ms"] * 1e3
        lines.append(
            f"| {r['model']} | {r['head']} | {r['batch']} | {r['cnn_ms']:.1f} | {cnn_rate:.0f} "
            f"| {r['ann_ms']:.1f} | {ann_rate:.0f} | {r['ann_ms'] / r['cnn_ms']:.2f}x |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 64 on CPU, 256 on CUDA)")
    parser.add_argument("--models", nargs="+", default=["resnet20", "lenet"], help="registered model names")
    parser.add_argument("--heads", nargs="+", default=["linear"], help="head names (e.g. linear slac)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument(
        "--profile", action="store_true",
        help="then profile 3 ANN steps: the adder ops' time and the torch ops' time inside them",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    batch = args.batch if args.batch is not None else (256 if device.type == "cuda" else 64)
    if batch < 1 or args.steps < 1:
        raise SystemExit("--batch and --steps must be positive")
    print(f"training-step benchmark on {machine_description(device)}")
    rows = step_benchmark(
        args.models, args.heads, batch, device, args.steps, args.compile, profile=args.profile
    )
    print()
    print(format_table(rows))
    for r in rows:
        if "profile" in r:
            print()
            print(format_profile(f"{r['model']} ann {r['head']}, batch {r['batch']}", r["profile"]))
    return 0
