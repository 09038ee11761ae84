"""Whole models through TVM's own flow: import (an exported torch program, an ONNX file, or a torch module),
rewrite the convolutions, tune the whole module with MetaSchedule (its tasks as `tune_relax` extracts them),
compile as `compile_relax` does.  Novagen's functions take part in that tuning through their schedule rules;
the ones left without a record get the rule's default schedule, so nothing compiles unscheduled."""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novagen.backends.tvm.compat import (
    drop_unnamed_handlers,
    import_tensor_intrin,
    in_process_builder,
    in_process_runner,
    quiet_console,
)
from novagen.backends.tvm.relax import DefaultSchedule, bind_params, rewrite_conv2d
from novagen.backends.tvm.spec import TVMError, load_tvm
from novagen.backends.tvm.targets import resolve_target
from novagen.backends.tvm.tuning import DATABASE_FILES, checked_database, open_database, save_database
from novagen.files import shorten, temporary_folder
from novagen.interrupts import on_interrupt
from novagen.limits import seed as limits_seed
from novagen.limits import whole


def import_model(source: Any, input_shape: Sequence[int] | None = None) -> tuple[Any, dict]:
    """(Relax module, params as `detach_params` gives them) from an ExportedProgram or a torch module (with
    `input_shape`), a `.pt2` file (`torch.export.save`) or an `.onnx` file; TVMError for anything else."""
    load_tvm()
    from tvm.relax.frontend import detach_params

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise TVMError(f"model file {shorten(path)} does not exist")
        if path.suffix == ".onnx":
            try:
                import onnx
            except ImportError:
                raise TVMError("reading ONNX models needs the onnx package: pip install onnx") from None
            from tvm.relax.frontend.onnx import from_onnx

            try:
                model = onnx.load(str(path))
            except Exception as exc:  # onnx raises its own DecodeError and friends
                raise TVMError(f"{shorten(path)} is not an ONNX model: {str(exc)[:200]}") from None
            shape = {model.graph.input[0].name: list(input_shape)} if input_shape else None
            return detach_params(from_onnx(model, shape_dict=shape, keep_params_in_input=True))
        if path.suffix != ".pt2":
            raise TVMError(f"model file {shorten(path)}: give an exported torch program (.pt2, torch.export.save) "
                           "or an ONNX file (.onnx)")
        import torch

        try:
            source = torch.export.load(str(path))
        except Exception as exc:  # torch raises many kinds for a bad archive
            raise TVMError(f"{shorten(path)} is not an exported torch program: {str(exc)[:200]}") from None
    import torch

    if isinstance(source, torch.nn.Module):
        if input_shape is None:
            raise TVMError("a torch module needs input_shape (such as 1,3,224,224) to be exported")
        source = torch.export.export(source.eval(), (torch.zeros(*input_shape),))
    if not isinstance(source, torch.export.ExportedProgram):
        raise TVMError(f"cannot import a {type(source).__name__}: give a torch module, an ExportedProgram, or a "
                       ".pt2 or .onnx file")
    from tvm.relax.frontend.torch import from_exported_program

    with warnings.catch_warnings():  # torch 2.13's decompositions, which TVM runs, warn about torch's own pytree
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        return detach_params(from_exported_program(source, keep_params_as_input=True))


def legalize_steps(target: Any = "llvm") -> list[Any]:
    """The passes between import and scheduling, as `compile_relax` runs them for `target` (library dispatch,
    operators legalized to TIR, then fused): tuning and compiling both prepare the module with these, once,
    so the database's keys match."""
    load_tvm()
    from tvm import relax
    from tvm.relax import pipeline as rp

    return [*rp.library_dispatch_passes(resolve_target(target)), relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(), relax.transform.FuseOps(),
            relax.transform.FuseTIR()]


def legalized(mod: Any, target: Any = "llvm") -> Any:
    """What TVM's tuning flow tunes: `mod` after `legalize_steps`, as `compile_relax` prepares it."""
    tvm = load_tvm()
    from tvm import relax

    return tvm.transform.Sequential([*legalize_steps(target), relax.transform.DeadCodeElimination(["main"])])(mod)


@contextmanager
def working_database(folder: str | os.PathLike[str]) -> Iterator[Any]:
    """A JSON tuning database over a working copy of `folder`: MetaSchedule appends there, and the whole
    records replace the folder's files when the block ends or the process is interrupted, so the database
    stays loadable and resumable."""
    folder = checked_database(folder)
    with temporary_folder(folder.parent) as work, on_interrupt(lambda: save_database(work, folder)):
        for file in DATABASE_FILES:
            if (folder / file).exists():
                shutil.copyfile(folder / file, work / file)
        try:
            yield open_database(work)
        finally:
            save_database(work, folder)


