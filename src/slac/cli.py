"""The ``slac`` command: a thin shell over the library.

slac train [--config R] [--key value ...]   train (default: LeNet ANN + SLAC on the embedded digits)
slac train --resume RUN    continue an interrupted run from its last checkpoint
slac eval CHECKPOINT       test accuracy of a checkpoint (file or run directory)
slac backends              which adder backends exist and which one ``auto`` picks per device
slac bench adder [...]     adder layer speed and memory against conv2d and the official formulation
slac bench step [...]      one training step of a model in CNN vs ANN form (images/s)
slac ops MODEL [...]       #Mul/#Add/#XNOR per layer and energy (Tables 1-2); ``slac ops --paper``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _backends(args: argparse.Namespace) -> int:
    import torch

    from slac.ops import BACKENDS, available_backends, resolve_backend

    for name, spec in BACKENDS.items():
        state = "available" if spec.is_available() else f"needs {', '.join(spec.requires)}"
        print(f"{name:10s} {state:12s} devices: {', '.join(spec.device_types):16s} {spec.description}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        print(
            f"auto on {device}: {resolve_backend('auto', device)}  (available: {available_backends(device)})"
        )
    return 0


_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ImportError, RuntimeError)


def _train(args: argparse.Namespace) -> int:
    from slac.train import Trainer, TrainingInterrupted, load_config, parse_overrides
    from slac.train.distributed import shutdown_distributed

    try:
        overrides = parse_overrides(args.overrides)
        if args.resume is not None:
            if args.config is not None:
                raise ValueError("--resume continues a run with its saved recipe; leave out --config")
            trainer = Trainer(resume=args.resume, overrides=overrides)
        else:
            trainer = Trainer(load_config(args.config, overrides), overwrite=args.overwrite)
        summary = trainer.fit()
    except TrainingInterrupted as stop:
        print(
            f"stopped: checkpoint written to {stop.checkpoint}; continue with: slac train --resume "
            f"{Path(stop.checkpoint).parent.parent if stop.checkpoint else '<run directory>'}"
        )
        return 128 + stop.signum
    except _USER_ERRORS as error:
        print(f"slac train: error: {error}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    if trainer.distributed.is_main:
        run_dir = Path(summary["run_dir"])
        best = summary["best_test_top1"]
        print(
            f"done: test top-1 {summary['final_test_top1']:.2f}% after {summary['epochs']} epochs"
            + (f" (best {best:.2f}% at epoch {summary['best_epoch']})" if best is not None else "")
            + f", {summary['train_images_per_s']:.0f} train images/s on {summary['device']}"
        )
        for name in (
            "config.yaml",
            "metrics.csv",
            "summary.json",
            "checkpoints/last.pt",
            "checkpoints/best.pt",
        ):
            if (run_dir / name).exists():
                print(f"  wrote {run_dir / name}")
        if (run_dir / "tensorboard").is_dir():
            print(f"  wrote {run_dir / 'tensorboard'}/  (tensorboard --logdir {run_dir.parent})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from slac.train import evaluate_checkpoint

    overrides = {
        key: value
        for key, value in (
            ("device", args.device),
            ("data_root", args.data_root),
            ("eval_batch_size", args.batch_size),
        )
        if value is not None
    }
    try:
        result = evaluate_checkpoint(args.checkpoint, split=args.split, overrides=overrides)
    except _USER_ERRORS as error:
        print(f"slac eval: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    line = (
        f"{args.checkpoint} (epoch {result['epoch']}): {args.split} top-1 {result['top1']:.2f}%  "
        f"top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  ({int(result['count'])} images)"
    )
    if "logged_test_top1" in result:
        line += f"; logged during training: top-1 {result['logged_test_top1']:.2f}%"
    print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slac", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="list the adder backends").set_defaults(run=_backends)

    train = commands.add_parser(
        "train",
        help="train a model (default: LeNet ANN + SLAC head on the embedded digits)",
        description="Train from a YAML recipe (configs/); any recipe key can be set with --key value "
        "(values are YAML: --amp bf16, --eta null, --head_options.angle_weight 1). Under torchrun, "
        "trains with DistributedDataParallel.",
    )
    train.add_argument("--config", default=None, help="a YAML recipe (default: the embedded digits recipe)")
    train.add_argument("--resume", default=None, metavar="RUN", help="continue a run directory or checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("eval", help="accuracy of a checkpoint on the test split")
    evaluate.add_argument("checkpoint", help="a checkpoint file or a run directory (its last.pt)")
    evaluate.add_argument("--split", default="test", choices=("test", "train"))
    evaluate.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the recipe's)")
    evaluate.add_argument("--data_root", "--data-root", default=None, help="where the dataset lives")
    evaluate.add_argument(
        "--batch_size", "--batch-size", type=int, default=None, help="evaluation batch size"
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(run=_eval)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="benchmark", required=True)
    from slac.bench import adder

    bench_adder = bench.add_parser("adder", help="adder layer vs conv2d and the official formulation")
    adder.add_arguments(bench_adder)
    bench_adder.set_defaults(run=adder.main)
    from slac.bench import step

    bench_step = bench.add_parser("step", help="one training step of a model in CNN vs ANN form")
    step.add_arguments(bench_step)
    bench_step.set_defaults(run=step.main)

    from slac.analysis import ops

    ops_parser = commands.add_parser("ops", help="operation counts and energy of a model (Tables 1-2)")
    ops.add_arguments(ops_parser)
    ops_parser.set_defaults(run=ops.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
