"""Hardware cost of an algorithm as a fixed-point tile engine: the adders of its four transform passes
after sharing (integer programs of `novagen.program`, constant multipliers as CSD shift-add chains), the α²
DSP multipliers and the accumulators, all per output; word widths for a given input width (exact range
analysis, `novagen.fixedpoint`) and for a fixed-width datapath; yosys figures of the engine's RTL when yosys
is installed; and the measured error of both datapaths against the float64 reference.

Non-dyadic points such as ±5/6 are not exact in binary fixed point: the integer-scaled transforms carry
their denominators (6, 36, 216, ...) as constants, which cost adders and widen every word.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from novagen.algebra import Algorithm
from novagen.backends import verilog
from novagen.costmodel import dsps_per_multiplier
from novagen.errors import CatalogError, InputError
from novagen.fixedpoint import FixedPointDesign, csd_adders, measure
from novagen.metrics import metrics
from novagen.points import format_point

SYNTH_FAMILIES = ("ice40", "xilinx")
"""The FPGA families yosys synthesizes the RTL for."""
_BEST_DYADIC = re.compile(r"^F\((\d+),(\d+)\)/best-dyadic$")


def resolve(name: str, points: str | None = None) -> Algorithm:
    """A catalog name or spec (with points); "F(m,r)/best-dyadic", when the catalog lacks it, is searched
    for: novagen.pointsearch.search over dyadic rationals with denominators ≤ 8, objective vandermonde, seed 0."""
    from novagen.catalog import algorithm

    try:
        alg = algorithm(name, points)
    except CatalogError:
        mt = _BEST_DYADIC.match(name.replace(" ", ""))
        if not mt:
            raise
        from novagen.pointsearch import search

        spec = f"F({mt.group(1)},{mt.group(2)})"
        best = search(spec, "vandermonde", max_denominator=8, dyadic=True, seed=0, max_evaluations=4000).best
        alg = Algorithm(best.m, best.r, best.AT, best.G, best.BT, best.points, f"{spec}/best-dyadic")
    if not isinstance(alg, Algorithm):
        raise InputError(f"{name}: the hardware report takes 1D algorithms such as F(6,3)/nova")
    return alg


def is_dyadic(alg: Algorithm) -> bool:
    """Every finite point a dyadic rational (denominator a power of two)."""
    pts = alg.finite_points or ()
    return all(p.denominator & (p.denominator - 1) == 0 for p in pts)


def _pass_row(rtl: Any, M: Any) -> dict[str, Any]:
    return {"program_adds": rtl.prog_adds, "shifts": rtl.shifts, "const_mults": rtl.muls, "csd_adds": rtl.csd_adds,
            "adders": rtl.adders, "in_width": rtl.in_width, "max_width": rtl.max_width,
            "max_constant": max(abs(c) for r in M for c in r)}


def engine_yosys(des: FixedPointDesign, family: str) -> dict[str, int]:
    """yosys figures of the tile engine (one output channel a cycle) for `des`."""
    from novagen.backends.verilog.engine import engine_lines
    from novagen.resources import templates

    name = verilog.prefix(des.alg)
    decl, seq, buses = engine_lines(des, name, 1)
    ctx = {"name": name, "label": des.alg.label, "version": "", "m": des.alg.m, "r": des.alg.r, "alpha": des.alg.alpha,
           "pk": 1, "widths": des.widths, "shifts": des.shifts, "y_exponent": des.y_exponent,
           "datapath_bits": des.datapath_bits, "multipliers": des.alg.alpha ** 2, "decl": decl, "seq": seq,
           "buses": buses}
    with tempfile.TemporaryDirectory(prefix="novagen-yosys-") as tmp:
        mods = [verilog.render_module(rtl, M, key, key, des.alg.label, vectors=0)[f"{rtl.name}.v"]
                for key, (rtl, M) in verilog.passes(des, name).items()]
        (Path(tmp) / "passes.v").write_text("\n".join(mods))
        (Path(tmp) / "engine.v").write_text(templates("verilog").get_template("engine.v.j2").render(ctx))
        return verilog.synth_stats([Path(tmp) / "passes.v", Path(tmp) / "engine.v"], f"{name}_engine", family)


def report(alg: Algorithm, input_bits: int = 8, channels: int = 16, coef_bits: int = 16, datapath_bits: int = 16,
           families: tuple[str, ...] = SYNTH_FAMILIES, yosys: bool = True,
           error_shape: tuple[int, ...] = (1, 8, 24, 24, 8), seed: int = 0,
           progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The cost of the whole tile engine for one algorithm (its four transform passes, α² DSP multipliers,
    accumulators), per output; word widths and measured error with exact widths and with a fixed
    `datapath_bits` datapath; yosys figures of the engine."""
    des = FixedPointDesign(alg, in_bits=input_bits, coef_bits=coef_bits, channels=channels)
    fixed = FixedPointDesign(alg, in_bits=input_bits, coef_bits=coef_bits, channels=channels,
                             datapath_bits=datapath_bits)
    rtls = verilog.passes(des, verilog.prefix(alg))
    a, m, r = alg.alpha, alg.m, alg.r
    p = {key: _pass_row(rtl, M) for key, (rtl, M) in rtls.items()}
    dsp = dsps_per_multiplier(des.widths["v"], des.widths["u"])
    tile_adders = (a * (p["bt_row"]["adders"] + p["bt_col"]["adders"] + p["at_col"]["adders"])
                   + m * p["at_row"]["adders"])
    out: dict[str, Any] = {
        "algorithm": alg.label, "points": [format_point(pt) for pt in (alg.points or ())], "dyadic": is_dyadic(alg),
        "vandermonde_cond": metrics(alg)["vandermonde_cond"], "input_bits": input_bits, "coef_bits": coef_bits,
        "channels": channels, "datapath_bits": datapath_bits, "bt_scales": list(des.d), "at_scales": list(des.e),
        "widths": des.widths, "widths_fixed": fixed.widths, "shifts_fixed": fixed.shifts, "passes": p,
        "engine": {"multipliers": a * a, "dsps": a * a * dsp, "dsps_per_multiplier": dsp, "tile_adders": tile_adders,
                   "accumulator_bits": a * a * des.widths["acc"]},
        "per_output": {"multiplies": a * a / (m * m), "dsps": a * a * dsp / (m * m),
                       "input_adders": 2 * a * p["bt_row"]["adders"] / (m * m),
                       "output_adders": (a * p["at_col"]["adders"] + m * p["at_row"]["adders"]) / (m * m),
                       "adders": tile_adders / (m * m), "direct_multiplies": r * r},
        "gops_per_dsp_200mhz": 2 * r * r * m * m / (a * a) * 0.2 / dsp,
        "yosys": {},
    }
    if yosys and verilog.tool("yosys"):
        for fam in families:
            if progress:
                progress(f"yosys synth_{fam}: the {alg.label} tile engine")
            out["yosys"][fam] = engine_yosys(des, fam)
    if progress:
        progress(f"fixed-point error: {alg.label}")
    out["error"] = measure(alg, error_shape, input_bits, coef_bits, seed)
    out["error_fixed"] = measure(alg, error_shape, input_bits, coef_bits, seed, datapath_bits=datapath_bits)
    out["error_shape"] = list(error_shape)
    out["yosys_available"] = verilog.tool("yosys") is not None
    return out