@dataclass
class TunedModel:
    """A model prepared for TVM: the module to compile (convolutions rewritten when `algorithm` was given),
    the rewrite report, and the tuning run (database folder, trial budget, new trials, seconds, and the
    records the database holds after it: MetaSchedule's last round can pass the budget by a few)."""

    mod: Any
    report: Any = None
    db: str | None = None
    trials: int = 0
    new_trials: int = 0
    seconds: float = 0.0
    tasks: list[str] = field(default_factory=list)
    records: int = 0


def for_inference(mod: Any, params: Any) -> Any:
    """The standard preparation of an imported model for inference in TVM: parameters bound, BatchNorm folded
    into the convolutions before it (FoldBatchnormToConv2D) and the rest decomposed into elementwise
    arithmetic (DecomposeOpsForInference), constants folded.  TVM alone and novagen both start from it."""
    tvm = load_tvm()
    from tvm import relax

    return tvm.transform.Sequential([relax.transform.FoldBatchnormToConv2D(),
                                     relax.transform.DecomposeOpsForInference(),
                                     relax.transform.FoldConstant()])(bind_params(mod, params))


def prepare(mod: Any, params: Any, algorithm: str | None = "auto", target: Any = "llvm",
            schedule: str = "fusable") -> TunedModel:
    """Prepare for inference (`for_inference`) and, with `algorithm`, rewrite the convolutions: the module
    `tune` and `compile_model` take (`schedule` as in `rewrite_conv2d`).  "fusable" by default: novagen's
    functions take the elementwise work after them (bias, residual add, ReLU) into their output blocks, which
    `tune` and `compile_model` legalize and fuse the same way (on ResNet-18, tuned, 5 % faster than
    "tunable", whose direct kernels leave bias and ReLU to separate passes over the output)."""
    ready = for_inference(mod, params)
    if algorithm is None:
        return TunedModel(ready)
    new, report = rewrite_conv2d(ready, algorithm, target=target, schedule=schedule, return_report=True)
    return TunedModel(new, report)


def space_size(task: Any, target: Any) -> int | None:
    """How many distinct schedules a novagen task's design space holds (the product of its sampled decisions'
    option counts), or None for TVM's own tasks, whose spaces are open-ended."""
    load_tvm()
    from tvm.s_tir import meta_schedule as ms

    from novagen.backends.tvm.schedule import is_novagen

    if not is_novagen(task.dispatched[0]["main"]):
        return None
    ctx = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator="post-order-apply",
                         search_strategy="evolutionary")
    trace = ctx.space_generator.generate_design_space(ctx.mod)[0].trace  # novagen's rule gives one space
    return math.prod(len(inst.attrs[0]) for inst in trace.insts if inst.kind.name == "SampleCategorical")


def tune(model: TunedModel, target: Any, db: str | os.PathLike[str], trials: int, seed: int = 0,
         trials_per_iter: int = 32) -> TunedModel:
    """Tune the whole module with MetaSchedule (novagen's functions through their rule), into the JSON
    database folder `db`, measuring in this process.  `trials` counts the records already there (resumed).

    novagen's design spaces are small (6 to 30 schedules) and MetaSchedule's task scheduler keeps picking a
    task whose space is exhausted, each round finding nothing new (tens of seconds each, for ever when the
    budget exceeds what the tasks can take).  So each novagen task is tuned first by itself for exactly its
    space (at most three quarters of the budget for all of them when TVM has tasks too), then TVM's own
    tasks share the rest, as `tune_relax` would share it."""
    import time

    load_tvm()
    from tvm.s_tir import meta_schedule as ms

    trials = whole("trials", trials, 1, 1_000_000)
    seed = limits_seed(seed)
    tgt = resolve_target(target)
    import_tensor_intrin()
    drop_unnamed_handlers()
    start = time.monotonic()
    legal = legalized(model.mod, tgt)
    tasks = [t for t in ms.relax_integration.extract_tasks(legal, tgt)
             if not t.dispatched[0]["main"].attrs.get("tirx.is_scheduled", False)]
    work_dir = str(db)  # MetaSchedule writes its logs to work_dir/logs

    def run(group: list[Any], budget: int, database: Any) -> None:
        ctxs, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(group, work_dir, seed=seed)
        ms.tune_tasks(tasks=ctxs, task_weights=weights, work_dir=work_dir, max_trials_global=budget,
                      max_trials_per_task=budget, num_trials_per_iter=min(trials_per_iter, budget),
                      builder=in_process_builder(), runner=in_process_runner(), database=database)

    with working_database(db) as database, quiet_console():
        before = len(database)
        todo = trials - before
        sizes = [space_size(t, tgt) for t in tasks] if todo > 0 else []
        theirs = [t for t, n in zip(tasks, sizes) if n is None]
        ours_budget = todo if not theirs else todo * 3 // 4
        for task, size in zip(tasks, sizes):
            if size is None or ours_budget <= 0:
                continue
            done = len(database.get_top_k(database.commit_workload(task.dispatched[0]), size))
            if (budget := min(size - done, ours_budget)) > 0:
                run([task], budget, database)
                ours_budget -= budget
        if (left := trials - len(database)) > 0 and theirs:
            run(theirs, left, database)
        records = len(database)
    return TunedModel(model.mod, model.report, str(db), trials, records - before, time.monotonic() - start,
                      [t.task_name for t in tasks], records)


