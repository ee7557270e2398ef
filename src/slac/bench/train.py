"""Training throughput with the real data pipeline against the same steps on synthetic data.

For each (model, form) the recipe's ``Trainer`` is built on the real dataset; then, interleaved in
rounds, ``--steps`` training steps are timed (a) drawing batches from the real loader (on-device crop
and flip included) and (b) on one pre-made batch of the same shape held on the device. The ratio
real/synthetic shows whether the data pipeline costs anything: 1.00 means it is not the bottleneck.

    slac bench train                                            # lenet, resnet20 x cnn, ann on digits
    slac bench train --dataset fashion-mnist --models lenet --batch 128
    slac bench train --device cuda --dataset cifar10 --models resnet20 --batch 256 --data_root ~/data
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from slac.bench.adder import machine_description

__all__ = ["add_arguments", "main", "train_benchmark"]


def _time_steps(trainer, batches, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    count = 0
    for images, labels in batches:
        trainer._train_step(images, labels)
        count += labels.numel()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - start)


def train_benchmark(
    models: list[str], forms: list[str], dataset: str, batch: int, steps: int, rounds: int, device: str,
    data_root: str | None = None, progress=print,
) -> list[dict]:  # fmt: skip
    from slac.train import Trainer, load_config

    rows = []
    for model in models:
        for form in forms:
            with tempfile.TemporaryDirectory() as out:
                config = load_config(
                    None,
                    {"model": model, "form": form, "head": "linear", "dataset": dataset, "batch_size": batch,
                     "device": device, "out_dir": out, "progress": False, "tensorboard": "off",
                     "data_root": data_root, "drop_last": True},
                )  # fmt: skip
                trainer = Trainer(config, log=lambda message: None)
                trainer.module.train()
                loader = trainer.data.train
                images, labels = next(iter(loader))
                synthetic = [(torch.randn_like(images), labels)] * steps

                def real_batches(loader=loader):
                    for index, item in enumerate(loader):
                        if index == steps:
                            break
                        yield item

                _time_steps(trainer, synthetic[:2], trainer.device)  # warm-up
                real, fake = [], []
                for _ in range(rounds):
                    real.append(_time_steps(trainer, real_batches(), trainer.device))
                    fake.append(_time_steps(trainer, synthetic, trainer.device))
                row = {
                    "model": model, "form": form, "dataset": dataset, "batch": batch,
                    "real": statistics.median(real), "synthetic": statistics.median(fake),
                }  # fmt: skip
                progress(
                    f"  {model:10s} {form}: real data {row['real']:8.1f} images/s, synthetic "
                    f"{row['synthetic']:8.1f} images/s, ratio {row['real'] / row['synthetic']:.2f}"
                )
                rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| model | form | dataset | batch | images/s, real data | images/s, synthetic | real / synthetic |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    ann = {(r["model"], r["dataset"]): r for r in rows if r["form"] == "ann"}
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['form']} | {r['dataset']} | {r['batch']} | {r['real']:.1f} | "
            f"{r['synthetic']:.1f} | {r['real'] / r['synthetic']:.2f} |"
        )
    for (model, dataset), r in ann.items():
        cnn = [c for c in rows if (c["model"], c["dataset"], c["form"]) == (model, dataset, "cnn")]
        if cnn:
            lines.append(f"\n{model} on {dataset}: ANN/CNN time per image {cnn[0]['real'] / r['real']:.2f}x")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["lenet", "resnet20"])
    parser.add_argument("--forms", nargs="+", default=["cnn", "ann"])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data_root", default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing (median over rounds)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")


def main(args: argparse.Namespace) -> int:
    if args.batch < 1 or args.steps < 1 or args.rounds < 1:
        raise SystemExit("--batch, --steps and --rounds must be positive")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
    print(f"training throughput on {machine_description(device)}")
    rows = train_benchmark(
        args.models,
        args.forms,
        args.dataset,
        args.batch,
        args.steps,
        args.rounds,
        args.device,
        args.data_root,
    )
    print()
    print(format_table(rows))
    return 0
