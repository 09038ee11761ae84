"""MetaSchedule tuning of the Winograd conv2d (and of TVM's direct conv2d, the baseline) into a JSON
database: resumable, measured in this process or in MetaSchedule's workers, or on a device through RPC."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novagen.backends.tvm.compat import (
    drop_unnamed_handlers,
    fast_tensor_intrinsics,
    import_tensor_intrin,
    in_process_builder,
    in_process_runner,
    quiet_console,
)
from novagen.backends.tvm.compute import direct_module
from novagen.backends.tvm.schedule import conv2d_primfunc
from novagen.backends.tvm.spec import TVMError, load_tvm
from novagen.backends.tvm.targets import resolve_target
from novagen.files import atomic_write, shorten, temporary_folder
from novagen.interrupts import on_interrupt
from novagen.limits import seed as limits_seed
from novagen.limits import whole


@dataclass(frozen=True)
class TuneResult:
    """A tuning run: the database folder, trials before and after, and the best measured time."""

    db: str
    workload: str
    trials_before: int
    trials_after: int
    best_ms: float | None


def is_direct(alg: Any) -> bool:
    return isinstance(alg, str) and alg.strip().lower() == "direct"


def tuning_workload(alg: Any, layer: Any, padding: Any, dtype: str, layout: str) -> tuple[Any, str]:
    """The unscheduled workload to tune ("main") and its name: our Winograd conv2d, or TVM's own direct
    conv2d when alg is "direct" (the baseline tuned on the same trials)."""
    tvm = load_tvm()
    if is_direct(alg):
        mod = direct_module(layer, padding, dtype, layout)
        return mod, str(mod["main"].attrs["global_symbol"])
    func, spec = conv2d_primfunc(alg, layer, padding, dtype, layout, "precomputed", schedule=None)
    # MetaSchedule looks the workload up as "main"; the global symbol keeps the function's own name
    return tvm.IRModule({"main": func}), spec.name


def records(db: Any, mod: Any) -> list[Any]:
    """The tuning records of a workload in a database (none when it was never tuned)."""
    if not db.has_workload(mod):
        return []
    return list(db.get_top_k(db.commit_workload(mod), 1 << 30))


DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
"""The files of MetaSchedule's JSON database: one JSON value per line, appended as records are measured."""


def _complete_lines(path: Path) -> list[str]:
    """The lines of a database file that are whole JSON values; TVMError for a damaged line other than an
    unfinished last one (what an interrupted append leaves)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TVMError(f"tuning database file {path} cannot be read ({exc}): delete it or give another --db") from None
    lines = text.split("\n")
    good = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # an unfinished append: the records before it stand
                break
            raise TVMError(f"tuning database {path.parent} is damaged: {path.name} line {i + 1} is not a record; "
                           "delete the folder or give another --db") from None
        good.append(line)
    return good


def checked_database(path: str | os.PathLike[str]) -> Path:
    """A tuning database folder: created when missing; TVMError when it is a file, cannot be created, or
    holds a damaged record."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise TVMError(f"tuning database '{shorten(folder)}' is not a folder: give a folder for --db")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TVMError(f"cannot create the tuning database '{shorten(folder)}': {exc.strerror}") from None
    for name in DATABASE_FILES:
        if (folder / name).exists():
            _complete_lines(folder / name)
    return folder


def save_database(work: Path, folder: Path) -> None:
    """Write the whole records of the working copy `work` into the database `folder`, each file replaced
    atomically: an interrupted tuning run leaves the database loadable and resumable."""
    for name in DATABASE_FILES:
        if (work / name).exists():
            lines = _complete_lines(work / name)
            atomic_write(folder / name, "".join(line + "\n" for line in lines), overwrite=True)


def open_database(path: str | os.PathLike[str]) -> Any:
    """The JSON tuning database in a folder (created when missing; TVMError when damaged)."""
    from tvm.s_tir import meta_schedule as ms

    folder = checked_database(path)
    try:
        return ms.database.JSONDatabase(work_dir=str(folder))
    except Exception as exc:  # TVM rejects a record it cannot parse
        reason = str(exc).splitlines()[-1][:200] if str(exc) else type(exc).__name__
        raise TVMError(f"tuning database {shorten(folder)} is damaged ({reason}): delete the folder or give another "
                       "--db") from None


