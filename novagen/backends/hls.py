"""The HLS target: a fixed-point Winograd conv2d as an HLS C++ dataflow design (line buffer, input
transform, PE array, output transform) with ap_fixed/ap_int types, a testbench, a Vitis HLS Tcl script,
and its test data; `simulate` runs the C simulation with g++ and checks it bit for bit against
novagen's Python model (`novagen.fixedpoint`) and against the float64 reference within the model's
predicted bound.

The ap_types headers come from the hls4ml package (pip install "novagen[hls]"), found in site-packages
or at $NOVAGEN_AP_TYPES; they are never copied into generated folders.  Streams in C simulation use a
small class of our own (hls::stream under __SYNTHESIS__).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from novagen.algebra import Algorithm, from_dict
from novagen.backends.base import Backend, Option, one_axis
from novagen.backends.toolchain import BuildError, first_error
from novagen.errors import CheckFailed, InputError
from novagen.files import write_files
from novagen.fixedpoint import FixedPointDesign, design, layer_test_data
from novagen.limits import require_memory
from novagen.program import Program
from novagen.resources import templates
from novagen.version import __version__

DEFAULT_LAYER = (1, 16, 32, 32, 16)
CXXFLAGS = ("-O1", "-std=c++14", "-w")


def prefix(alg: Algorithm) -> str:
    return f"nvhls_f{alg.m}_{alg.r}_{alg.content_hash[:10]}"


def ap_types_dir() -> Path:
    """The folder holding ap_fixed.h: $NOVAGEN_AP_TYPES, else the copy inside the installed hls4ml package."""
    env = os.environ.get("NOVAGEN_AP_TYPES")
    candidates = [Path(env)] if env else []
    spec = importlib.util.find_spec("hls4ml")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "templates" / "vivado" / "ap_types")
    for c in candidates:
        if (c / "ap_fixed.h").is_file():
            return c
    raise BuildError("the ap_types headers (ap_fixed.h) were not found: pip install 'novagen[hls]' (hls4ml), "
                     "or set NOVAGEN_AP_TYPES to the folder that holds them")


def _int_lines(prog: Program, inputs: list[str], outputs: list[str], ctype: str) -> list[str]:
    return prog.c_lines(inputs, outputs, ctype, literal=lambda c: str(int(c)))


def render(des: FixedPointDesign, layer: tuple[int, ...], padding: int, uq: np.ndarray) -> dict[str, str]:
    """The design's source files: <prefix>.h, <prefix>.cpp, weights.h, tb.cpp, run_hls.tcl."""
    alg = des.alg
    a, m, r = alg.alpha, alg.m, alg.r
    _, C, H, W, K = layer
    OH, OW = H + 2 * padding - r + 1, W + 2 * padding - r + 1
    xs = [f"x{i}" for i in range(a)]
    ys = [f"y[{i}]" for i in range(a)]
    name = prefix(alg)
    bt, at = des.bt_program, des.at_program

    def fmt(c: dict[str, int]) -> str:
        return f"{c['adds']}/{c['muls']}/{c['shifts']}"

    fm = des.frac_max
    ctx = {
        "p": name, "label": alg.label, "version": __version__, "m": m, "r": r, "alpha": a, "hash": alg.content_hash,
        "guard": name.upper() + "_H", "C": C, "H": H, "W": W, "K": K, "pad": padding, "OH": OH, "OW": OW,
        "TH": -(-OH // m), "TW": -(-OW // m), "in_bits": des.in_bits, "coef_bits": des.coef_bits,
        "d": ", ".join(map(str, des.d)), "e": ", ".join(map(str, des.e)), "widths": des.widths, "frac_max": fm,
        "counts": {"BT": fmt(bt.counts()), "AT": fmt(at.counts())},
        "bt1": _int_lines(bt, xs, ys, "const bt1_t"), "bt2": _int_lines(bt, xs, ys, "const bt2_t"),
        "at1": _int_lines(at, xs, ys[:m], "const at1_t"), "at2": _int_lines(at, xs, ys[:m], "const at2_t"),
        "shifts": ", ".join(str(fm - des.frac[i][j]) for i in range(a) for j in range(a)),
        "uq": [[", ".join(str(int(v)) for v in uq[k, c].reshape(-1)) for c in range(C)] for k in range(K)],
    }
    env = templates("hls")
    return {f"{name}.h": env.get_template("winograd.h.j2").render(ctx),
            f"{name}.cpp": env.get_template("winograd.cpp.j2").render(ctx),
            "weights.h": env.get_template("weights.h.j2").render(ctx),
            "tb.cpp": env.get_template("tb.cpp.j2").render(ctx),
            "run_hls.tcl": env.get_template("run_hls.tcl.j2").render(ctx)}


def _readme(des: FixedPointDesign, name: str, layer: tuple[int, ...], padding: int) -> str:
    w = des.widths
    bt, at = des.bt_program.counts(), des.at_program.counts()
    return "\n".join([
        f"# {name}: fixed-point Winograd conv2d for HLS, {des.alg.label}",
        "",
        f"Layer N, C, H, W, K = {', '.join(map(str, layer))}, padding {padding}; {des.in_bits}-bit signed inputs, "
        f"{des.coef_bits}-bit transformed weights (|w| <= {des.weight_max}).",
        "",
        "Dataflow: line buffer -> input transform (integer-scaled BT, exact) -> PE array (alpha^2 MACs per input "
        "channel for every output channel, PIPELINE II=1) -> output transform (integer-scaled AT) -> y as "
        f"ap_fixed<{w['y']}, {w['y'] - des.frac_max}>.",
        "",
        f"Integer transform programs (adds/muls/shifts): BT {bt['adds']}/{bt['muls']}/{bt['shifts']}, "
        f"AT {at['adds']}/{at['muls']}/{at['shifts']}.",
        "Word widths (bits): " + ", ".join(f"{k} {v}" for k, v in w.items()) + ".",
        "",
        "Files: the design (`.h`, `.cpp`, `weights.h`), the testbench `tb.cpp`, `data/x.txt` (test input), "
        "`data/w.txt` (the float64 weights behind weights.h), `design.json` (what novagen needs to re-run its model), "
        "`run_hls.tcl` (Vitis HLS: csim, csynth, export; `vitis_hls -f run_hls.tcl`).",
        "",
        "C simulation with g++ and the check against novagen's bit-accurate model: `novagen hls-sim <this folder>`.",
        "",
    ])


def generate(alg: Algorithm, out_dir: str | Path, layer: tuple[int, ...] | None = None, padding: int = 1,
             bits: str | int = "auto", seed: int = 0, coef_bits: int = 16, overwrite: bool = False) -> list[Path]:
    """Write the HLS design, testbench, Tcl script, test data and README into `out_dir`."""
    alg = one_axis(alg, "hls")
    layer = tuple(layer) if layer is not None else DEFAULT_LAYER
    if padding < 0:
        raise InputError(f"padding {padding} must be at least 0")
    N, C, H, W, K = layer
    if H + 2 * padding < alg.r or W + 2 * padding < alg.r:
        raise InputError(f"input {H}x{W} with padding {padding} is smaller than the {alg.r}x{alg.r} kernel")
    require_memory(40.0 * (K * C * alg.alpha ** 2 + N * C * H * W), f"the HLS design of layer {layer} "
                   "(its weights and test data as C source)")
    des = design(alg, bits, channels=C, coef_bits=coef_bits)
    x, w = layer_test_data(layer, des.in_bits, alg.r, seed)
    uq = des.transform_weights(w)
    files = render(des, layer, padding, uq)
    files["data/x.txt"] = f"{N}\n" + "\n".join(map(str, x.reshape(-1).tolist())) + "\n"
    files["data/w.txt"] = "\n".join(repr(float(v)) for v in w.reshape(-1)) + "\n"
    meta = {"novagen": __version__, "target": "hls", "prefix": prefix(alg), "algorithm": alg.to_dict(),
            "label": alg.label, "layer": list(layer), "padding": padding, "in_bits": des.in_bits,
            "coef_bits": coef_bits, "seed": seed, "widths": des.widths, "frac_max": des.frac_max}
    files["design.json"] = json.dumps(meta, indent=2) + "\n"
    files["README.md"] = _readme(des, prefix(alg), layer, padding)
    return write_files(out_dir, files, overwrite)


@dataclass(frozen=True)
class SimReport:
    """Outcome of `simulate`: bit-exact against the model, and the error against float64 within the bound."""

    label: str
    outputs: int
    mismatches: int
    max_abs_error: float
    rel_l2_error: float
    max_bound: float
    within_bound: bool
    compile_seconds: float
    run_seconds: float

    @property
    def passed(self) -> bool:
        return self.mismatches == 0 and self.within_bound


def simulate(folder: str | Path, cxx: str | None = None) -> SimReport:
    """C-simulate a generated HLS folder with g++ and compare it with novagen's model and the float64 reference."""
    import time

    from novagen.reference import correlate_direct

    folder = Path(folder)
    meta_path = folder / "design.json"
    if not meta_path.is_file():
        raise InputError(f"{folder} holds no design.json: give a folder written by `novagen generate --target hls`")
    try:
        meta = json.loads(meta_path.read_text())
        alg = from_dict(meta["algorithm"])
        layer = tuple(int(v) for v in meta["layer"])
        padding, name = int(meta["padding"]), str(meta["prefix"])
        in_bits, coef_bits = int(meta["in_bits"]), int(meta["coef_bits"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{meta_path} is not a novagen HLS design description: {exc}") from None
    if not isinstance(alg, Algorithm):
        raise InputError(f"{meta_path}: the algorithm is not 1D")
    N, C, H, W, K = layer
    compiler = cxx or os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise BuildError("no C++ compiler found for the C simulation: install g++ or set CXX")
    inc = ap_types_dir()
    x = np.array([int(v) for v in (folder / "data" / "x.txt").read_text().split()[1:]], dtype=np.int64)
    w = np.array([float(v) for v in (folder / "data" / "w.txt").read_text().split()], dtype=np.float64)
    x, w = x.reshape(N, C, H, W), w.reshape(K, C, alg.r, alg.r)
    des = FixedPointDesign(alg, in_bits=in_bits, coef_bits=coef_bits, channels=C)
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "csim"
        t0 = time.perf_counter()
        proc = subprocess.run([compiler, *CXXFLAGS, f"-I{inc}", f"-I{folder}", str(folder / f"{name}.cpp"),
                               str(folder / "tb.cpp"), "-o", str(exe)], capture_output=True, text=True)
        t1 = time.perf_counter()
        if proc.returncode != 0:
            raise BuildError(f"{Path(compiler).name} failed on the HLS design in {folder}: {first_error(proc.stderr)}")
        out = Path(tmp) / "y.txt"
        run = subprocess.run([str(exe), str(folder / "data" / "x.txt"), str(out)], capture_output=True, text=True)
        t2 = time.perf_counter()
        if run.returncode != 0:
            raise CheckFailed(f"the C simulation of {folder} failed: {(run.stderr or run.stdout).strip()[:300]}")
        got = np.array([int(v) for v in out.read_text().split()], dtype=object)
    yhat, y = des.run(x, des.transform_weights(w), padding)
    if got.size != yhat.size:
        raise CheckFailed(f"the C simulation wrote {got.size} outputs, expected {yhat.size}")
    mismatches = int(np.count_nonzero(got.reshape(yhat.shape) != yhat))
    ref = correlate_direct(x.astype(np.float64), w, padding)
    ysim = got.reshape(yhat.shape).astype(np.float64) / 2.0 ** des.frac_max
    err = np.abs(ysim - ref)
    bound = des.error_bound(x, padding)
    return SimReport(alg.label, int(got.size), mismatches, float(err.max()),
                     float(np.linalg.norm(ysim - ref) / np.linalg.norm(ref)), float(bound.max()),
                     bool((err <= bound).all()), t1 - t0, t2 - t1)


BACKENDS = (Backend(
    name="hls",
    summary="fixed-point Winograd conv2d as an HLS C++ dataflow design (ap_fixed/ap_int), testbench and Tcl",
    generate=generate,
    generate_options=(Option("bits", "'auto' or the input word width", "auto"),),
),)
