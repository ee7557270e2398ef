"""The adder Triton kernels' machine code, compiled for an NVIDIA GPU on a machine without one.

Triton compiles ahead of time for a named target (by default sm_90, the H100) with the ptxas it ships,
and its cuobjdump and nvdisasm read the result, so this runs wherever Triton is installed. A kernel is
compiled for a layer shape as its launcher would launch it: the same arguments (built by the launcher's
own ``forward_call`` / ``grad_input_call`` on meta tensors) and Triton's run-time specialisation of them
(integers equal to 1 become constants; integers that are multiples of 16 and pointers are marked
16-divisible), which changes the code Triton generates. For each kernel, layer and block config it
reports the registers and stack (spill space) per thread, and for the hot loop (the rank-1 update over
channels) its instruction count, the fraction of it that is the kernel's arithmetic (FADD, FMNMX, FFMA
and their float64 forms), and barriers, shared-memory and global loads per 1000 arithmetic instructions.
These are no timing, but they expose spills, layout conversions and index arithmetic, which is how the
autotuning spaces were chosen without a GPU at hand.

    python -m tools.sass                           # two layers, every config that fits them
    python -m tools.sass --shapes resnet18 --layers 0 --kernel forward --config 128 64 4 2 8 8 --dump fwd.sass
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import subprocess
import tempfile

from slac.bench.adder import RESNET18_IMAGENET_SHAPES, RESNET20_CIFAR_SHAPES, LayerShape
from slac.errors import ConfigError, DeviceError, MissingDependencyError

__all__ = ["KERNELS", "SassReport", "add_arguments", "analyse", "compile_kernel", "kernel_call", "main"]

KERNELS = ("forward", "grad_input")
ARITHMETIC = ("FADD", "FMNMX", "FFMA", "DADD", "DMNMX", "DFMA")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64"}
# (set, index, batch) of the default layers: a ResNet-20 and a ResNet-18 layer at the batches
DEFAULT_LAYERS = (("resnet20", 2, 256), ("resnet18", 2, 64))


@dataclasses.dataclass
class SassReport:
    registers: int
    stack_bytes: int
    spill_instructions: int  # STL/LDL anywhere in the kernel
    loop_instructions: int  # in the hot loop (the loop with the most arithmetic)
    loop_spills: int
    arithmetic_fraction: float
    barriers_per_1k: float  # per 1000 arithmetic instructions of the hot loop
    shared_loads_per_1k: float
    global_loads_per_1k: float
    sass: str

    def row(self) -> str:
        return (
            f"{self.registers} | {self.stack_bytes} | {self.spill_instructions} | {self.loop_instructions} | "
            f"{self.arithmetic_fraction:.2f} | {self.barriers_per_1k:.1f} | {self.shared_loads_per_1k:.1f} | "
            f"{self.global_loads_per_1k:.1f}"
        )


def _tools_dir() -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not os.path.isfile(os.path.join(path, "ptxas")):
        raise MissingDependencyError(f"Triton's NVIDIA tools (ptxas, nvdisasm, cuobjdump) are not in {path}")
    return path


def kernel_call(name: str, layer: LayerShape, batch: int, dtype: str = "fp32"):
    """The launcher's KernelCall for one layer, on meta tensors (nothing is allocated)."""
    import torch

    from slac.ops import triton_kernels

    if name not in KERNELS:
        raise ConfigError(f"unknown kernel {name!r}; choose from {', '.join(KERNELS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype is one of {', '.join(DTYPES)}, got {dtype!r}")
    element = getattr(torch, DTYPES[dtype])
    conv = ([layer.stride] * 2, [layer.padding] * 2, [1, 1], 1)
    x = torch.empty(batch, layer.in_channels, layer.size, layer.size, device="meta", dtype=element)
    w = torch.empty(layer.out_channels, layer.in_channels, layer.kernel, layer.kernel, device="meta",
                    dtype=element)  # fmt: skip
    size = layer.output_size()
    acc = triton_kernels._acc_dtype(x)
    if name == "forward":
        out = torch.empty(batch, layer.out_channels, size, size, device="meta", dtype=acc)
        return triton_kernels.forward_call(x, w, out, *conv)
    grad = torch.empty(batch, layer.out_channels, size, size, device="meta", dtype=element)
    return triton_kernels.grad_input_call(grad, x, w, torch.empty_like(x, dtype=acc), *conv)


_POINTER_TYPES = {name: f"*{short}" for short, name in DTYPES.items()}  # torch dtype name -> Triton's