def tune(alg: Any, layer: Sequence[int] | str, db: str | os.PathLike[str], trials: int = 64,
         padding: int | Sequence[int] = 1, dtype: str = "float32", layout: str = "NCHW", target: Any = "llvm",
         trials_per_iter: int = 16, runner: Any = None, seed: int = 0, build_timeout: float = 300.0,
         builder: Any = None) -> TuneResult:
    """Tune the Winograd conv2d with MetaSchedule, recording into the JSON database folder `db`;
    alg "direct" tunes TVM's own direct conv2d (`direct_module`) instead, the baseline on equal trials.

    Resumable: trials already in `db` for this workload count toward `trials`, and the search starts from
    them; when there are enough, nothing runs.  The builder uses one worker with a long timeout and an
    initializer that imports the tensor intrinsics once.  `runner` defaults to a LocalRunner; pass an
    `rpc_runner(...)` to measure on a remote device.  `builder="in-process"` and `runner="in-process"`
    compile and time the candidates in this process (no timeouts, no isolation from a crashing
    candidate): each LocalBuilder batch and the LocalRunner's pool start workers that import TVM, which
    is most of the time of a short tuning run on a small machine.
    """
    from tvm.s_tir import meta_schedule as ms

    if whole("trials", trials, -(2**63), 2**63) < 1:
        raise TVMError(f"trials {trials} must be at least 1")
    if trials > 100_000:
        raise TVMError(f"trials {trials} must be at most 100,000")
    seed = limits_seed(seed)
    if isinstance(builder, str) and builder != "in-process":
        raise TVMError(f"builder {builder!r} is not known: use None, 'in-process' or a MetaSchedule Builder")
    if isinstance(runner, str) and runner != "in-process":
        raise TVMError(f"runner {runner!r} is not known: use None, 'in-process' or a MetaSchedule Runner")
    direct = is_direct(alg)
    mod, name = tuning_workload(alg, layer, padding, dtype, layout)
    tgt = resolve_target(target)
    folder = checked_database(db)
    fast_tensor_intrinsics()  # TuneContext and LocalBuilder's workers import them in seconds, not a minute
    before = len(records(open_database(folder), mod))
    todo = trials - before
    if todo > 0:
        if builder is None:
            builder = ms.builder.LocalBuilder(max_workers=1, timeout_sec=build_timeout)
        elif builder == "in-process":
            builder = in_process_builder()
        if runner == "in-process":
            run = in_process_runner()
        else:
            run = runner or ms.runner.LocalRunner(timeout_sec=60, initializer=import_tensor_intrin)
        # MetaSchedule appends to a working copy; its whole records replace the database's files at the end
        # or on Ctrl-C (an interrupted append would otherwise leave a broken last line behind)
        with temporary_folder(folder.parent) as work, on_interrupt(lambda: save_database(work, folder)):
            for file in DATABASE_FILES:
                if (folder / file).exists():
                    shutil.copyfile(folder / file, work / file)
            database = open_database(work)
            drop_unnamed_handlers()
            # both go through MetaSchedule's post-order-apply: ours reaches novagen's rule through the GEMM
            # block's schedule_rule annotation; our space has at most a few dozen points, so a small population
            # finds them without minutes of evolution, while TVM's direct conv2d keeps MetaSchedule's defaults
            strategy = "evolutionary" if direct else ms.search_strategy.EvolutionarySearch(population_size=64,
                                                                                          max_fail_count=2)
            try:
                with quiet_console():
                    ms.tune_tir(mod, tgt, str(folder), max_trials_global=todo,
                                num_trials_per_iter=min(trials_per_iter, todo), builder=builder, runner=run,
                                database=database, seed=seed, num_tuning_cores=1, space="post-order-apply",
                                strategy=strategy)
            finally:
                save_database(work, folder)
    recs = records(open_database(folder), mod)
    best = None
    for rec in recs:
        secs = [float(v) for v in (rec.run_secs or [])]
        if secs and all(v < 1e9 for v in secs):
            t = sum(secs) / len(secs) * 1e3
            best = t if best is None else min(best, t)
    return TuneResult(str(db), name, before, len(recs), best)


def load_tuned(alg: Any, layer: Sequence[int] | str, db: str | os.PathLike[str], padding: int | Sequence[int] = 1,
               dtype: str = "float32", layout: str = "NCHW", target: Any = "llvm") -> Any:
    """The tuned IRModule from the database `db` (no tuning runs); TVMError if `db` has no record of it."""
    if not Path(db).is_dir():
        raise TVMError(f"tuning database '{shorten(db)}' is not a folder: run novagen tune first")
    mod, name = tuning_workload(alg, layer, padding, dtype, layout)
    sch = open_database(db).query_schedule(mod, resolve_target(target), workload_name="main")
    if sch is None:
        raise TVMError(f"'{db}' holds no tuning record for {name}: run novagen tune for this layer first")
    return sch.mod


def rpc_runner(tracker_host: str, tracker_port: int, device_key: str, timeout: float = 60.0) -> Any:
    """A MetaSchedule RPCRunner that measures on devices registered with an RPC tracker under `device_key`
    (start one with `python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port 9190` and a server with
    `python -m tvm.exec.rpc_server --tracker 127.0.0.1:9190 --key local`)."""
    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.RPCConfig(tracker_host=tracker_host, tracker_port=tracker_port, tracker_key=device_key,
                                 session_timeout_sec=int(timeout))
    return ms.runner.RPCRunner(rpc_config=config, max_workers=1, initializer=import_tensor_intrin)

