"""Cycles and FPGA resources of a Winograd tile engine, from its design parameters alone.

The engine (the HLS design of `backends.hls` and the RTL of `backends.verilog` share it): a line buffer
taking XW input channels of a pixel a cycle, the input transform of PT tiles a cycle, a PE array of PT × PK × α²
multipliers (PT tiles, PK output channels) accumulating over the input channels, and the output transform
of PT tiles a cycle.  Stages overlap (dataflow), so a layer takes about as long as its slowest stage.

Resources use the usual first-order rules for Xilinx UltraScale+ parts: a DSP48E2 multiplies 27 × 18 bits
signed (wider products take several); a BRAM18 holds 18 Kib at up to 36 bits a port; an adder costs one
LUT per bit (carry chains).  They are estimates for comparing designs, not synthesis results: `hardware`
adds yosys figures for the RTL, and a Vitis run would give the HLS design's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from novagen.fixedpoint import FixedPointDesign

DSP_A, DSP_B = 27, 18
BRAM_BITS, BRAM_WIDTH = 18 * 1024, 36


def dsps_per_multiplier(a_bits: int, b_bits: int) -> int:
    """DSP48E2 slices for one a × b signed product (27 × 18 each; wider operands split)."""
    a, b = max(a_bits, b_bits), min(a_bits, b_bits)
    if a <= DSP_A and b <= DSP_B:
        return 1
    return math.ceil(a / (DSP_A - 1)) * math.ceil(b / (DSP_B - 1))


def brams(depth: int, width: int, banks: int = 1) -> int:
    """BRAM18 blocks of `banks` memories of depth × width bits each (LUT RAM below 1 Kib is not counted)."""
    if depth * width < 1024:
        return 0
    per = math.ceil(width / BRAM_WIDTH) * math.ceil(depth * min(width, BRAM_WIDTH) / BRAM_BITS)
    return banks * per


@dataclass(frozen=True)
class Estimate:
    """One layer on one engine configuration."""

    cycles: dict[str, int]
    total_cycles: int
    multipliers: int
    dsps: int
    bram18: int
    luts: int
    clock_mhz: float
    direct_ops: int

    @property
    def seconds(self) -> float:
        return self.total_cycles / (self.clock_mhz * 1e6)

    @property
    def gops(self) -> float:
        """Direct-convolution operations (2·K·C·OH·OW·r²) per second: the figure papers report."""
        return self.direct_ops / self.seconds / 1e9

    @property
    def gops_per_dsp(self) -> float:
        return self.gops / self.dsps if self.dsps else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "seconds": self.seconds, "gops": self.gops, "gops_per_dsp": self.gops_per_dsp}


def transform_adders(des: FixedPointDesign) -> tuple[int, int]:
    """Two-input adders of one application of B̂ and of Â (integer programs, constants as CSD chains)."""
    from novagen.fixedpoint import csd_adders

    out = []
    for prog in (des.bt_program, des.at_program):
        c = prog.counts()
        out.append(c["adds"] + sum(csd_adders(int(op.c)) for op in prog.ops if op.kind in ("mul", "shift")))
    return out[0], out[1]


def input_width(c: int, k: int, pk: int, pt: int, m: int) -> int:
    """Input channels per beat of the input stream: the smallest divisor of C that keeps the line buffer
    (H·W·C/XW cycles) no slower than the PE array (about H·W·C·K / (PK·PT·m²) cycles)."""
    need = pk * pt * m * m / k
    return next((d for d in range(1, c + 1) if c % d == 0 and d >= need), c)


def estimate(des: FixedPointDesign, layer: tuple[int, ...], padding: int = 1, pk: int = 1, pt: int = 1,
             clock_mhz: float = 200.0, xw: int | None = None) -> Estimate:
    """Cycles of one call (the weights loaded once, then N images through the overlapped stages) and
    resources of the engine for `layer` (N, C, H, W, K) with PK output channels and PT tiles a cycle."""
    c, h, w, k = layer[1:]
    alg, wd = des.alg, des.widths
    a, m, r = alg.alpha, alg.m, alg.r
    oh, ow = h + 2 * padding - r + 1, w + 2 * padding - r + 1
    th, tw = math.ceil(oh / m), math.ceil(ow / m)
    groups = th * math.ceil(tw / pt)
    n = layer[0]
    xw = xw or input_width(c, k, pk, pt, m)
    cycles = {
        "input": n * h * w * c // xw,              # XW channels of a pixel a cycle into the line buffer
        "input_transform": n * groups * c,         # PT tiles a cycle
        "pe": n * groups * c * math.ceil(k / pk),  # PT·PK·α² products a cycle
        "output_transform": n * groups * k,        # PT tiles of one output channel a cycle
    }
    weights = k * c                                # once per call, an α² tile of weights a cycle, before the PE
    mults = pt * pk * a * a
    dsps = mults * dsps_per_multiplier(wd["v"], wd["u"])
    span = pt * m + r - 1
    wpg = math.ceil(tw / pt) * pt * m + r - 1
    bram = (brams(k // pk * c, wd["u"], pk * a * a)                  # weights: PK·α² banks
            + brams(math.ceil(wpg / span) * c, wd["in"], a * span)   # line buffer: α rows × span banks
            + brams(k // pk, wd["acc"], pt * pk * a * a))            # accumulators
    bt, at = transform_adders(des)
    luts = (pt * (a * bt * wd["bt1"] + a * bt * wd["bt2"])           # row and column passes of B̂
            + pt * (a * at * wd["at1"] + m * at * wd["at2"])         # column and row passes of Â
            + mults * wd["acc"])                                     # accumulator adders
    direct = 2 * k * c * oh * ow * r * r
    return Estimate({"weights": weights, **cycles}, weights + max(cycles.values()), mults, dsps, bram, luts,
                    clock_mhz, direct * n)