def _specialise(value) -> tuple[str, object]:
    """Triton's run-time specialisation of a launch argument (its JIT does the same): an integer equal to
    1 becomes a constant, an integer that is a multiple of 16 and a tensor's (16-byte aligned) address
    are marked divisible by 16. Returns (signature type, constant or divisibility)."""
    import torch

    if isinstance(value, torch.Tensor):
        return _POINTER_TYPES[str(value.dtype).removeprefix("torch.")], 16
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise TypeError(f"launch arguments are tensors and 32-bit integers, got {value!r}")
    if value == 1:
        return "constexpr", 1
    return "i32", 16 if value % 16 == 0 else None


def compile_kernel(call, block, capability: int = 90):
    """Compile a KernelCall's kernel for sm_{capability} with one Block, specialised as at run time."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import JITFunction

    from slac.ops.triton_kernels import LAUNCH_OPTIONS

    jit = call.kernel.fn
    if not isinstance(jit, JITFunction):
        raise DeviceError(
            "the Triton kernels were loaded for the interpreter (TRITON_INTERPRET=1), and interpreted "
            "functions cannot be compiled; run this in a process without TRITON_INTERPRET set"
        )
    _tools_dir()
    config = block.check().config()
    constexprs = {**call.constexprs, **config.kwargs}
    values = dict(zip(jit.arg_names, call.args, strict=False))
    signature, attrs = {}, {}
    for index, arg in enumerate(jit.arg_names):
        if arg in constexprs:
            signature[arg] = "constexpr"
            continue
        signature[arg], special = _specialise(values[arg])
        if signature[arg] == "constexpr":
            constexprs[arg] = special
        elif special:
            attrs[(index,)] = [["tt.divisibility", special]]
    source = triton.compiler.ASTSource(fn=jit, signature=signature, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": config.num_warps, **LAUNCH_OPTIONS}
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)


def _tool(name: str, *args: str) -> str:
    command = [os.path.join(_tools_dir(), name), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _loops(sass: str) -> list[tuple[collections.Counter, bool]]:
    """Opcode counts of the whole kernel and of every loop body (from a label to a branch back to it), each
    with whether the loop is part of a nest (holds another loop or lies inside one)."""
    labels: dict[str, int] = {}
    ops: list[tuple[str, str]] = []
    for line in sass.splitlines():
        if m := re.match(r"\s*(\.L_x_\d+):", line):
            labels[m.group(1)] = len(ops)
        elif m := re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*)", line):
            ops.append((m.group(1).split(".")[0], m.group(2)))
    spans = []
    for end, (op, rest) in enumerate(ops):
        target = re.search(r"(\.L_x_\d+)", rest) if op == "BRA" else None
        if target and labels.get(target.group(1), end + 1) <= end:
            spans.append((labels[target.group(1)], end))

    def nested(a: int, b: int) -> bool:
        return any((c, d) != (a, b) and (a <= c <= d <= b or c <= a <= b <= d) for c, d in spans)

    loops = [(collections.Counter(op for op, _ in ops), False)]  # the whole kernel first
    loops += [(collections.Counter(op for op, _ in ops[a : b + 1]), nested(a, b)) for a, b in spans]
    return loops


def analyse(kernel) -> SassReport:
    """Registers, spills and the hot loop's instruction mix of a compiled kernel. The hot loop is the loop
    with the most arithmetic among those that are no part of a loop nest: the kernels' loops over channels
    run one after another, one per tap (the taps are unrolled at compile time), while the input gradient's
    direct form, which runs only for tiles whose clamp form is not finite, is a nest (its taps a run-time
    loop)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        usage = _tool("cuobjdump", "--dump-resource-usage", path)
        sass = _tool("nvdisasm", "-c", path)
    (whole, _), *loops = _loops(sass)
    candidates = [c for c, in_nest in loops if not in_nest] or [c for c, _ in loops]
    hot = max(candidates, key=lambda c: sum(c[a] for a in ARITHMETIC), default=collections.Counter())
    total = sum(hot.values())
    arithmetic = sum(hot[a] for a in ARITHMETIC)

    def per_1k(op: str) -> float:
        return 1000 * hot[op] / arithmetic if arithmetic else 0.0

    return SassReport(
        registers=int(re.search(r"REG:(\d+)", usage).group(1)),
        stack_bytes=int(re.search(r"STACK:(\d+)", usage).group(1)),
        spill_instructions=whole["STL"] + whole["LDL"],
        loop_instructions=total,
        loop_spills=hot["STL"] + hot["LDL"],
        arithmetic_fraction=arithmetic / total if total else 0.0,
        barriers_per_1k=per_1k("BAR"),
        shared_loads_per_1k=per_1k("LDS"),
        global_loads_per_1k=per_1k("LDG"),
        sass=sass,
    )


