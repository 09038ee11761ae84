"""Commands that make kernels: generate (any target), and hls-sim (C simulation of a generated HLS design)."""

from __future__ import annotations

from pathlib import Path

import typer

from novagen import codegen
from novagen.backends import backend
from novagen.backends.hls import simulate
from novagen.backends.verilog import SIMULATORS, rtl_sim
from novagen.cli import tables
from novagen.cli.common import POINTS_HELP, SPEC_HELP, err, out, print_json, resolve
from novagen.errors import InputError


def generate(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    target: str = typer.Option("c", "--target", "-t",
                               help="code generation target: c, cuda, hls, verilog, tvm-llvm, tvm-cuda "
                                    "(each takes only its own options)"),
    layer: str | None = typer.Option(None, "--layer", help="N,C,H,W,K the kernel is meant for, e.g. 1,64,56,56,64"),
    padding: int = typer.Option(1, "--padding", help="zero padding on each side"),
    output: Path = typer.Option(Path("build"), "--output", "-o", help="folder to write into"),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP),
    dtype: str | None = typer.Option(None, "--dtype", help="cuda: fp16 (default) or fp32 for x and y; "
                                     "TVM targets: float32 (default) or float16"),
    arch: str | None = typer.Option(None, "--arch", help="cuda: GPU architecture, e.g. sm_80 (default), sm_90"),
    bits: str | None = typer.Option(None, "--bits", help="hls: 'auto' or the input word width; verilog: input "
                                    "width (default 8)"),
    layout: str | None = typer.Option(None, "--layout", help="TVM targets: NCHW (default) or NHWC"),
    tuned: Path | None = typer.Option(None, "--tuned", help="tvm-llvm: the schedule from this tuning database"),
    weights: str | None = typer.Option(None, "--weights", help="hls, verilog: the layer's weights, FILE or FILE:NAME "
                                       "(.npy, .npz, a torch state dict .pt/.pth, an ONNX model's initializer)"),
    self_test: bool = typer.Option(False, "--self-test", help="hls, verilog: random weights, for a self-test"),
    datapath_bits: int | None = typer.Option(None, "--datapath-bits", help="hls, verilog: round every stage to "
                                             "this many bits (default: exact widths)"),
    tiles_per_cycle: int | None = typer.Option(None, "--tiles-per-cycle", help="hls: tiles the engine takes a "
                                               "cycle (default 1)"),
    channels_per_cycle: int | None = typer.Option(None, "--channels-per-cycle", help="hls, verilog: output "
                                                  "channels the PE array computes a cycle (default 1)"),
    force: bool = typer.Option(False, "--force", help="overwrite files of the same names already in the folder"),
    as_json: bool = typer.Option(False, "--json", help="report the written files as JSON"),
) -> None:
    """Kernel source and build files for an algorithm: C (.c, .h), CUDA (.cu), HLS C++, Verilog, or for
    tvm-llvm and tvm-cuda TVMScript (.py), the built module (.so) and a README."""
    backend(target)
    options = {"dtype": dtype, "arch": arch, "bits": bits, "layout": layout, "tuned": tuned, "weights": weights,
               "self_test": self_test or None, "datapath_bits": datapath_bits, "tiles_per_cycle": tiles_per_cycle,
               "channels_per_cycle": channels_per_cycle}
    alg = resolve(spec, points, None)
    paths = codegen.generate(alg, output, target=target, layer=layer, padding=padding, overwrite=force, **options)
    if as_json:
        print_json({"algorithm": alg.label, "target": target, "files": [str(p) for p in paths]})
    else:
        err().print("\n".join(f"wrote {p}" for p in paths))


def hls_sim(
    folder: Path = typer.Argument(..., help="a folder written by `novagen generate --target hls`"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """C-simulate a generated HLS design with g++: its self-checking testbench, bit for bit against novagen's
    fixed-point model, and against torch.conv2d (float64) within the model's predicted bound. Exit 1 when any
    fails."""
    rep = simulate(folder)
    if as_json:
        print_json({**vars(rep), "passed": rep.passed})
    else:
        out().print(tables.sim_table(rep, folder, "HLS C simulation"))
        out().print("passed" if rep.passed else "[red]FAILED[/red]")
    if not rep.passed:
        raise typer.Exit(1)


def rtl_sim_cmd(
    folder: Path = typer.Argument(..., help="a folder written by `novagen generate --target verilog`"),
    simulator: str = typer.Option("all", "--simulator", help="iverilog, verilator, or all (those installed)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Simulate a generated RTL layer end to end (iverilog and verilator): its self-checking testbench, bit for
    bit against novagen's fixed-point model, and against torch.conv2d within the model's bound. Exit 1 when any
    check fails in any simulator."""
    sims = None if simulator == "all" else tuple(s.strip() for s in simulator.split(","))
    if sims and any(s not in SIMULATORS for s in sims):
        raise InputError(f"--simulator {simulator}: use iverilog, verilator or all")
    reps = rtl_sim(folder, sims)
    if as_json:
        print_json({"folder": str(folder), "passed": all(r.passed for r in reps),
                    "simulators": [{**vars(r), "testbench_exit": r.testbench_exit, "passed": r.passed} for r in reps]})
    else:
        for r in reps:
            out().print(tables.sim_table(r, folder, f"RTL simulation ({r.simulator})"))
        out().print("passed" if all(r.passed for r in reps) else "[red]FAILED[/red]")
    if not all(r.passed for r in reps):
        raise typer.Exit(1)
