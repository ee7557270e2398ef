"""The ``slac`` command: a thin shell over the library.

slac train [--config R] [--key value ...]   train (default: LeNet ANN + SLAC on the embedded digits)
slac train --resume RUN    continue an interrupted run from its last checkpoint
slac eval CHECKPOINT       test accuracy of a checkpoint (a run's, or --official: the official code's)
slac plot features|histograms|curves RUN...   Figures 3, 1 and 4 as PNG
slac report RUN... [--baseline B] [--compare A:B]   accuracy tables (mean, std, n, 95% CIs)
slac backends              which adder backends exist and which one ``auto`` picks per device
slac bench adder [...]     adder layer speed and memory against conv2d and the official formulation
slac bench train [...]     training images/s, real data pipeline against synthetic batches
slac bench step [...]      one training step of a model in CNN vs ANN form (images/s)
slac bench infer [...]     inference, CNN vs ANN form, slac vs onnxruntime (CPU)
slac ops MODEL [...]       #Mul/#Add/#XNOR per layer and energy (Tables 1-2); ``slac ops --paper``
"""

from __future__ import annotations

import argparse
import gc
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


def _user_errors() -> tuple[type[BaseException], ...]:
    """What the command reports in one line (exit status 2): the project's own errors (``SlacError``), files
    that are missing, present already or not accessible, and unreadable YAML. Anything else is a failure, not
    a mistake in the request (CUDA out of memory, an NCCL error, a bug), and keeps its traceback."""
    import yaml

    from slac.errors import SlacError

    return (
        SlacError,
        FileNotFoundError,
        FileExistsError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
        yaml.YAMLError,
    )


def _train(args: argparse.Namespace) -> int:
    from slac.errors import ConfigError
    from slac.train import Trainer, TrainingInterrupted, load_config, parse_overrides
    from slac.train.config import other_bn
    from slac.train.distributed import shutdown_distributed

    clean, trainer, is_main = False, None, True
    try:
        overrides = parse_overrides(args.overrides)
        if args.resume is not None:
            if args.config is not None:
                raise ConfigError("--resume continues a run with its saved recipe; leave out --config")
            if args.overwrite:
                raise ConfigError(
                    "--resume continues a run; --overwrite starts a new one in its place: choose one"
                )
            trainer = Trainer(resume=args.resume, overrides=overrides)
        else:
            trainer = Trainer(load_config(args.config, overrides), overwrite=args.overwrite)
        is_main = trainer.distributed.is_main
        summary = trainer.fit()
        clean = True
    except TrainingInterrupted as stop:
        clean = True  # every process stops at the same step
        if stop.checkpoint is None:  # not the process that writes
            return 128 + stop.signum
        print(
            f"stopped: checkpoint written to {stop.checkpoint}; continue with: slac train --resume "
            f"{Path(stop.checkpoint).parent.parent if stop.checkpoint else '<run directory>'}"
        )
        return 128 + stop.signum
    finally:
        # The DDP wrapper holds the process group: it is released before the group is destroyed, so that
        # gloo's objects are not left for interpreter exit, after the group (the likely cause of a rare
        # SIGABRT, "terminate called without an active exception", in a process whose run had finished).
        trainer = None
        gc.collect()
        shutdown_distributed(clean)
    if is_main:
        run_dir = Path(summary["run_dir"])
        best, final = summary["best_test_top1"], summary["final_test_top1"]
        other = other_bn(summary["eval_bn"])
        beside = summary.get(f"final_test_top1_{other}")
        print(
            (f"done: test top-1 {final:.2f}%" if final is not None else "done: not evaluated")
            + (f" ({summary['eval_bn']} BN statistics; {other}: {beside:.2f}%)" if beside is not None else "")
            + f" after {summary['epochs']} epochs"
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
            ("bn_recalibration", args.bn_recalibration),
        )
        if value is not None
    }
    if args.official:
        return _eval_official(args)
    result = evaluate_checkpoint(args.checkpoint, split=args.split, overrides=overrides, bn=args.bn)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    line = (
        f"{args.checkpoint} (epoch {result['epoch']}, {result['bn']} BN statistics): {args.split} top-1 "
        f"{result['top1']:.2f}%  "
        f"top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  ({int(result['count'])} images)"
    )
    if "logged_test_top1" in result:
        line += f"; logged during training: top-1 {result['logged_test_top1']:.2f}%"
    print(line)
    return 0


def _eval_official(args: argparse.Namespace) -> int:
    import json

    from slac.errors import ConfigError
    from slac.train.evaluate import evaluate_official

    if args.split != "test" or args.bn not in (None, "running") or args.bn_recalibration is not None:
        raise ConfigError("--official scores the test split on the checkpoint's running BatchNorm statistics")
    result = evaluate_official(
        args.checkpoint, args.model, args.data_root, args.device or "auto", args.batch_size or 1000
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.checkpoint} (official AdderNet {result['model']}, {result['dataset']}): test top-1 "
        f"{result['top1']:.2f}%  top-5 {result['top5']:.2f}%  ({int(result['count'])} images); "
        f"published: {result['published_top1']:.1f}%"
    )
    return 0


# The options of `slac plot` that each figure reads; another one given is an error, not ignored.
_PLOT_OPTIONS = {
    "features": {"split", "limit", "checkpoint"},
    "histograms": {"split", "limit", "checkpoint", "layer"},
    "curves": {"band"},
}
_PLOT_DEFAULTS = {"split": "test", "limit": 2000, "checkpoint": "last", "layer": None, "band": False}


