"""The HLS design's files for one layer: rendered from the integer transform programs and the fixed-point
design (`novagen.fixedpoint`), with the engine's parameters (tiles and output channels a cycle)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from novagen.algebra import Algorithm
from novagen.costmodel import Estimate, estimate, input_width
from novagen.errors import InputError
from novagen.fixedpoint import FixedPointDesign
from novagen.program import Program
from novagen.resources import templates
from novagen.version import __version__

PART, PERIOD_NS = "xczu9eg-ffvb1156-2-e", 5.0
"""What run_hls.tcl targets: the ZCU102's part at 200 MHz (the board the FPGA Winograd papers report on)."""


def prefix(alg: Algorithm) -> str:
    return f"nvhls_f{alg.m}_{alg.r}_{alg.content_hash[:10]}"


@dataclass(frozen=True)
class Engine:
    """The parallelism of one design: PT tiles and PK output channels a cycle, XW input channels a beat."""

    pt: int = 1
    pk: int = 1
    xw: int = 1

    @classmethod
    def for_layer(cls, layer: tuple[int, ...], m: int, ow: int, pt: int | None, pk: int | None) -> Engine:
        """The engine for a layer (output width `ow`); InputError when PK does not divide K or PT exceeds
        the tiles of a row."""
        c, k = layer[1], layer[4]
        pt, pk = pt or 1, pk or 1
        if k % pk:
            raise InputError(f"--channels-per-cycle {pk} must divide the {k} output channels")
        tw = math.ceil(ow / m)
        if pt > tw:
            raise InputError(f"--tiles-per-cycle {pt} exceeds the {tw} tiles of a tile row")
        return cls(pt, pk, input_width(c, k, pk, pt, m))


def _int_lines(prog: Program, inputs: list[str], outputs: list[str], ctype: str) -> list[str]:
    return prog.c_lines(inputs, outputs, ctype, literal=lambda c: str(int(c)))


