"""The tile engine in RTL: a clocked, pipelined F(m×m, r×r) engine and a layer around it.

Engine (`<prefix>_engine`), one beat a cycle with valid/ready on both sides and one stall signal for the
whole pipeline (it advances when its last stage is empty or the output is taken):

    S1 row pass of B̂ on the input tile (α adder trees), rounded to z      ─┐ the input transform,
    S2 column pass of B̂ (α adder trees), rounded to v                      ─┘ each pass sized for its range
    S3 PK·α² multipliers V̂ ⊙ Û_q (registered products: DSP slices)
    S4 accumulation over the input channels; on the last one, the taps aligned and rounded to m
    S5 column pass of Â per output channel, rounded to t
    S6 row pass of Â, rounded to y → PK output tiles of m×m raw outputs Ŷ

Layer (`<prefix>_layer`): the weights arrive on a stream (K·C beats of α² taps, k-major) into a weight
memory, each image on a stream (C·H·W values, c-major) into a zero-padded input memory; a sequencer feeds
the engine one (tile, output-channel group, input channel) beat a cycle and the engine's output is the
layer's output stream: one beat per (tile row, tile, channel group), in that order.

Everything is exactly as `novagen.fixedpoint` computes it, so the simulation is compared bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from novagen.backends.verilog.transforms import Rtl, fit, passes
from novagen.fixedpoint import FixedPointDesign


def round_lines(src: str, w_in: int, s: int, dst: str, w_out: int) -> list[str]:
    """Wires giving `dst` (w_out bits) = round(src / 2^s), ties up, as `fixedpoint.rnd` does; the value fits
    w_out bits by the range analysis, so the top bits dropped are sign copies."""
    if s == 0:
        return [f"wire signed [{w_out - 1}:0] {dst} = {fit(src, w_in, w_out)};"]
    w = w_in + 1
    return [f"wire signed [{w - 1}:0] {dst}_h = {fit(src, w_in, w)} + {w}'sd{1 << (s - 1)};",
            f"wire signed [{w - 1}:0] {dst}_s = {dst}_h >>> {s};",
            f"wire signed [{w_out - 1}:0] {dst} = {fit(dst + '_s', w, w_out)};"]


def instance(rtl: Rtl, inst: str, inputs: list[str], outputs: list[str]) -> list[str]:
    """An instance of a pass module with its output wires declared."""
    lines = [f"wire signed [{o['width'] - 1}:0] {name};" for o, name in zip(rtl.outputs, outputs)]
    ports = [f".x{i}({v})" for i, v in enumerate(inputs)] + [f".y{i}({v})" for i, v in enumerate(outputs)]
    return lines + [f"{rtl.name} {inst} ({', '.join(ports)});"]


@dataclass(frozen=True)
class EngineRtl:
    """The engine's Verilog text and the figures a README and the testbench need."""

    modules: dict[str, str]   # file name → Verilog
    widths: dict[str, int]
    product_bits: int
    multipliers: int


