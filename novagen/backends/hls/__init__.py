"""The HLS target: a fixed-point Winograd conv2d engine as an HLS C++ dataflow design with `hls::stream`
ports, the transformed weights through an m_axi port, a self-checking testbench, a Vitis HLS Tcl script and
test data; `simulate` (`novagen hls-sim`) runs the C simulation with g++ and checks it bit for bit against
novagen's model (`novagen.fixedpoint`) and against torch.conv2d within the model's predicted bound.

- `design`: the rendered files, the engine's parameters and its cost estimate;
- `sim`: the C simulation.

The ap_int and hls_stream headers come from the hls4ml package (pip install "novagen[hls]"), found in
site-packages or at $NOVAGEN_AP_TYPES; they are never copied into generated folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from novagen.algebra import Algorithm
from novagen.backends.base import Backend, Option, one_axis, positive_int
from novagen.backends.fixed import layer_design
from novagen.backends.hls.design import Engine, meta, prefix, readme, render
from novagen.backends.hls.sim import SimReport, ap_types_dir, simulate
from novagen.files import write_files
from novagen.version import __version__

DEFAULT_LAYER = (1, 16, 32, 32, 16)


def generate(alg: Algorithm, out_dir: str | Path, layer: tuple[int, ...] | None = None, padding: int = 1,
             bits: str | int = "auto", weights: str | None = None, self_test: bool = False,
             datapath_bits: int | None = None, tiles_per_cycle: int | None = None,
             channels_per_cycle: int | None = None, seed: int = 0, coef_bits: int = 16,
             overwrite: bool = False) -> list[Path]:
    """Write the HLS design, testbench, Tcl script, test data and README into `out_dir` for the layer's
    weights (`weights`: FILE or FILE:NAME, see `novagen.weights`; or `self_test` for random ones)."""
    alg = one_axis(alg, "hls")
    layer = tuple(layer) if layer is not None else DEFAULT_LAYER
    ld = layer_design(alg, layer, padding, bits, weights, self_test, datapath_bits, coef_bits, seed, "hls")
    ow = layer[3] + 2 * padding - alg.r + 1
    engine = Engine.for_layer(layer, alg.m, ow, tiles_per_cycle, channels_per_cycle)
    files: dict[str, str] = {**render(ld.des, layer, padding, engine), **ld.data_files()}
    doc = {"novagen": __version__, "target": "hls", **meta(ld.des, layer, padding, engine, seed, ld.source)}
    files["design.json"] = json.dumps(doc, indent=2) + "\n"
    files["README.md"] = readme(ld.des, prefix(alg), layer, padding, engine, ld.source)
    return write_files(out_dir, files, overwrite)


def _flag(value: Any) -> bool:
    return bool(value)


BACKENDS = (Backend(
    name="hls",
    summary="fixed-point Winograd engine as HLS C++ (hls::stream, m_axi weights), self-checking testbench, Tcl",
    generate=generate,
    generate_options=(Option("bits", "'auto' or the input word width", "auto"),
                      Option("weights", "the layer's weights: FILE or FILE:NAME (.npy, .npz, .pt, .onnx)", None),
                      Option("self_test", "random weights, for a self-test", False, _flag),
                      Option("datapath_bits", "round every stage to this many bits", None,
                             positive_int("--datapath-bits", 2, 64)),
                      Option("tiles_per_cycle", "tiles the engine takes a cycle", None,
                             positive_int("--tiles-per-cycle", 1, 64)),
                      Option("channels_per_cycle", "output channels the PE array computes a cycle", None,
                             positive_int("--channels-per-cycle", 1, 4096))),
),)

__all__ = ["BACKENDS", "Engine", "SimReport", "ap_types_dir", "generate", "prefix", "simulate"]
