"""C simulation of a generated HLS design: g++ builds the design with its self-checking testbench (against
the headers hls4ml ships), the testbench runs, and its outputs are checked bit for bit against novagen's
model and against torch.conv2d within the model's predicted bound."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from novagen.backends.fixed import compare, read_folder
from novagen.backends.toolchain import BuildError, first_error
from novagen.errors import CheckFailed, InputError
from novagen.files import TEMPORARIES

CXXFLAGS = ("-O1", "-std=c++14", "-w")


def ap_types_dir() -> Path:
    """The folder holding ap_int.h and hls_stream.h: $NOVAGEN_AP_TYPES, else the copy inside hls4ml."""
    env = os.environ.get("NOVAGEN_AP_TYPES")
    candidates = [Path(env)] if env else []
    spec = importlib.util.find_spec("hls4ml")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "templates" / "vivado" / "ap_types")
    for c in candidates:
        if (c / "ap_int.h").is_file() and (c / "hls_stream.h").is_file():
            return c
    raise BuildError("the HLS headers (ap_int.h, hls_stream.h) were not found: pip install 'novagen[hls]' "
                     "(hls4ml), or set NOVAGEN_AP_TYPES to the folder that holds them")


@dataclass(frozen=True)
class SimReport:
    """Outcome of `simulate`: the testbench's verdict, bit-exactness against the model, and the error
    against the float64 convolution within the model's bound."""

    label: str
    outputs: int
    testbench_exit: int
    mismatches: int
    max_abs_error: float
    rel_l2_error: float
    max_bound: float
    within_bound: bool
    reference: str
    compile_seconds: float
    run_seconds: float

    @property
    def passed(self) -> bool:
        return self.testbench_exit == 0 and self.mismatches == 0 and self.within_bound


def simulate(folder: str | Path, cxx: str | None = None) -> SimReport:
    """C-simulate a generated HLS folder (see the module docstring)."""
    folder = Path(folder)
    meta, _ = read_folder(folder, "hls")
    name = str(meta["prefix"])
    if not (folder / f"{name}.cpp").is_file() or not (folder / "tb.cpp").is_file():
        raise InputError(f"{folder} lacks {name}.cpp or tb.cpp: generate it again")
    compiler = cxx or os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise BuildError("no C++ compiler found for the C simulation: install g++ or set CXX")
    inc = ap_types_dir()
    with tempfile.TemporaryDirectory(prefix="novagen-csim-") as tmp:
        TEMPORARIES.add(tmp)
        try:
            exe, out = Path(tmp) / "csim", Path(tmp) / "y.txt"
            t0 = time.perf_counter()
            proc = subprocess.run([compiler, *CXXFLAGS, f"-I{inc}", f"-I{folder}", str(folder / f"{name}.cpp"),
                                   str(folder / "tb.cpp"), "-o", str(exe)], capture_output=True, text=True)
            t1 = time.perf_counter()
            if proc.returncode != 0:
                raise BuildError(f"{Path(compiler).name} failed on the HLS design in {folder}: "
                                 f"{first_error(proc.stderr)}")
            data = folder / "data"
            run = subprocess.run([str(exe), str(data / "x.txt"), str(data / "u.txt"), str(data / "y_expected.txt"),
                                  str(out)], capture_output=True, text=True)
            t2 = time.perf_counter()
            if run.returncode not in (0, 1) or not out.is_file():
                raise CheckFailed(f"the C simulation of {folder} failed: {(run.stderr or run.stdout).strip()[:300]}")
            got = np.array([int(v) for v in out.read_text().split()], dtype=object)
        finally:
            TEMPORARIES.discard(tmp)
    mism, max_abs, rel, bound, within, ref = compare(folder, got, "hls")
    return SimReport(str(meta["label"]), int(got.size), run.returncode, mism, max_abs, rel, bound, within, ref,
                     t1 - t0, t2 - t1)