def engine_lines(des: FixedPointDesign, name: str, pk: int) -> tuple[list[str], list[str], dict[str, Any]]:
    """(declarations, clocked statements, bus widths) of the engine body (see the module docstring)."""
    a, m = des.alg.alpha, des.alg.m
    w, sh = des.widths, des.shifts
    ps = passes(des, name)
    u_bits, p_bits = w["u"], w["v"] + w["u"]
    fm = des.frac_max
    align = [[fm - des.frac[i][j] for j in range(a)] for i in range(a)]
    wal = w["acc"] + max(max(r) for r in align)
    decl: list[str] = []
    seq: list[str] = []

    def tap(bus: str, idx: int, width: int) -> str:
        return f"$signed({bus}[{idx * width + width - 1}:{idx * width}])"

    def registered_pass(kind: str, inst: str, inputs: list[str], suffixes: list[str], stage: str, key: str) -> None:
        """One transform pass: its instance, each output rounded to the width of `key` and registered as
        `stage`_suffix (raw `key`r_suffix, rounded `key`n_suffix)."""
        rtl = ps[kind][0]
        decl.extend(instance(rtl, inst, inputs, [f"{key}r_{s}" for s in suffixes]))
        for o, s in zip(rtl.outputs, suffixes):
            decl.extend(round_lines(f"{key}r_{s}", o["width"], sh[key], f"{key}n_{s}", w[key]))
            decl.append(f"reg signed [{w[key] - 1}:0] {stage}_{s};")
            seq.append(f"{stage}_{s} <= {key}n_{s};")

    # S1: row pass of B̂ on each row of the input tile
    for i in range(a):
        decl += [f"wire signed [{w['in'] - 1}:0] d_{i}_{j} = {tap('in_tile', i * a + j, w['in'])};" for j in range(a)]
        registered_pass("bt_row", f"row{i}", [f"d_{i}_{j}" for j in range(a)], [f"{i}_{j}" for j in range(a)],
                        "s1_z", "z")
    # S2: column pass of B̂
    for j in range(a):
        registered_pass("bt_col", f"col{j}", [f"s1_z_{i}_{j}" for i in range(a)], [f"{i}_{j}" for i in range(a)],
                        "s2_v", "v")
    # S3: products; S4: accumulation, alignment and rounding at m
    for q in range(pk):
        for i in range(a):
            for j in range(a):
                xi = i * a + j
                t = f"{q}_{i}_{j}"
                decl += [f"reg signed [{p_bits - 1}:0] s3_p_{t};", f"reg signed [{w['acc'] - 1}:0] acc_{t};",
                         f"wire signed [{w['acc'] - 1}:0] accn_{t} = (fresh ? {w['acc']}'sd0 : acc_{t}) + "
                         f"{fit(f's3_p_{t}', p_bits, w['acc'])};",
                         f"wire signed [{wal - 1}:0] al_{t} = {fit(f'accn_{t}', w['acc'], wal)} <<< {align[i][j]};"]
                decl += round_lines(f"al_{t}", wal, sh["m"], f"mn_{t}", w["m"])
                decl.append(f"reg signed [{w['m'] - 1}:0] s4_m_{t};")
                seq.append(f"s3_p_{t} <= s2_v_{i}_{j} * {tap('s2_u', q * a * a + xi, u_bits)};")
                seq.append(f"if (s3_valid) acc_{t} <= accn_{t};")
                seq.append(f"if (s3_valid && s3_last) s4_m_{t} <= mn_{t};")
    # S5: column pass of Â; S6: row pass of Â
    for q in range(pk):
        for j in range(a):
            registered_pass("at_col", f"acol{q}_{j}", [f"s4_m_{q}_{i}_{j}" for i in range(a)],
                            [f"{q}_{u}_{j}" for u in range(m)], "s5_t", "t")
        for u in range(m):
            registered_pass("at_row", f"arow{q}_{u}", [f"s5_t_{q}_{u}_{j}" for j in range(a)],
                            [f"{q}_{u}_{v}" for v in range(m)], "s6_y", "y")
            for v in range(m):
                decl.append(f"assign out_y[{((q * m + u) * m + v + 1) * w['y'] - 1}:{((q * m + u) * m + v) * w['y']}]"
                            f" = s6_y_{q}_{u}_{v};")
    buses = {"tile": a * a * w["in"], "u": pk * a * a * u_bits, "y": pk * m * m * w["y"], "product": p_bits}
    return decl, seq, buses


def hex_word(v: int, bits: int) -> str:
    """Two's complement of v in `bits` bits, as hex digits."""
    return format(v & ((1 << bits) - 1), f"0{-(-bits // 4)}x")


def hex_files(des: FixedPointDesign, x: Any, uq: Any, expected: Any) -> dict[str, str]:
    """data/x.hex (input words), data/u.hex (one α²-tap word per (k, c), tap 0 in the low bits) and
    data/y_expected.hex (raw outputs) for the testbench's $readmemh."""
    w = des.widths
    a2 = des.alg.alpha ** 2
    u_words = []
    for kc in uq.reshape(-1, a2):
        word = 0
        for xi, v in enumerate(kc):
            word |= (int(v) & ((1 << w["u"]) - 1)) << (xi * w["u"])
        u_words.append(hex_word(word, a2 * w["u"]))
    return {"data/x.hex": "\n".join(hex_word(int(v), w["in"]) for v in x.reshape(-1)) + "\n",
            "data/u.hex": "\n".join(u_words) + "\n",
            "data/y_expected.hex": "\n".join(hex_word(int(v), w["y"]) for v in expected.reshape(-1)) + "\n"}
