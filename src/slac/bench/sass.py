"""The adder Triton kernels' machine code, compiled for an NVIDIA GPU on a machine without one.

Triton compiles ahead of time for a named target (by default sm_90, the H100) with the ptxas it ships,
and its cuobjdump and nvdisasm read the result, so this runs wherever Triton is installed. For each
kernel and block config it reports the registers and stack (spill space) per thread, and for the hot
loop (the rank-1 update over channels) its instruction count, the fraction of it that is the kernel's
arithmetic (FADD, FMNMX, FFMA), and barriers, shared-memory and global loads per 1000 arithmetic
instructions. These are no timing, but they expose spills, layout conversions and index arithmetic,
which is how the autotuning spaces were chosen without a GPU at hand.

    slac bench sass                                    # every config of both autotuning spaces
    slac bench sass --kernel forward --config 128 64 4 4 --dump forward.sass
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

__all__ = ["KERNELS", "SassReport", "add_arguments", "analyse", "compile_kernel", "main"]

KERNELS = ("forward", "grad_input")
ARITHMETIC = ("FADD", "FMNMX", "FFMA", "FMUL")
# integer arguments that Triton specialises to the constant 1 at run time for NCHW tensors
UNIT_STRIDES = ("sxw", "syw", "sgw", "sdw")


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


def _kernel(name: str):
    from slac.ops import triton_kernels

    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; choose from {', '.join(KERNELS)}")
    autotuned = getattr(triton_kernels, f"_adder2d_{name}_kernel")
    space = triton_kernels.FORWARD_SPACE if name == "forward" else triton_kernels.GRAD_INPUT_SPACE
    return autotuned.fn, space


def _tools_dir() -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not os.path.isfile(os.path.join(path, "ptxas")):
        raise RuntimeError(f"Triton's NVIDIA tools (ptxas, nvdisasm, cuobjdump) are not in {path}")
    return path


def compile_kernel(
    name: str,
    block_m: int,
    block_n: int,
    num_warps: int,
    unroll: int,
    kernel_size: int = 3,
    dtype: str = "fp32",
    capability: int = 90,
    ones: tuple[str, ...] = UNIT_STRIDES,
):
    """Compile one of the adder kernels for ``sm_{capability}`` with the given block config."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    jit, _ = _kernel(name)
    if isinstance(jit, InterpretedFunction) or not isinstance(jit, JITFunction):
        raise RuntimeError(
            "the Triton kernels were loaded for the interpreter (TRITON_INTERPRET=1), and interpreted "
            "functions cannot be compiled; run this in a process without TRITON_INTERPRET set"
        )
    constants = {
        "KH": kernel_size, "KW": kernel_size, "ACC": tl.float32, "BLOCK_M": block_m, "BLOCK_N": block_n,
        "UNROLL": unroll, **{arg: 1 for arg in ones if arg in jit.arg_names},
    }  # fmt: skip
    if dtype not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"dtype is fp32, fp16 or bf16, got {dtype!r}")
    element = dtype
    outputs = ("y_ptr", "dx_ptr")  # written in float32 whatever the input type
    signature = {
        arg: "constexpr" if arg in constants
        else ("*fp32" if arg in outputs else f"*{element}") if arg.endswith("_ptr")
        else "i32"
        for arg in jit.arg_names
    }  # fmt: skip
    source = triton.compiler.ASTSource(fn=jit, signature=signature, constexprs=constants)
    _tools_dir()
    options = {"num_warps": num_warps, "enable_fp_fusion": True}  # as the launchers compile them
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)


def _tool(name: str, *args: str) -> str:
    command = [os.path.join(_tools_dir(), name), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _loops(sass: str) -> list[collections.Counter]:
    """Opcode counts of every loop body: from a label to a branch back to it."""
    labels: dict[str, int] = {}
    ops: list[tuple[str, str]] = []
    for line in sass.splitlines():
        if m := re.match(r"\s*(\.L_x_\d+):", line):
            labels[m.group(1)] = len(ops)
        elif m := re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*)", line):
            ops.append((m.group(1).split(".")[0], m.group(2)))
    loops = [collections.Counter(op for op, _ in ops)]  # the whole kernel first
    for end, (op, rest) in enumerate(ops):
        target = re.search(r"(\.L_x_\d+)", rest) if op == "BRA" else None
        if target and labels.get(target.group(1), end + 1) <= end:
            loops.append(collections.Counter(o for o, _ in ops[labels[target.group(1)] : end + 1]))
    return loops


def analyse(kernel) -> SassReport:
    """Registers, spills and the hot loop's instruction mix of a compiled kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        usage = _tool("cuobjdump", "--dump-resource-usage", path)
        sass = _tool("nvdisasm", "-c", path)
    whole, *loops = _loops(sass)
    hot = max(loops, key=lambda c: sum(c[a] for a in ARITHMETIC), default=collections.Counter())
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
    "| kernel | BLOCK_M | BLOCK_N | warps | unroll | registers | stack B | spill instr | hot loop instr | "
    "arithmetic | BAR/1k | LDS/1k | LDG/1k |\n|---|" + "---:|" * 12
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", choices=KERNELS, action="append", help="default: both")
    parser.add_argument(
        "--config", type=int, nargs=4, action="append", metavar=("BLOCK_M", "BLOCK_N", "WARPS", "UNROLL"),
        help="a block config (repeatable); default: the kernel's autotuning space",
    )  # fmt: skip
    parser.add_argument("--kernel-size", type=int, default=3, help="KH = KW of the compiled kernel")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"), help="input type")
    parser.add_argument("--capability", type=int, default=90, help="compute capability (90: H100/H200)")
    parser.add_argument(
        "--ones", nargs="*", default=list(UNIT_STRIDES),
        help="integer arguments compiled as the constant 1 (default: NCHW's unit strides)",
    )  # fmt: skip
    parser.add_argument("--dump", default=None, help="write the last compiled kernel's SASS here")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON lines instead")


def main(args: argparse.Namespace) -> int:
    for value in (args.kernel_size, args.capability):
        if value < 1:
            raise SystemExit(f"slac bench sass: sizes and capabilities are positive, got {value}")
    if not args.json:
        print(f"Triton kernels compiled for sm_{args.capability} ({args.dtype} inputs, {args.kernel_size}x"
              f"{args.kernel_size} taps, unit strides: {' '.join(args.ones) or 'none'})\n")  # fmt: skip
        print(HEADER)
    report = None
    for name in args.kernel or KERNELS:
        for m, n, warps, unroll in args.config or _kernel(name)[1]:
            kernel = compile_kernel(
                name, m, n, warps, unroll, args.kernel_size, args.dtype, args.capability, tuple(args.ones)
            )
            report = analyse(kernel)
            if args.json:
                fields = {k: v for k, v in dataclasses.asdict(report).items() if k != "sass"}
                config = {"BLOCK_M": m, "BLOCK_N": n, "num_warps": warps, "UNROLL": unroll}
                print(json.dumps({"kernel": name, "dtype": args.dtype, **config, **fields}), flush=True)
            else:
                print(f"| {name} | {m} | {n} | {warps} | {unroll} | {report.row()} |", flush=True)
    if args.dump and report is not None:
        with open(args.dump, "w") as f:
            f.write(report.sass)
    return 0
