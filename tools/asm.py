"""The CPU adder kernels' machine code: what the hot loops really are on this process's numba target.

Each kernel (``slac.ops._cpu_kernels``, written by ``slac.ops.cpu_codegen``) is compiled afresh, as the
cpu backend would run it, for a ResNet-20 layer (the code does not depend on the layer: shapes are run-time
values), and its x86-64 assembly is read: the rewritten forms in both layouts (lanes, on a 32-channel
layer; broadcast, on a 16-channel one: ``LAYER``), the direct forms with ``--all``. The hot loop is the
innermost loop with the most vector arithmetic (on a tie the widest, then the shortest). For it this
reports: the vector width of its arithmetic (xmm 128, ymm 256, zmm 512 bits), its
instructions, the arithmetic among them by mnemonic, the accumulators (registers that an add or fused
multiply-add both reads and writes), stack accesses in the loop (spills), and the arithmetic instructions
per accumulator step, which is the instructions per pair-vector: 2 for the forward's min form (min, add),
3 for its absolute form (subtract, AND, add) and for the gradient's clamp form (max, min, FMA), 4 for the
gradient's direct form. These are no timing: `slac bench adder` times the kernels.

    python -m tools.asm                              # the rewritten forms, both layouts, float32
    python -m tools.asm --all --dtype float64        # and the direct forms
    NUMBA_CPU_NAME=znver1 NUMBA_CPU_FEATURES="" python -m tools.asm    # as compiled for AMD Zen 1 (AVX2)
    python -m tools.asm --dump forward.s             # the whole assembly of the (last) kernel
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re

import torch

__all__ = ["AsmReport", "analyse", "compile_kernel", "hot_loop", "main"]

_ARITHMETIC = re.compile(r"^v(min|max|add|sub|and|mul|fmadd\d*|fnmadd\d*|fmsub\d*)[ps][sd]$")
_REGISTER = re.compile(r"%([xyz]mm\d+)")


@dataclasses.dataclass
class AsmReport:
    kernel: str
    dtype: str
    vector_bits: int  # of the hot loop's arithmetic
    loop_instructions: int
    arithmetic: dict[str, int]
    accumulators: int
    spills: int  # instructions in the hot loop that touch the stack
    loads: int  # instructions in the hot loop that read memory
    instructions_per_pair_vector: float  # arithmetic / accumulators
    zmm_anywhere: int
    mask_registers_anywhere: int
    asm: str = dataclasses.field(repr=False, default="")

    def row(self) -> str:
        mix = ", ".join(f"{k} {v}" for k, v in sorted(self.arithmetic.items()))
        return (
            f"| {self.kernel} | {self.dtype} | {self.vector_bits} | {self.loop_instructions} | {mix} | "
            f"{self.accumulators} | {self.loads} | {self.spills} | {self.instructions_per_pair_vector:.2f} |"
        )


def _instructions(lines: list[str]) -> list[str]:
    return [
        line.strip()
        for line in lines
        if line.strip() and not line.strip().startswith((".", "#")) and not line.strip().endswith(":")
    ]


def _count_arithmetic(body: list[str]) -> tuple[int, int]:
    """(arithmetic instructions, the widest register among them): a tie between the vector body and its
    remainder or epilogue loops goes to the widest."""
    found = [i for i in body if _ARITHMETIC.match(i.split()[0])]
    width = max((512 if "zmm" in i else 256 if "ymm" in i else 128 for i in found), default=0)
    return len(found), width


def hot_loop(asm: str) -> list[str]:
    """The instructions of the innermost loop (a block ending in a backward jump that contains no other
    such loop) with the most vector arithmetic."""
    lines = asm.splitlines()
    labels = {line.strip()[:-1]: i for i, line in enumerate(lines) if re.match(r"^\.LBB\w+:$", line.strip())}
    loops = []
    for i, line in enumerate(lines):
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("j") and labels.get(parts[1], i) < i:
            loops.append((labels[parts[1]], i))
    innermost = [
        (a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)
    ]
    best: list[str] = []  # the innermost loop with the most arithmetic; on a tie the widest, then the
    # shortest (a kernel's epilogue can hold as much arithmetic as its hot loop, among loads and spills)
    for a, b in innermost:
        body = _instructions(lines[a : b + 1])
        if (*_count_arithmetic(body), -len(body)) > (*_count_arithmetic(best), -len(best) if best else 0):
            best = body
    return best


def analyse(kernel: str, dtype: str, asm: str) -> AsmReport:
    body = hot_loop(asm)
    arithmetic = collections.Counter()
    accumulators, widths = set(), collections.Counter()
    spills = loads = 0
    for instruction in body:
        mnemonic, _, operand_text = instruction.replace("\t", " ").partition(" ")
        operands = [o.strip() for o in re.split(r",(?![^(]*\))", operand_text) if o.strip()]
        if "(%rsp)" in operand_text:
            spills += 1
        if any("(" in o for o in operands[:-1]) or (mnemonic.startswith("vmov") and "(" in operands[0]):
            loads += 1
        if not _ARITHMETIC.match(mnemonic):
            continue
        arithmetic[mnemonic] += 1
        registers = [_REGISTER.search(o) for o in operands]
        names = [r.group(1) if r else None for r in registers]
        widths[names[-1][:3] if names[-1] else "mem"] += 1
        destination = names[-1]
        if mnemonic.startswith(("vfmadd231", "vfnmadd231")) or (
            mnemonic.startswith("vadd") and destination in names[:-1]
        ):
            accumulators.add(destination)
    width = {"xmm": 128, "ymm": 256, "zmm": 512}.get(widths.most_common(1)[0][0], 0) if widths else 0
    total = sum(arithmetic.values())
    return AsmReport(
        kernel=kernel,
        dtype=dtype,
        vector_bits=width,
        loop_instructions=len(body),
        arithmetic=dict(arithmetic),
        accumulators=len(accumulators),
        spills=spills,
        loads=loads,
        instructions_per_pair_vector=total / len(accumulators) if accumulators else float("nan"),
        zmm_anywhere=len(re.findall(r"%zmm\d+\b", asm)),
        mask_registers_anywhere=len(re.findall(r"%k[1-7]\b", asm)),
        asm=asm,
    )


LAYER = {  # the layer each layout's kernel is compiled for: one that takes it (slac.ops.cpu.layout)
    "lanes": (32, 16),  # ResNet-20 stage 2: 32 channels, 16 pixels
    "broadcast": (16, 32),  # stage 1: 16 channels, 32 pixels
}


def compile_kernel(
    kind: str, form: str, dtype: torch.dtype = torch.float32, layout: str = "lanes"
) -> tuple[str, str]:
    """(name, assembly) of the ``kind`` kernel in ``form`` and ``layout`` ("lanes" or "broadcast", which
    only the min and clamp forms have) at the backend's tile, compiled afresh (numba's cache would hand
    back object code without assembly) and run once on a ResNet-20 layer (``LAYER``)."""
    import numba

    from slac.ops import _cpu_kernels, cpu

    channels, size = LAYER[layout]
    x = torch.randn(2, channels, size, size, dtype=dtype)
    w = torch.randn(channels, channels, 3, 3, dtype=dtype)
    conv = ((1, 1), (1, 1), (1, 1), 1)
    saved = os.environ.get("SLAC_CPU_LAYOUT")
    os.environ["SLAC_CPU_LAYOUT"] = layout
    try:
        if kind == "forward":
            _, calls = cpu.forward_calls(x, w, *conv, form=form)
        else:
            _, calls = cpu.grad_input_calls(torch.randn_like(x), x, w, *conv, form=form)
    finally:
        if saved is None:
            del os.environ["SLAC_CPU_LAYOUT"]
        else:
            os.environ["SLAC_CPU_LAYOUT"] = saved
    call = calls[0]
    jitted = getattr(_cpu_kernels, call.name)
    options = {k: v for k, v in jitted.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**options)(jitted.py_func)
    fresh(*cpu.single_thread_arguments(call.arguments))
    return call.name, "".join(fresh.inspect_asm().values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument(
        "--all", action="store_true", help="every form, not only the ones used for finite data"
    )
    parser.add_argument("--json", default=None, help="also write the reports (without assembly) as JSON")
    parser.add_argument("--dump", default=None, help="write the last kernel's whole assembly to this file")


def main(args: argparse.Namespace) -> int:
    import llvmlite.binding as llvm
    import numba

    from slac.ops import cpu

    dtype = getattr(torch, args.dtype)
    target = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    channels = LAYER["broadcast"][0]
    lanes = f"forward {cpu.tile('forward')}, grad_input {cpu.tile('grad_input')}"
    broadcast = ", ".join(f"{k} {cpu.broadcast_tile(k, channels, dtype)}" for k in ("forward", "grad_input"))
    print(
        f"numba target: {target}, {cpu._target_vector_registers()} vector registers; lanes tiles "
        f"(P, Q, bits): {lanes}; broadcast tiles (P, V, bits, lanes) at {channels} channels: {broadcast}"
    )
    rewritten = [("forward", cpu.FORMS["forward"][0]), ("grad_input", cpu.FORMS["grad_input"][0])]
    kernels = [(kind, form, layout) for layout in cpu.LAYOUTS for kind, form in rewritten]
    if args.all:
        kernels += [
            ("forward", cpu.FORMS["forward"][1], "lanes"),
            ("grad_input", cpu.FORMS["grad_input"][1], "lanes"),
        ]
    reports = []
    for kind, form, layout in kernels:
        name, asm = compile_kernel(kind, form, dtype, layout)
        reports.append(analyse(name, args.dtype, asm))
    print()
    print("| kernel | dtype | vector bits | hot-loop instructions | arithmetic | accumulators | loads | "
          "stack accesses | arithmetic per pair-vector |")  # fmt: skip
    print("|---|---|---:|---:|---|---:|---:|---:|---:|")
    for report in reports:
        print(report.row())
    if args.dump:
        with open(args.dump, "w") as f:
            f.write(reports[-1].asm)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                [{k: v for k, v in dataclasses.asdict(r).items() if k != "asm"} for r in reports], f, indent=1
            )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tools.asm", description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
