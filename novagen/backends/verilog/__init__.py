"""The Verilog target: a whole Winograd tile engine in RTL for one layer and the user's weights.

- `transforms`: one pass of a transform as a tree of two-input adders (CSD constant multipliers), exactly
  as wide as its input range needs;
- `engine`: the clocked, pipelined F(m×m, r×r) engine (2D input transform, PK·α² multipliers, channel
  accumulation, 2D output transform, valid/ready) and the layer around it (weight and input memories, a
  sequencer), with a self-checking testbench;
- `tools`: iverilog, verilator and yosys: `rtl_sim` (`novagen rtl-sim`), `lint`, `synth_stats`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from novagen.algebra import Algorithm
from novagen.backends.base import Backend, Option, one_axis, positive_int
from novagen.backends.fixed import layer_design
from novagen.backends.verilog.engine import engine_lines, hex_files
from novagen.backends.verilog.tools import SIMULATORS, RtlSimReport, lint, rtl_sim, simulate, synth_stats, tool
from novagen.backends.verilog.transforms import PASSES, Rtl, build_rtl, passes, prefix, render_module, transforms
from novagen.costmodel import estimate
from novagen.errors import InputError
from novagen.files import write_files
from novagen.resources import templates
from novagen.version import __version__

DEFAULT_LAYER = (1, 16, 16, 16, 16)


def render(ld: Any, pk: int) -> dict[str, str]:
    """The Verilog files of a layer design: passes, engine, layer, testbench."""
    des, alg = ld.des, ld.des.alg
    name = prefix(alg)
    n, c, h, w, k = ld.layer
    a, m, r, pad = alg.alpha, alg.m, alg.r, ld.padding
    oh, ow = h + 2 * pad - r + 1, w + 2 * pad - r + 1
    th, tw = math.ceil(oh / m), math.ceil(ow / m)
    decl, seq, buses = engine_lines(des, name, pk)
    buses["tile_u"] = a * a * des.widths["u"]
    cycles = k * c + n * (c * h * w + 2 * th * tw * (k // pk) * (c + 8)) + 100
    ctx = {"name": name, "label": alg.label, "version": __version__, "m": m, "r": r, "alpha": a, "pk": pk,
           "N": n, "C": c, "H": h, "W": w, "K": k, "pad": pad, "OH": oh, "OW": ow, "TH": th, "TW": tw,
           "HP": th * m + r - 1, "WP": tw * m + r - 1, "widths": des.widths, "shifts": des.shifts,
           "y_exponent": des.y_exponent, "datapath_bits": des.datapath_bits, "multipliers": pk * a * a,
           "decl": decl, "seq": seq, "buses": buses, "timeout_ns": cycles * 10 * 4}
    env = templates("verilog")
    mods = []
    for key in PASSES:
        rtl, mat = passes(des, name)[key]
        what = key.replace("_", " ") + " pass"
        mods.append(render_module(rtl, mat, what, key, alg.label, vectors=0)[f"{rtl.name}.v"])
    passes_v = "/* verilator lint_off DECLFILENAME */  // four modules in one file\n" + "\n".join(mods)
    return {f"{name}_passes.v": passes_v, f"{name}_engine.v": env.get_template("engine.v.j2").render(ctx),
            f"{name}_layer.v": env.get_template("layer.v.j2").render(ctx),
            f"{name}_tb.v": env.get_template("layer_tb.v.j2").render(ctx)}


def generate(alg: Algorithm, out_dir: str | Path, layer: tuple[int, ...] | None = None, padding: int = 1,
             bits: int | str = 8, weights: str | None = None, self_test: bool = False,
             datapath_bits: int | None = None, channels_per_cycle: int | None = None, seed: int = 0,
             overwrite: bool = False) -> list[Path]:
    """Write the engine, the layer around it, its testbench and test data, run_sim.sh, design.json and a
    README into `out_dir`, for the layer's weights (`weights`, or `self_test` for random ones)."""
    alg = one_axis(alg, "verilog")
    layer = tuple(layer) if layer is not None else DEFAULT_LAYER
    pk = channels_per_cycle or 1
    if layer[4] % pk:
        raise InputError(f"--channels-per-cycle {pk} must divide the {layer[4]} output channels")
    ld = layer_design(alg, layer, padding, 8 if str(bits).lower() == "auto" else bits, weights, self_test,
                      datapath_bits, 16, seed, "verilog")
    name = prefix(alg)
    files = {**render(ld, pk), **hex_files(ld.des, ld.x, ld.uq, ld.expected), **ld.data_files()}
    est = estimate(ld.des, layer, padding, pk, 1, 200.0, 1)
    doc = {"novagen": __version__, "target": "verilog", "prefix": name, "algorithm": alg.to_dict(),
           "label": alg.label, "layer": list(layer), "padding": padding, "in_bits": ld.des.in_bits,
           "coef_bits": ld.des.coef_bits, "weight_max": ld.des.weight_max, "datapath_bits": datapath_bits,
           "weight_sums": [list(r) for r in ld.des.weight_sums] if ld.des.weight_sums else None,
           "widths": ld.des.widths, "shifts": ld.des.shifts, "y_exponent": ld.des.y_exponent,
           "channels_per_cycle": pk, "multipliers": pk * alg.alpha ** 2, "weights": ld.source, "seed": seed,
           "estimate": est.to_dict()}
    files["design.json"] = json.dumps(doc, indent=2) + "\n"
    srcs = f"{name}_passes.v {name}_engine.v {name}_layer.v {name}_tb.v"
    files["run_sim.sh"] = "\n".join([
        "#!/bin/sh", "# the layer end to end: iverilog, then verilator (when installed); each prints N passed, "
        "N failed",
        "set -e", 'cd "$(dirname "$0")"',
        f"iverilog -g2005 -o sim.vvp {srcs} && vvp -n sim.vvp",
        f"if command -v verilator >/dev/null; then verilator --binary --timing -Wno-fatal -j 2 --top-module "
        f"{name}_tb {srcs} -o vsim && ./obj_dir/vsim; fi", ""])
    w = ld.des.widths
    files["README.md"] = "\n".join([
        f"# {name}: {alg.label} tile engine in RTL", "",
        f"Layer N, C, H, W, K = {', '.join(map(str, layer))}, padding {padding}; {w['in']}-bit inputs, "
        f"{w['u']}-bit transformed weights ({ld.source}); "
        + (f"{datapath_bits}-bit datapath." if datapath_bits else "exact word widths."), "",
        f"- `{name}_passes.v`: the four transform passes (adder trees, CSD constants), each sized for its input.",
        f"- `{name}_engine.v`: the pipelined engine: S1/S2 input transform, S3 {pk * alg.alpha ** 2} multipliers "
        f"({pk} output channel(s) x {alg.alpha ** 2} taps), S4 accumulation, S5/S6 output transform; valid/ready.",
        f"- `{name}_layer.v`: weight and input memories and the sequencer around the engine (streams u, x, y).",
        f"- `{name}_tb.v`: self-checking testbench (data/*.hex from novagen's bit-accurate model).",
        "", "Word widths (bits): " + ", ".join(f"{k} {v}" for k, v in w.items()) + ".",
        f"Raw outputs Y^: y = Y^ * 2^{ld.des.y_exponent}.", "",
        f"Estimate at 200 MHz (novagen.costmodel): {est.total_cycles:,} cycles, {est.gops:.2f} GOP/s, "
        f"{est.dsps} DSP48E2. Simulate: `sh run_sim.sh`, or `novagen rtl-sim <this folder>` (also checks the "
        "outputs against the model and torch.conv2d).", ""])
    return write_files(out_dir, files, overwrite, executable=("run_sim.sh",))


BACKENDS = (Backend(
    name="verilog",
    summary="a pipelined Winograd tile engine and layer in RTL (DSP multipliers, valid/ready), self-checking testbench",
    generate=generate,
    generate_options=(Option("bits", "input word width (auto: 8)", 8),
                      Option("weights", "the layer's weights: FILE or FILE:NAME (.npy, .npz, .pt, .onnx)", None),
                      Option("self_test", "random weights, for a self-test", False, bool),
                      Option("datapath_bits", "round every stage to this many bits", None,
                             positive_int("--datapath-bits", 2, 64)),
                      Option("channels_per_cycle", "output channels the engine computes a cycle", None,
                             positive_int("--channels-per-cycle", 1, 4096))),
),)

__all__ = ["BACKENDS", "PASSES", "SIMULATORS", "Rtl", "RtlSimReport", "build_rtl", "generate", "lint", "passes",
           "prefix", "render_module", "rtl_sim", "simulate", "synth_stats", "tool", "transforms"]
