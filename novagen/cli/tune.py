"""The tune commands: MetaSchedule tuning of one layer's TVM conv2d, or of a whole model's tasks (as
tune_relax extracts them), into a resumable JSON database."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from novagen.cli.common import POINTS_HELP, SPEC_HELP, err, out, print_json, resolve
from novagen.errors import InputError
from novagen.limits import short


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


def tune_model_cmd(
    model: Path = typer.Argument(..., help="an exported torch program (.pt2, torch.export.save) or an ONNX file"),
    input_shape: str | None = typer.Option(None, "--input", help="input shape, e.g. 1,3,224,224 (ONNX models with a "
                                           "symbolic batch need it)"),
    trials: int = typer.Option(2000, "--trials", help="measured trials in all (those already in --db count)"),
    db: Path = typer.Option(Path("tune_db"), "--db", help="JSON tuning database folder (created, resumed)"),
    algorithm: str = typer.Option("auto", "--algorithm", "-a",
                                  help="auto (per convolution, measured), a catalog name, or none (TVM alone)"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Tune a whole model with TVM's MetaSchedule (each novagen task for its whole design space, then TVM's own
    tasks), into a JSON database that novagen.tvm.compile_model builds from. Ctrl-C keeps every whole
    record: the database stays loadable and resumable."""
    from novagen.backends.tvm import model as M

    shape = _shape(input_shape)
    mod, params = M.import_model(model, shape)
    algo = None if algorithm.strip().lower() == "none" else algorithm
    console = err()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("rewriting the convolutions" if algo else "binding the parameters")
        prepared = M.prepare(mod, params, algo)
        bar.update(task, description=f"tuning {trials} trials into {db}")
        tuned = M.tune(prepared, "llvm", db, trials, seed)
    doc = {"model": str(model), "db": tuned.db, "trials": tuned.trials, "new_trials": tuned.new_trials,
           "records": tuned.records, "seconds": round(tuned.seconds, 1), "tasks": tuned.tasks,
           "rewritten": [] if tuned.report is None else list(tuned.report.rewritten),
           "left": [] if tuned.report is None else list(tuned.report.skipped)}
    if as_json:
        print_json(doc)
        return
    console = out()
    console.print(f"{model}: {len(tuned.tasks)} tasks, {tuned.new_trials} new trials ({tuned.records} in the "
                  f"database, --trials {tuned.trials}) in {tuned.seconds:.0f} s, database {tuned.db}")
    if tuned.report is not None:
        console.print(str(tuned.report))


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not 1 <= len(dims) <= 6 or min(dims) < 1 or max(dims) > 1 << 20:
        raise InputError(f"--input '{short(text)}' is not a shape: write positive integers such as 1,3,224,224")
    return dims