def render(des: FixedPointDesign, layer: tuple[int, ...], padding: int, engine: Engine) -> dict[str, str]:
    """<prefix>.h, <prefix>.cpp, tb.cpp and run_hls.tcl."""
    alg = des.alg
    a, m, r = alg.alpha, alg.m, alg.r
    n, c, h, w, k = layer
    oh, ow = h + 2 * padding - r + 1, w + 2 * padding - r + 1
    tw = -(-ow // m)
    xs = [f"x{i}" for i in range(a)]
    ys = [f"y[{i}]" for i in range(a)]
    name = prefix(alg)
    bt, at = des.bt_program, des.at_program

    def fmt(cn: dict[str, int]) -> str:
        return f"{cn['adds']}/{cn['muls']}/{cn['shifts']}"

    fm = des.frac_max
    align = [fm - des.frac[i][j] for i in range(a) for j in range(a)]
    ctx = {
        "p": name, "label": alg.label, "version": __version__, "m": m, "r": r, "alpha": a, "hash": alg.content_hash,
        "guard": name.upper() + "_H", "N": n, "C": c, "H": h, "W": w, "K": k, "pad": padding, "OH": oh, "OW": ow,
        "TH": -(-oh // m), "TW": tw, "TWG": -(-tw // engine.pt), "PT": engine.pt, "PK": engine.pk, "XW": engine.xw,
        "in_bits": des.in_bits, "coef_bits": des.coef_bits, "weight_max": des.weight_max,
        "datapath_bits": des.datapath_bits, "shifts": des.shifts, "y_exponent": des.y_exponent,
        "d": ", ".join(map(str, des.d)), "e": ", ".join(map(str, des.e)), "widths": des.widths,
        "max_align": max(align), "align": ", ".join(map(str, align)),
        "counts": {"BT": fmt(bt.counts()), "AT": fmt(at.counts())},
        "bt1": _int_lines(bt, xs, ys, "const bt1_t"), "bt2": _int_lines(bt, xs, ys, "const bt2_t"),
        "at1": _int_lines(at, xs, ys[:m], "const at1_t"), "at2": _int_lines(at, xs, ys[:m], "const at2_t"),
        "part": PART, "period_ns": PERIOD_NS,
    }
    env = templates("hls")
    return {f"{name}.h": env.get_template("winograd.h.j2").render(ctx),
            f"{name}.cpp": env.get_template("winograd.cpp.j2").render(ctx),
            "tb.cpp": env.get_template("tb.cpp.j2").render(ctx),
            "run_hls.tcl": env.get_template("run_hls.tcl.j2").render(ctx)}


def engine_estimate(des: FixedPointDesign, layer: tuple[int, ...], padding: int, engine: Engine) -> Estimate:
    return estimate(des, layer, padding, engine.pk, engine.pt, 1000.0 / PERIOD_NS, engine.xw)


def readme(des: FixedPointDesign, name: str, layer: tuple[int, ...], padding: int, engine: Engine,
           weights: str) -> str:
    w = des.widths
    bt, at = des.bt_program.counts(), des.at_program.counts()
    est = engine_estimate(des, layer, padding, engine)
    cyc = ", ".join(f"{k} {v:,}" for k, v in est.cycles.items())
    dp = (f"{des.datapath_bits}-bit datapath, each stage rounded (low bits dropped: "
          + ", ".join(f"{k} {v}" for k, v in des.shifts.items()) + ")") if des.datapath_bits else \
        "exact word widths (no rounding but the weights')"
    return "\n".join([
        f"# {name}: fixed-point Winograd conv2d engine for HLS, {des.alg.label}", "",
        f"Layer N, C, H, W, K = {', '.join(map(str, layer))}, padding {padding}; {des.in_bits}-bit signed inputs, "
        f"{des.coef_bits}-bit transformed weights (|w| <= {des.weight_max}); {dp}.", f"Weights: {weights}.", "",
        "Dataflow: U_q through an m_axi port into on-chip memory (once per call, so one bitstream serves any "
        "weights of this shape) -> line buffer (AXI stream of input beats) -> input transform (integer-scaled BT) "
        f"-> PE array ({engine.pt} tile(s) x {engine.pk} output channel(s) x {des.alg.alpha ** 2} taps = "
        f"{est.multipliers} multipliers) -> output transform (integer-scaled AT) -> AXI stream of raw outputs Y^ "
        f"(y = Y^ * 2^{des.y_exponent}).", "",
        f"Integer transform programs (adds/muls/shifts): BT {bt['adds']}/{bt['muls']}/{bt['shifts']}, "
        f"AT {at['adds']}/{at['muls']}/{at['shifts']}.",
        "Word widths (bits): " + ", ".join(f"{k} {v}" for k, v in w.items()) + ".", "",
        f"Estimate at {est.clock_mhz:.0f} MHz (novagen.costmodel, from the parameters; a Vitis run gives the real "
        f"figures): cycles {cyc}; {est.total_cycles:,} a call ({est.seconds * 1e3:.3f} ms), {est.gops:.1f} GOP/s, "
        f"{est.dsps} DSP48E2 ({est.gops_per_dsp:.2f} GOP/s per DSP), {est.bram18} BRAM18, ~{est.luts:,} LUTs.", "",
        "Files: the design (`.h`, `.cpp`), the self-checking testbench `tb.cpp` (exit 1 on any mismatch), "
        "`data/x.txt` (test input), `data/u.txt` (U_q), `data/y_expected.txt` (novagen's bit-accurate outputs), "
        "`data/w.txt` (the float weights), `design.json`, `run_hls.tcl` (Vitis HLS: csim, csynth, cosim, export).",
        "",
        "C simulation with g++ (hls_stream.h and ap_int.h from the hls4ml package): `novagen hls-sim <this folder>`.",
        ""])


def weight_lines(uq: np.ndarray) -> str:
    return "\n".join(map(str, np.asarray(uq).reshape(-1).tolist())) + "\n"


def meta(des: FixedPointDesign, layer: tuple[int, ...], padding: int, engine: Engine, seed: int,
         source: str) -> dict[str, Any]:
    return {"prefix": prefix(des.alg), "algorithm": des.alg.to_dict(), "label": des.alg.label,
            "layer": list(layer), "padding": padding, "in_bits": des.in_bits, "coef_bits": des.coef_bits,
            "weight_max": des.weight_max, "datapath_bits": des.datapath_bits,
            "weight_sums": [list(r) for r in des.weight_sums] if des.weight_sums else None,
            "widths": des.widths, "shifts": des.shifts, "y_exponent": des.y_exponent, "frac_max": des.frac_max,
            "tiles_per_cycle": engine.pt, "channels_per_cycle": engine.pk, "input_channels_per_beat": engine.xw,
            "seed": seed, "weights": source,
            "estimate": engine_estimate(des, layer, padding, engine).to_dict()}
