"""Training-step benchmark: one full SGD step of a model in CNN form against the same model in ANN form.

A step is what the training loop does per batch: forward, the head's loss, backward, adaptive
learning-rate scaling of the adder gradients, and the SGD update (momentum 0.9, weight decay 5e-4).
Synthetic inputs of the model's input size are held on the device, so the data pipeline is not part
of the figure. Steps are timed in interleaved rounds (one step of each model per round) and the median
is reported with images per second and the ANN/CNN ratio.

    slac bench step                                  # resnet20 and lenet, CPU, batch 64
    slac bench step --device cuda --batch 256        # the GPU figure of the adder issue
    slac bench step --models resnet20 --heads linear slac
"""

from __future__ import annotations

import argparse
import statistics

import torch

from slac.bench.adder import machine_description
from slac.bench.measure import time_once
from slac.models import create_model, model_cfg
from slac.nn import scale_adder_grads

__all__ = ["add_arguments", "main", "step_benchmark"]


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


def step_benchmark(
    models: list[str],
    heads: list[str],
    batch: int,
    device: torch.device,
    steps: int = 5,
    compile: bool = False,
    progress=print,
) -> list[dict]:
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
            rows.append({"model": name, "head": head, "batch": batch, "cnn_ms": cnn_ms, "ann_ms": ann_ms})
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


def main(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    batch = args.batch if args.batch is not None else (256 if device.type == "cuda" else 64)
    if batch < 1 or args.steps < 1:
        raise SystemExit("--batch and --steps must be positive")
    print(f"training-step benchmark on {machine_description(device)}")
    rows = step_benchmark(args.models, args.heads, batch, device, args.steps, args.compile)
    print()
    print(format_table(rows))
    return 0