def _plot(args: argparse.Namespace) -> int:
    from slac.analysis import plots
    from slac.errors import ConfigError

    given = sorted(key for key in _PLOT_DEFAULTS if getattr(args, key) is not None)
    unused = [key for key in given if key not in _PLOT_OPTIONS[args.figure]]
    if unused:
        raise ConfigError(
            f"plot {args.figure} takes no --{', --'.join(unused)}; its options are "
            + ", ".join(f"--{key}" for key in sorted(_PLOT_OPTIONS[args.figure]))
        )
    for key, value in _PLOT_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.figure == "features":
        path = plots.plot_features(args.runs, args.out, args.split, args.limit, args.checkpoint, args.dpi)
    elif args.figure == "histograms":
        if len(args.runs) != 1:
            raise ConfigError("plot histograms takes one run directory")
        path, fits = plots.plot_histograms(
            args.runs[0], args.out, args.layer, args.split, args.limit, args.checkpoint, args.dpi
        )
        for name, fit in fits.items():
            gaussian, laplace = fit["gaussian"], fit["laplace"]
            print(f"{name}: mean log-likelihood Gaussian {gaussian:.4f}, Laplace {laplace:.4f}")
    else:
        path = plots.plot_curves(args.runs, args.out, args.dpi, band=args.band)
    print(f"wrote {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from slac.analysis import report
    from slac.files import check_output_file

    for path, flag in ((args.markdown, "--markdown"), (args.csv, "--csv")):
        if path is not None:
            check_output_file(path, flag)  # before the work: a mistyped path costs nothing
    items, notes = report.experiments(args.runs)
    rows = report.summarize(items, args.baseline)
    text = report.format_report(rows, items, args.layout)
    if args.compare:
        text += "\n\n" + report.format_comparisons(report.compare(items, args.compare))
    if args.per_seed:
        text += "\n\n" + report.format_per_seed(items)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.csv:
        Path(args.csv).write_text(report.to_csv(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from slac.models.official import OFFICIAL_MODELS
    from slac.train.config import EVAL_BN

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
    evaluate.add_argument(
        "--bn",
        default=None,
        choices=EVAL_BN,
        help="BatchNorm statistics: recomputed from training batches, or the checkpoint's running ones "
        "(default: the run's eval_bn, which its headline test accuracy used)",
    )
    evaluate.add_argument(
        "--bn_recalibration",
        "--bn-recalibration",
        type=int,
        default=None,
        metavar="N",
        help="with --bn recalibrated: recompute from N training batches (default: the run's setting)",
    )
    evaluate.add_argument(
        "--official",
        action="store_true",
        help="CHECKPOINT is a file of the official AdderNet code (huawei-noah/AdderNet): score it on the "
        "dataset it was released for, normalized as the official test.py",
    )
    evaluate.add_argument(
        "--model", default="resnet20", choices=tuple(OFFICIAL_MODELS), help="with --official: its network"
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(run=_eval)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="benchmark", required=True)
    from slac.bench import adder, infer, step
    from slac.bench import train as train_bench

    for name, module, summary in (
        ("adder", adder, "adder layer vs conv2d and the official formulation"),
        ("step", step, "one training step of a model in CNN vs ANN form"),
        ("train", train_bench, "training images/s with the real data pipeline vs synthetic"),
        ("infer", infer, "inference of a model in CNN vs ANN form, slac vs onnxruntime (CPU)"),
    ):
        command = bench.add_parser(name, help=summary)
        module.add_arguments(command)
        command.set_defaults(run=module.main)

    plot = commands.add_parser("plot", help="figures as PNG (needs matplotlib)")
    plot.add_argument(
        "figure",
        choices=("features", "histograms", "curves"),
        help="features: Fig. 3; histograms: Fig. 1; curves: Fig. 4",
    )
    plot.add_argument("runs", nargs="+", help="run directories written by slac train")
    plot.add_argument("--out", required=True, help="the PNG file to write")
    plot.add_argument(
        "--split", default=None, choices=("test", "train"), help="features, histograms: the images (test)"
    )
    plot.add_argument(
        "--limit", type=int, default=None, help="features, histograms: at most this many images (2000)"
    )
    plot.add_argument(
        "--checkpoint", default=None, choices=("last", "best"), help="features, histograms (last)"
    )
    plot.add_argument("--layer", default=None, help="histograms: the adder layer (default: the last one)")
    plot.add_argument(
        "--band",
        action="store_true",
        default=None,
        help="curves: mean over seeds per experiment, band min-max",
    )
    plot.add_argument("--dpi", type=int, default=100)
    plot.set_defaults(run=_plot)

    report_parser = commands.add_parser("report", help="accuracy tables over seeds from run directories")
    report_parser.add_argument(
        "runs", nargs="+", help="run directories (runs differing only in seed are grouped)"
    )
    report_parser.add_argument("--baseline", default=None, help="experiment label or method (e.g. ANN)")
    report_parser.add_argument("--layout", default="long", choices=("long", "table1", "table3", "table4"))
    report_parser.add_argument(
        "--compare", action="append", default=[], metavar="A:B",
        help="A - B paired by seed, with Welch's interval (methods or labels, e.g. SLAC-ANN:ANN); repeatable",
    )  # fmt: skip
    report_parser.add_argument("--per_seed", action="store_true", help="also list every run's figure")
    report_parser.add_argument("--markdown", default=None, help="also write the table to this file")
    report_parser.add_argument("--csv", default=None, help="also write the rows as CSV")
    report_parser.set_defaults(run=_report)

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
    command = " ".join(part for part in (args.command, getattr(args, "benchmark", None)) if part)
    try:
        return args.run(args)
    except _user_errors() as error:
        message = " ".join(str(error).split())  # one line: YAML errors, for one, span several
        print(f"slac {command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
