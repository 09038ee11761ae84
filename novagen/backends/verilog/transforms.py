"""One pass of a transform as RTL: the integer-scaled input and output transforms (B̂ = D·BT, Â = AT·E, see
`novagen.fixedpoint`) as combinational trees of two-input adders, rendered from the integer transform
programs of `novagen.program`: shared subexpressions stay shared, constant multiplications become
canonic-signed-digit (CSD) shift-add chains, shifts are wiring, and every wire is exactly as wide as the
exact range analysis says for its input width.  `render_module` adds a testbench of extreme and random
vectors against exact integers ("N passed, N failed")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from novagen.algebra import Algorithm
from novagen.backends.base import one_axis
from novagen.errors import InputError
from novagen.fixedpoint import FixedPointDesign, csd, signed_bits, var_l1
from novagen.program import ZERO, Program
from novagen.resources import templates
from novagen.version import __version__


def fit(name: str, wf: int, wt: int) -> str:
    """`name` (wf-bit two's complement) as a wt-bit expression: sign-extended or its low bits."""
    if wt == wf:
        return name
    if wt > wf:
        return f"{{{{{wt - wf}{{{name}[{wf - 1}]}}}}, {name}}}"
    return f"{name}[{wt - 1}:0]"


def _shifted(name: str, wf: int, k: int, wt: int) -> str:
    if k == 0:
        return fit(name, wf, wt)
    return f"{{{fit(name, wf, wt - k)}, {k}'b0}}"


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
                              "expr": f"{fit(a, wa, w)} {'+' if op.kind == 'add' else '-'} {fit(b, wb, w)}"})
            rtl.prog_adds += 1
        elif op.kind == "neg":
            rtl.wires.append({"name": tname, "width": w, "expr": f"-{fit(a, wa, w)}"})
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
                rtl.wires.append({"name": tname, "width": w, "expr": fit(parts[-1], ww, w)})
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


PASSES = ("bt_row", "bt_col", "at_col", "at_row")
"""The four passes of a 2D tile, in pipeline order: B̂ along rows (input words), B̂ along columns (the
rounded row results), Â along columns (the aligned accumulators), Â along rows (the rounded column results)."""


def passes(des: FixedPointDesign, name: str) -> dict[str, tuple[Rtl, Any]]:
    """The four passes of `des` as RTL, each sized for its own input range, with their integer matrices."""
    w = des.widths
    return {"bt_row": (build_rtl(des.bt_program, w["in"], f"{name}_bt_row"), des.B),
            "bt_col": (build_rtl(des.bt_program, w["z"], f"{name}_bt_col"), des.B),
            "at_col": (build_rtl(des.at_program, w["m"], f"{name}_at_col"), des.A),
            "at_row": (build_rtl(des.at_program, w["t"], f"{name}_at_row"), des.A)}


def transforms(alg: Algorithm, bits: int = 8, channels: int = 16, coef_bits: int = 16) -> dict[str, tuple[Rtl, Any]]:
    """The four passes (PASSES) of `alg`'s exact-width fixed-point design for `channels` input channels."""
    alg = one_axis(alg, "verilog")
    des = FixedPointDesign(alg, in_bits=int(bits), coef_bits=coef_bits, channels=channels)
    return passes(des, prefix(alg))
