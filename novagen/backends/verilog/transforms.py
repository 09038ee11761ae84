"""The Verilog target: the integer-scaled input and output transforms (B̂ = D·BT, Â = AT·E, see
`novagen.fixedpoint`) as combinational trees of two-input adders, rendered from the integer transform
programs of `novagen.program`: shared subexpressions stay shared, constant multiplications become
canonic-signed-digit (CSD) shift-add chains, shifts are wiring, and every wire is exactly as wide as the
exact range analysis says.  A testbench checks extreme and random vectors against exact integers and
prints "N passed, N failed"; `simulate` runs it with iverilog, `lint` runs verilator --lint-only, and
`synth_stats` runs yosys (synth_ice40 / synth_xilinx, stat) when these tools are installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novagen.algebra import Algorithm
from novagen.backends.base import Backend, Option, one_axis
from novagen.errors import CheckFailed, InputError
from novagen.files import write_files
from novagen.fixedpoint import FixedPointDesign, csd, signed_bits, var_l1
from novagen.program import ZERO, Program
from novagen.resources import templates
from novagen.version import __version__


def _fit(name: str, wf: int, wt: int) -> str:
    """`name` (wf-bit two's complement) as a wt-bit expression: sign-extended or its low bits."""
    if wt == wf:
        return name
    if wt > wf:
        return f"{{{{{wt - wf}{{{name}[{wf - 1}]}}}}, {name}}}"
    return f"{name}[{wt - 1}:0]"


def _shifted(name: str, wf: int, k: int, wt: int) -> str:
    if k == 0:
        return _fit(name, wf, wt)
    return f"{{{_fit(name, wf, wt - k)}, {k}'b0}}"


@dataclass
class Rtl:
    """One transform as RTL: wires in order, outputs, and the adder count."""

    name: str
    n_in: int
    in_width: int
    wires: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    prog_adds: int = 0
    csd_adds: int = 0
    muls: int = 0
    shifts: int = 0

    @property
    def adders(self) -> int:
        return self.prog_adds + self.csd_adds

    @property
    def max_width(self) -> int:
        return max([self.in_width] + [w["width"] for w in self.wires] + [o["width"] for o in self.outputs])


def build_rtl(prog: Program, in_width: int, name: str) -> Rtl:
    """Lower an integer program to wires of two-input adders (the widths from exact range analysis)."""
    if any(op.c.denominator != 1 for op in prog.ops):
        raise InputError("the Verilog target needs an integer program: compile_matrix(M, integer=True)")
    xmax = 1 << (in_width - 1)
    l1 = var_l1(prog)
    width = [in_width] * prog.n_inputs + [signed_bits(v * xmax) for v in l1[prog.n_inputs:]]
    names = [f"x{i}" for i in range(prog.n_inputs)]
    rtl = Rtl(name, prog.n_inputs, in_width)
    for idx, op in enumerate(prog.ops):
        var = prog.n_inputs + idx
        w = width[var]
        tname = f"t{idx}"
        a, wa = names[op.a], width[op.a]
        if op.kind in ("add", "sub"):
            b, wb = names[op.b], width[op.b]
            rtl.wires.append({"name": tname, "width": w,
                              "expr": f"{_fit(a, wa, w)} {'+' if op.kind == 'add' else '-'} {_fit(b, wb, w)}"})
            rtl.prog_adds += 1
        elif op.kind == "neg":
            rtl.wires.append({"name": tname, "width": w, "expr": f"-{_fit(a, wa, w)}"})
            rtl.prog_adds += 1
        else:
            c = int(op.c)
            rtl.muls += op.kind == "mul"
            rtl.shifts += op.kind == "shift"
            digits = csd(abs(c))
            if c < 0:
                digits = [(k, -s) for k, s in digits]
            digits.sort(key=lambda d: -d[1])  # a positive digit first where there is one
            span = signed_bits(sum(1 << k for k, _ in digits) * (1 << (wa - 1)))
            ww = max(span, w)
            parts = []
            for j, (k, s) in enumerate(digits):
                term = _shifted(a, wa, k, ww)
                if j == 0:
                    expr = term if s > 0 else f"-{term}"
                    if s < 0:
                        rtl.csd_adds += 1
                else:
                    expr = f"{parts[-1]} {'+' if s > 0 else '-'} {term}"
                    rtl.csd_adds += 1
                pname = f"{tname}_p{j}" if j < len(digits) - 1 or ww != w else tname
                if pname != tname or ww == w:
                    rtl.wires.append({"name": pname, "width": ww, "expr": expr})
                parts.append(pname)
            if parts[-1] != tname:
                rtl.wires.append({"name": tname, "width": w, "expr": _fit(parts[-1], ww, w)})
        names.append(tname)
    for o in prog.outputs:
        if o == ZERO:
            rtl.outputs.append({"width": 1, "expr": "1'b0"})
        else:
            rtl.outputs.append({"width": width[o], "expr": names[o]})
    return rtl


def _lit(v: int, w: int) -> str:
    return f"-{w}'sd{-v}" if v < 0 else f"{w}'sd{v}"


def _vectors(M: tuple[tuple[int, ...], ...], in_width: int, count: int, seed: int) -> list[list[int]]:
    """Input vectors (Python integers, any width): the sign patterns that reach each row's extremes, all
    minimum, all maximum, zero, and `count` uniform random vectors."""
    import random

    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    n = len(M[0])
    vecs = []
    for row in M:
        vecs += [[hi if c >= 0 else lo for c in row], [lo if c >= 0 else hi for c in row]]
    vecs += [[lo] * n, [hi] * n, [0] * n]
    rng = random.Random(seed)
    vecs += [[rng.randint(lo, hi) for _ in range(n)] for _ in range(count)]
    return vecs


def render_module(rtl: Rtl, M: tuple[tuple[int, ...], ...], what: str, mat_name: str, label: str,
                  vectors: int = 200, seed: int = 0) -> dict[str, str]:
    """{<name>.v, <name>_tb.v} for one transform."""
    env = templates("verilog")
    vecs = []
    for x in _vectors(M, rtl.in_width, vectors, seed):
        y = [sum(int(c) * int(v) for c, v in zip(row, x)) for row in M]
        vecs.append({"x": [_lit(int(v), rtl.in_width) for v in x],
                     "y": [_lit(v, o["width"]) for v, o in zip(y, rtl.outputs)]})
    ctx = {"name": rtl.name, "label": label, "version": __version__, "what": what, "mat_name": mat_name,
           "adders": rtl.adders, "prog_adds": rtl.prog_adds, "csd_adds": rtl.csd_adds, "muls": rtl.muls,
           "in_width": rtl.in_width, "max_width": rtl.max_width, "n_in": rtl.n_in, "wires": rtl.wires,
           "outputs": rtl.outputs, "matrix": [" ".join(f"{c:+d}·x{j}" for j, c in enumerate(row) if c) or "0"
                                              for row in M], "vectors": vecs}
    return {f"{rtl.name}.v": env.get_template("transform.v.j2").render(ctx),
            f"{rtl.name}_tb.v": env.get_template("tb.v.j2").render(ctx)}


def prefix(alg: Algorithm) -> str:
    return f"nvrtl_f{alg.m}_{alg.r}_{alg.content_hash[:10]}"


def transforms(alg: Algorithm, bits: int = 8, channels: int = 16, coef_bits: int = 16) -> dict[str, tuple[Rtl, Any]]:
    """The two transforms of `alg` as RTL: "bt" (b-bit input), "at" (input as wide as the aligned
    accumulators of the fixed-point pipeline for `channels` and `coef_bits`), with their integer matrices."""
    alg = one_axis(alg, "verilog")
    des = FixedPointDesign(alg, in_bits=int(bits), coef_bits=coef_bits, channels=channels)
    name = prefix(alg)
    return {"bt": (build_rtl(des.bt_program, des.in_bits, f"{name}_bt"), des.B),
            "at": (build_rtl(des.at_program, des.widths["m"], f"{name}_at"), des.A)}


def generate(alg: Algorithm, out_dir: str | Path, layer: tuple[int, ...] | None = None, padding: int = 1,
             bits: int | str = 8, overwrite: bool = False) -> list[Path]:
    """Write <prefix>_bt.v, <prefix>_at.v, their testbenches, run_sim.sh and a README into `out_dir`
    (`bits`: the input width, "auto" = 8); the output transform is as wide as the accumulators of the
    layer's C input channels (16 without a layer)."""
    channels = layer[1] if layer is not None else 16
    try:
        b = 8 if str(bits).strip().lower() == "auto" else int(bits)
    except (TypeError, ValueError):
        raise InputError(f"--bits '{bits}' must be the input width in bits, such as 8") from None
    t = transforms(alg, b, channels)
    files: dict[str, str] = {}
    for key, what, mname in (("bt", "input transform (one axis)", "B^"), ("at", "output transform (one axis)", "A^")):
        rtl, M = t[key]
        files.update(render_module(rtl, M, what, mname, alg.label))
    names = [t["bt"][0].name, t["at"][0].name]
    sh = ["#!/bin/sh", "# simulate with iverilog and lint with verilator (when installed)", "set -e",
          "cd \"$(dirname \"$0\")\""]
    for n in names:
        sh += [f"iverilog -g2005 -o {n}.vvp {n}_tb.v {n}.v && vvp -n {n}.vvp",
               f"if command -v verilator >/dev/null; then verilator --lint-only -Wall {n}.v; fi"]
    files["run_sim.sh"] = "\n".join(sh) + "\n"
    bt, at = t["bt"][0], t["at"][0]
    files["README.md"] = "\n".join([
        f"# {prefix(alg)}: {alg.label} transforms as shift-add RTL", "",
        f"`{bt.name}`: input transform along one axis, {bt.in_width}-bit inputs, {bt.adders} adders "
        f"({bt.muls} constant multipliers as CSD chains), widest word {bt.max_width} bits.",
        f"`{at.name}`: output transform along one axis, {at.in_width}-bit inputs (the aligned accumulators of a "
        f"{channels}-channel, 16-bit-coefficient pipeline), {at.adders} adders, widest word {at.max_width} bits.",
        "A 2D tile applies each along both axes (input: alpha row + alpha column instances).", "",
        "Run the testbenches: `sh run_sim.sh` (iverilog; verilator --lint-only when installed).", ""])
    return write_files(out_dir, files, overwrite, executable=("run_sim.sh",))


# ---------------------------------------------------------------------------------------------------
# Tools


def tool(name: str) -> str | None:
    """Path of an RTL tool (iverilog, vvp, verilator, yosys) or None."""
    return shutil.which(name)


_RESULT = re.compile(r"(\d+) passed, (\d+) failed")


def simulate(folder: str | Path, name: str) -> tuple[int, int]:
    """Run <name>_tb.v with iverilog/vvp: (passed, failed)."""
    if not (tool("iverilog") and tool("vvp")):
        raise InputError("iverilog is not installed (apt-get install iverilog)")
    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sim.vvp"
        proc = subprocess.run(["iverilog", "-g2005", "-o", str(out), str(folder / f"{name}_tb.v"),
                               str(folder / f"{name}.v")], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckFailed(f"iverilog rejected {name}: {proc.stderr.strip()[:300]}")
        run = subprocess.run(["vvp", "-n", str(out)], capture_output=True, text=True)
    m = _RESULT.search(run.stdout)
    if not m:
        raise CheckFailed(f"the {name} testbench printed no result: {run.stdout.strip()[-300:]}")
    return int(m.group(1)), int(m.group(2))


def lint(path: str | Path) -> str:
    """verilator --lint-only -Wall: its messages ('' when clean)."""
    if not tool("verilator"):
        raise InputError("verilator is not installed (apt-get install verilator)")
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", str(path)], capture_output=True, text=True)
    return (proc.stdout + proc.stderr).strip() if proc.returncode != 0 or proc.stderr.strip() else ""


_STAT = re.compile(r"^\s+(\S+)\s+(\d+)\s*$")


def synth_stats(path: str | Path, top: str, family: str = "ice40") -> dict[str, int]:
    """yosys synth_<family> and stat: cell counts, with LUTs, carry cells and DSPs summed.

    Open-toolchain estimates: ice40 LUTs are SB_LUT4 and carries SB_CARRY; xilinx LUTs are LUT1..LUT6 and
    carries CARRY4/CARRY8, DSPs DSP48*."""
    if not tool("yosys"):
        raise InputError("yosys is not installed (apt-get install yosys)")
    if family not in ("ice40", "xilinx"):
        raise InputError(f"family '{family}' is not ice40 or xilinx")
    script = f"read_verilog {path}; synth_{family} -top {top}; stat"
    proc = subprocess.run(["yosys", "-p", script], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        err = next((ln for ln in (proc.stderr + proc.stdout).splitlines() if "ERROR" in ln), proc.stderr[-300:])
        raise CheckFailed(f"yosys failed on {top}: {err.strip()}")
    text = proc.stdout
    cells: dict[str, int] = {}
    section = text[text.rfind("Number of cells"):]
    for line in section.splitlines()[1:]:
        m = _STAT.match(line)
        if m:
            cells[m.group(1)] = int(m.group(2))
        elif cells and not line.strip():
            break
    luts = sum(v for k, v in cells.items() if k == "SB_LUT4" or re.fullmatch(r"LUT\d", k))
    carry = sum(v for k, v in cells.items() if k in ("SB_CARRY", "CARRY4", "CARRY8"))
    dsps = sum(v for k, v in cells.items() if k.startswith("DSP") or k.startswith("SB_MAC16"))
    return {"luts": luts, "carry": carry, "dsps": dsps, "cells": sum(cells.values())}


BACKENDS = (Backend(
    name="verilog",
    summary="the integer-scaled input and output transforms as shift-add RTL with testbenches",
    generate=generate,
    generate_options=(Option("bits", "input word width (auto: 8)", 8),),
),)
