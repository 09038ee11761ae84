"""The tune command: MetaSchedule tuning of one layer's TVM conv2d into a resumable JSON database."""

from __future__ import annotations

from pathlib import Path

import typer

from novagen.cli.common import POINTS_HELP, SPEC_HELP, out, print_json, resolve
from novagen.errors import InputError


def tune_cmd(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    target: str = typer.Option("llvm", "--target", "-t", help="TVM target: llvm (this CPU)"),
    layer: str = typer.Option(..., "--layer", help="N,C,H,W,K, e.g. 1,128,28,28,128"),
    trials: int = typer.Option(64, "--trials", help="measured trials in all (those already in --db count)"),
    db: Path = typer.Option(Path("tune_db"), "--db", help="JSON tuning database folder (created, resumed)"),
    padding: int = typer.Option(1, "--padding", help="zero padding on each side"),
    layout: str = typer.Option("NCHW", "--layout", help="NCHW or NHWC"),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP),
    measure: str = typer.Option("in-process", "--measure",
                                help="in-process (fast: build and time here) or workers (MetaSchedule's "
                                     "isolated builder and runner processes)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Tune the TVM Winograd conv2d of a layer with MetaSchedule into a JSON database (resumable).
    SPEC "direct" tunes TVM's own direct conv2d instead: the baseline for bench --tvm-direct."""
    from novagen.backends import tvm as nt

    if target not in ("llvm", "cpu"):
        raise InputError(f"tune measures on this machine: use --target llvm, not {target}")
    if measure not in ("in-process", "workers"):
        raise InputError(f"--measure {measure} is not known: use in-process or workers")
    alg = "direct" if nt.is_direct(spec) else resolve(spec, points, None)
    how = "in-process" if measure == "in-process" else None
    result = nt.tune(alg, layer, db, trials=trials, padding=padding, layout=layout, target=target,
                     builder=how, runner=how)
    if as_json:
        print_json(result.__dict__)
        return
    best = "n/a" if result.best_ms is None else f"{result.best_ms:.3f} ms"
    out().print(f"{result.workload}: {result.trials_after} trials in {result.db} "
                 f"({result.trials_after - result.trials_before} new); best {best}")