def tile_adders_per_output(alg: Algorithm, input_bits: int = 8) -> float:
    """Two-input adders per output of one 2D tile's runtime transforms in fixed point (integer programs,
    constant multipliers as CSD chains): 2α input-transform and α + m output-transform applications."""
    des = FixedPointDesign(alg, in_bits=input_bits)
    adds = []
    for prog in (des.bt_program, des.at_program):
        c = prog.counts()
        adds.append(c["adds"] + sum(csd_adders(int(op.c)) for op in prog.ops if op.kind in ("mul", "shift")))
    a, m = alg.alpha, alg.m
    return (2 * a * adds[0] + (a + m) * adds[1]) / (m * m)


def _adders_objective(ps: Any) -> float:
    """Search objective "adders": fixed-point adders per output; neutral (1) in the continuous phase, where
    points are not yet exact."""
    if ps.exact is None:
        return 1.0
    from novagen.algebra import cook_toom
    from novagen.points import INF

    pts = (*ps.exact, INF) if ps.infinity else tuple(ps.exact)
    try:
        AT, G, BT = cook_toom(ps.m, ps.r, pts)
    except Exception:
        return float("inf")
    return tile_adders_per_output(Algorithm(ps.m, ps.r, AT, G, BT, pts))


def register_search_objective() -> None:
    """Make "adders" available to the point search (e.g. objective "transforms + 2*adders", dyadic=True)."""
    from novagen.pointsearch import OBJECTIVES, Objective, register_objective

    if "adders" not in OBJECTIVES:
        register_objective(Objective(
            "adders", "two-input adders per output of the fixed-point runtime transforms (integer-scaled, CSD "
            "constant multipliers); exact points only, neutral in the continuous phase", _adders_objective, True))
