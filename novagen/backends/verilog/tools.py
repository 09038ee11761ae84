"""The RTL tools, where installed: iverilog/vvp and verilator simulate, verilator lints, yosys synthesizes.

`rtl_sim` runs a generated layer end to end in each simulator and checks its outputs against novagen's
model bit for bit and against torch.conv2d within the model's bound; `synth_stats` gives yosys's cell
counts (LUTs, carries, DSPs) for a module."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from novagen.backends.fixed import compare, read_folder
from novagen.errors import CheckFailed, InputError
from novagen.files import TEMPORARIES

SIMULATORS = ("iverilog", "verilator")


def tool(name: str) -> str | None:
    """Path of an RTL tool (iverilog, vvp, verilator, yosys) or None."""
    return shutil.which(name)


_RESULT = re.compile(r"(\d+) passed, (\d+) failed")


def simulate(folder: str | Path, name: str) -> tuple[int, int]:
    """Run a transform's <name>_tb.v with iverilog/vvp: (passed, failed)."""
    if not (tool("iverilog") and tool("vvp")):
        raise InputError("iverilog is not installed (apt-get install iverilog)")
    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sim.vvp"
        proc = subprocess.run(["iverilog", "-g2005", "-o", str(out), str(folder / f"{name}_tb.v"),
                               str(folder / f"{name}.v")], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckFailed(f"iverilog rejected {name}: {proc.stderr.strip()[:300]}")
        run = subprocess.run(["vvp", "-n", str(out)], capture_output=True, text=True)
    m = _RESULT.search(run.stdout)
    if not m:
        raise CheckFailed(f"the {name} testbench printed no result: {run.stdout.strip()[-300:]}")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class RtlSimReport:
    """One simulator's run of a generated layer: the testbench's counts, then novagen's own checks."""

    simulator: str
    label: str
    outputs: int
    testbench_passed: int
    testbench_failed: int
    mismatches: int
    max_abs_error: float
    rel_l2_error: float
    max_bound: float
    within_bound: bool
    reference: str
    compile_seconds: float
    run_seconds: float
    log: list[str] = field(default_factory=list)

    @property
    def testbench_exit(self) -> int:
        return 0 if self.testbench_failed == 0 and self.testbench_passed == self.outputs else 1

    @property
    def passed(self) -> bool:
        return self.testbench_exit == 0 and self.mismatches == 0 and self.within_bound


def _commands(sim: str, name: str, sources: list[str]) -> tuple[list[str], list[str]]:
    if sim == "iverilog":
        return ["iverilog", "-g2005", "-o", "sim.vvp", *sources], ["vvp", "-n", "sim.vvp"]
    return (["verilator", "--binary", "--timing", "-Wno-fatal", "-j", "2", "--top-module", f"{name}_tb",
             *sources, "-o", "vsim"], ["./obj_dir/vsim"])


def rtl_sim(folder: str | Path, simulators: tuple[str, ...] | None = None, timeout: float = 1800) -> list[RtlSimReport]:
    """Simulate the layer of a generated Verilog folder in each simulator (default: those installed)."""
    folder = Path(folder)
    meta, ld = read_folder(folder, "verilog")
    name = str(meta["prefix"])
    sources = [f"{name}_{part}.v" for part in ("passes", "engine", "layer", "tb")]
    missing = [s for s in sources if not (folder / s).is_file()]
    if missing:
        raise InputError(f"{folder} lacks {', '.join(missing)}: generate it again")
    sims = simulators or tuple(s for s in SIMULATORS if tool(s))
    if not sims:
        raise InputError("no RTL simulator is installed: apt-get install iverilog verilator")
    for s in sims:
        if s not in SIMULATORS:
            raise InputError(f"simulator '{s}' is not iverilog or verilator")
        if not tool(s):
            raise InputError(f"{s} is not installed (apt-get install {s})")
    n, c, h, w, k = ld.layer
    reports = []
    for sim in sims:
        with tempfile.TemporaryDirectory(prefix=f"novagen-{sim}-") as tmp:
            TEMPORARIES.add(tmp)
            try:
                work = Path(tmp)
                for s in sources:
                    shutil.copy(folder / s, work / s)
                shutil.copytree(folder / "data", work / "data")
                build, run = _commands(sim, name, sources)
                t0 = time.perf_counter()
                proc = subprocess.run(build, cwd=work, capture_output=True, text=True, timeout=timeout)
                t1 = time.perf_counter()
                if proc.returncode != 0:
                    why = (proc.stderr or proc.stdout).strip()[:400]
                    raise CheckFailed(f"{sim} rejected the design in {folder}: {why}")
                res = subprocess.run(run, cwd=work, capture_output=True, text=True, timeout=timeout)
                t2 = time.perf_counter()
                m = _RESULT.search(res.stdout)
                if not m or "timeout" in res.stdout:
                    raise CheckFailed(f"the {sim} simulation of {folder} did not finish: {res.stdout.strip()[-300:]}")
                got = _outputs(work / "y_out.txt", ld.expected.shape)
            finally:
                TEMPORARIES.discard(tmp)
        mism, max_abs, rel, bound, within, ref = compare(folder, got, "verilog")
        reports.append(RtlSimReport(sim, str(meta["label"]), int(ld.expected.size), int(m.group(1)), int(m.group(2)),
                                    mism, max_abs, rel, bound, within, ref, t1 - t0, t2 - t1,
                                    [ln for ln in res.stdout.splitlines() if ln.strip()][-6:]))
    return reports


def _outputs(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The simulated outputs (n, k, oh, ow, value lines) as raw integers in the model's layout."""
    got = np.zeros(shape, dtype=object)
    seen = np.zeros(shape, dtype=bool)
    for line in path.read_text().split("\n"):
        if line.strip():
            n, k, oh, ow, v = (int(t) for t in line.split())
            got[n, k, oh, ow], seen[n, k, oh, ow] = v, True
    if not seen.all():
        raise CheckFailed(f"the simulation gave {int(seen.sum())} of {seen.size} outputs")
    return got


def lint(path: str | Path, top: str | None = None, extra: tuple[str, ...] = ()) -> str:
    """verilator --lint-only -Wall: its messages ('' when clean)."""
    if not tool("verilator"):
        raise InputError("verilator is not installed (apt-get install verilator)")
    cmd = ["verilator", "--lint-only", "-Wall", *(["--top-module", top] if top else []), str(path), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return (proc.stdout + proc.stderr).strip() if proc.returncode != 0 or proc.stderr.strip() else ""


_STAT = re.compile(r"^\s+(\S+)\s+(\d+)\s*$")


def synth_stats(path: str | Path | list[Any], top: str, family: str = "ice40", timeout: float = 1800) -> dict[str, int]:
    """yosys synth_<family> and stat: cell counts, with LUTs, carry cells and DSPs summed.

    Open-toolchain estimates: ice40 LUTs are SB_LUT4, carries SB_CARRY, DSPs SB_MAC16; xilinx (7-series
    cells) LUTs are LUT1..LUT6, carries CARRY4/CARRY8, DSPs DSP48E1."""
    if not tool("yosys"):
        raise InputError("yosys is not installed (apt-get install yosys)")
    if family not in ("ice40", "xilinx"):
        raise InputError(f"family '{family}' is not ice40 or xilinx")
    paths = path if isinstance(path, list) else [path]
    dsp = " -dsp" if family == "ice40" else ""  # SB_MAC16 for the products (synth_xilinx infers DSP48E1 itself)
    script = f"read_verilog {' '.join(map(str, paths))}; synth_{family}{dsp} -top {top}; stat"
    proc = subprocess.run(["yosys", "-p", script], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        err = next((ln for ln in (proc.stderr + proc.stdout).splitlines() if "ERROR" in ln), proc.stderr[-300:])
        raise CheckFailed(f"yosys failed on {top}: {err.strip()}")
    text = proc.stdout
    cells: dict[str, int] = {}
    section = text[text.rfind("Number of cells"):]
    for line in section.splitlines()[1:]:
        m = _STAT.match(line)
        if m:
            cells[m.group(1)] = int(m.group(2))
        elif cells and not line.strip():
            break
    luts = sum(v for k, v in cells.items() if k == "SB_LUT4" or re.fullmatch(r"LUT\d", k))
    carry = sum(v for k, v in cells.items() if k in ("SB_CARRY", "CARRY4", "CARRY8"))
    dsps = sum(v for k, v in cells.items() if k.startswith("DSP") or k.startswith("SB_MAC16"))
    ffs = sum(v for k, v in cells.items() if k.startswith("FD") or k.startswith("SB_DFF"))
    return {"luts": luts, "carry": carry, "dsps": dsps, "ffs": ffs, "cells": sum(cells.values())}
