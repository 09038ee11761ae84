"""Hardware cost of an algorithm's runtime transforms in fixed point: adders, shifts and constant
multipliers after sharing (from the integer transform programs of `novagen.program`), the adders the
constant multipliers cost as CSD shift-add chains, word widths for a given input width (exact range
analysis, `novagen.fixedpoint`), yosys figures of the generated RTL when yosys is installed, and the
measured error of the fixed-point pipeline against the float64 reference.

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


def report(alg: Algorithm, input_bits: int = 8, channels: int = 16, coef_bits: int = 16,
           families: tuple[str, ...] = SYNTH_FAMILIES, yosys: bool = True,
           error_shape: tuple[int, ...] = (1, 8, 24, 24, 8),
           seed: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The cost and error of one algorithm's fixed-point transforms (one axis each; a 2D tile uses the
    input transform 2α times and the output transform α + m times)."""
    des = FixedPointDesign(alg, in_bits=input_bits, coef_bits=coef_bits, channels=channels)
    rtls = verilog.transforms(alg, input_bits, channels, coef_bits)
    out: dict[str, Any] = {
        "algorithm": alg.label, "points": [format_point(p) for p in (alg.points or ())], "dyadic": is_dyadic(alg),
        "vandermonde_cond": metrics(alg)["vandermonde_cond"], "input_bits": input_bits, "coef_bits": coef_bits,
        "channels": channels, "bt_scales": list(des.d), "at_scales": list(des.e), "widths": des.widths,
        "transforms": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for key, label in (("bt", "input BT"), ("at", "output AT")):
            rtl, M = rtls[key]
            row: dict[str, Any] = {
                "program_adds": rtl.prog_adds, "shifts": rtl.shifts, "const_mults": rtl.muls,
                "csd_adds": rtl.csd_adds, "adders": rtl.adders, "in_width": rtl.in_width, "max_width": rtl.max_width,
                "max_constant": max(abs(c) for r in M for c in r), "yosys": {},
            }
            if yosys and verilog.tool("yosys"):
                files = verilog.render_module(rtl, M, label, key, alg.label, vectors=0)
                path = Path(tmp) / f"{rtl.name}.v"
                path.write_text(files[f"{rtl.name}.v"])
                for fam in families:
                    if progress:
                        progress(f"yosys synth_{fam}: {alg.label} {label}")
                    row["yosys"][fam] = verilog.synth_stats(path, rtl.name, fam)
            out["transforms"][key] = row
    tile = out["transforms"]
    a, m = alg.alpha, alg.m
    out["tile_adders"] = 2 * a * tile["bt"]["adders"] + (a + m) * tile["at"]["adders"]
    out["tile_adders_per_output"] = out["tile_adders"] / (m * m)
    if progress:
        progress(f"fixed-point error: {alg.label}")
    out["error"] = measure(alg, error_shape, input_bits, coef_bits, seed)
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