HEADER = (
    "| kernel | layer | batch | BLOCK_M | BLOCK_N | warps | unroll | thread tile | registers | stack B | "
    "spill instr | hot loop instr | arithmetic | BAR/1k | LDS/1k | LDG/1k |\n|---|---|" + "---:|" * 14
)
SHAPE_SETS = {"resnet20": (RESNET20_CIFAR_SHAPES, 256), "resnet18": (RESNET18_IMAGENET_SHAPES, 64)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", choices=KERNELS, action="append", help="default: both")
    parser.add_argument(
        "--shapes", choices=sorted(SHAPE_SETS), action="append",
        help="layer set (as in slac bench adder; default: one layer of each set)",
    )  # fmt: skip
    parser.add_argument("--layers", type=int, nargs="+", help="indices of layers in the sets (default: 2)")
    parser.add_argument("--batch", type=int, help="batch (default: 256 for resnet20, 64 for resnet18)")
    parser.add_argument(
        "--config", type=int, nargs=6, action="append",
        metavar=("BLOCK_M", "BLOCK_N", "WARPS", "UNROLL", "THREAD_M", "THREAD_N"),
        help="a block config (repeatable); default: the configs of the kernel's space that fit the layer",
    )  # fmt: skip
    parser.add_argument(
        "--first", action="store_true",
        help="only the first config that fits (the one used with SLAC_TRITON_AUTOTUNE=0)",
    )  # fmt: skip
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="input type")
    parser.add_argument("--capability", type=int, default=90, help="compute capability (90: H100/H200)")
    parser.add_argument("--dump", default=None, help="write the last compiled kernel's SASS here")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON lines instead")


def _layers(args: argparse.Namespace) -> list[tuple[LayerShape, int]]:
    if args.batch is not None and args.batch < 1:
        raise SystemExit(f"tools.sass: --batch must be positive, got {args.batch}")
    if args.shapes is None and args.layers is None:
        chosen = [(SHAPE_SETS[name][0][i], batch) for name, i, batch in DEFAULT_LAYERS]
    else:
        chosen = []
        for name in args.shapes or sorted(SHAPE_SETS):
            shapes, batch = SHAPE_SETS[name]
            for i in args.layers or [2]:
                if not 0 <= i < len(shapes):
                    raise SystemExit(f"tools.sass: {name} has layers 0-{len(shapes) - 1}, not {i}")
                chosen.append((shapes[i], batch))
    return [(layer, args.batch or batch) for layer, batch in chosen]


def main(args: argparse.Namespace) -> int:
    from slac.ops import triton_kernels

    if args.capability < 1:
        raise SystemExit(f"tools.sass: --capability must be positive, got {args.capability}")
    layers = _layers(args)
    try:  # the spaces' blocks are checked where they are defined; the command line's here, once
        chosen = [triton_kernels.Block(*c).check() for c in args.config or []]
    except ValueError as e:
        raise SystemExit(f"tools.sass: --config: {e}") from None
    if not args.json:
        print(f"Triton kernels compiled for sm_{args.capability}, {args.dtype} inputs, specialised as at "
              f"run time\n")  # fmt: skip
        print(HEADER)
    report = None
    for name in args.kernel or KERNELS:
        for layer, batch in layers:
            call = kernel_call(name, layer, batch, args.dtype)
            blocks = chosen or call.blocks()
            if args.first:
                blocks = blocks[:1]
            for block in blocks:
                report = analyse(compile_kernel(call, block, args.capability))
                if args.json:
                    fields = {k: v for k, v in dataclasses.asdict(report).items() if k != "sass"}
                    config = {**block.config().kwargs, "num_warps": block.warps}
                    print(json.dumps({"kernel": name, "layer": layer.name, "batch": batch,
                                      "dtype": args.dtype, **config, **fields}), flush=True)  # fmt: skip
                else:
                    tile = f"{block.thread_m}x{block.thread_n}"
                    cells = (name, layer.name, batch, *block[:4], tile, report.row())
                    print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    if args.dump and report is not None:
        with open(args.dump, "w") as f:
            f.write(report.sass)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m tools.sass [argv]``: user errors print one line and exit with status 2."""
    import sys

    parser = argparse.ArgumentParser(prog="python -m tools.sass", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return main(parser.parse_args(argv))
    except (ConfigError, DeviceError, MissingDependencyError) as error:
        print(f"tools.sass: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())
