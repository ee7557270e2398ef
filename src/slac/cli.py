"""The ``slac`` command: a thin shell over the library.

slac backends              which adder backends exist and which one ``auto`` picks per device
slac bench adder [...]     adder layer speed and memory against conv2d and the official formulation
slac bench step [...]      one training step of a model in CNN vs ANN form (images/s)
slac ops MODEL [...]       #Mul/#Add/#XNOR per layer and energy (Tables 1-2); ``slac ops --paper``
"""

from __future__ import annotations

import argparse
import sys


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slac", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="list the adder backends").set_defaults(run=_backends)

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
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