def scheduled(mod: Any, target: Any = "llvm", database: Any = None) -> Any:
    """`mod` with every TIR function ready to lower, as `compile_relax` prepares it plus one step: legalized
    and fused as tuning did (so the database's keys match), the records of `database` applied, then novagen's
    functions without one given the rule's default schedule (`DefaultSchedule`); on a GPU, DLight schedules
    TVM's own functions without a record, as in `compile_relax`."""
    tvm = load_tvm()
    from tvm import relax
    from tvm.relax import pipeline as rp

    tgt = resolve_target(target)
    mod = tvm.transform.Sequential(legalize_steps(tgt))(mod)
    if database is not None:
        with tgt, database, tvm.transform.PassContext(opt_level=3):
            mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    mod = DefaultSchedule(tgt)(mod)
    if rp.BackendDispatcher.is_gpu_target(tgt):  # TVM's own functions without a record, as compile_relax does
        from tvm.s_tir import dlight as dl

        with tgt:
            mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                          dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)
    return mod


def lowering_steps(target: Any) -> list[Any]:
    """TVM's passes after scheduling for `target` (dataflow lowering, then finalization).  TVM 0.27's CPU
    backend defines its dataflow lowering but does not export it, so it is taken from its module."""
    load_tvm()
    from tvm.relax import pipeline as rp

    try:
        lower = rp.dataflow_lower_passes(target)
    except AttributeError:
        from tvm.relax.backend.cpu_generic.pipeline import dataflow_lower_passes

        lower = dataflow_lower_passes(target)
    return [*lower, *rp.finalize_passes(target)]


def compile_model(model: TunedModel | Any, target: Any = "llvm", db: str | os.PathLike[str] | None = None) -> Any:
    """The VM executable of `scheduled` (with the records of the tuning database folder `db`, if given)."""
    tvm = load_tvm()
    from tvm import relax

    mod = model.mod if isinstance(model, TunedModel) else model
    tgt = resolve_target(target)
    database = None if db is None else open_database(checked_database(db))

    @tvm.transform.module_pass(opt_level=3, name="novagen.compile_model")
    def pipeline(mod: Any, _ctx: Any) -> Any:
        mod = scheduled(mod, tgt, database)
        return tvm.transform.Sequential(lowering_steps(tgt))(mod)

    with tvm.transform.PassContext(opt_level=3), tgt:
        return relax.build(mod, target=tgt, relax_pipeline=pipeline)


def model_runner(ex: Any, x: Any, target: Any = "llvm") -> Any:
    """A forward pass as an application runs it: one VirtualMachine (its memory pool kept between calls) on
    the device of `target` (llvm: this CPU; cuda: GPU 0) and the input there once; calling the result returns
    the output as a tvm tensor, the device finished with it."""
    tvm = load_tvm()
    from tvm import relax

    dev = tvm.cuda(0) if resolve_target(target).kind.name == "cuda" else tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    xi = tvm.runtime.tensor(x, dev)
    fn = vm["main"]

    def run() -> Any:
        out = fn(xi)
        dev.sync()
        return out if hasattr(out, "numpy") else out[0]

    return run


def run_model(ex: Any, x: Any) -> Any:
    """One forward pass on NumPy input: the output as NumPy."""
    return model_runner(ex, x)().numpy()
