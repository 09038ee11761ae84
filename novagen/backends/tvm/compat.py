"""Every workaround for a private or fragile TVM API, in one place.

Written against apache-tvm 0.27.0 with apache-tvm-ffi 0.1.14 (0.1.15.post2 segfaults in
`tvm.ir.save_json`, MetaSchedule's first database write, hence the pin in the `tvm` extra).  Each function
says what it relies on and why it is needed, so a TVM upgrade is checked here first:

- `import_tensor_intrin`: patches `inspect.getmodule` during one import (TVM 0.27: 46 s -> 6 s);
- `fast_tensor_intrinsics`: wraps `TuneContext.__init__` and `LocalBuilder._cls.__init__` (the class inside
  TVM's `derived_object`) so both import the tensor intrinsics the fast way, LocalBuilder's workers before
  their first build, outside the build timeout;
- `in_process_builder`: MetaSchedule's `local_builder.default_build` / `default_export` (module-level
  helpers of LocalBuilder, not exported);
- `in_process_runner`: `local_runner._worker_func` and `EvaluatorConfig._normalized` (private);
- `drop_unnamed_handlers`: MetaSchedule's logger set-up fails on a handler without a name;
- `quiet_console`: MetaSchedule binds a console log handler to sys.stdout when tuning starts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any


def import_tensor_intrin() -> None:
    """Import tvm.s_tir.tensor_intrin, which MetaSchedule needs in every process that tunes, builds or runs.

    Its ~500 TVMScript functions each call inspect.stack() while the import machinery is on the stack,
    and inspect.getmodule scans all of sys.modules for every "<frozen importlib...>" frame: 46 s here.
    Remembering getmodule's answer for those pseudo-files during the import takes it to 6 s."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    import inspect

    original = inspect.getmodule
    memo: dict[str, Any] = {}

    def getmodule(obj: Any, _filename: str | None = None) -> Any:
        key = _filename or getattr(getattr(obj, "f_code", obj), "co_filename", None)
        if not isinstance(key, str) or not key.startswith("<"):
            return original(obj, _filename)
        if key not in memo:
            memo[key] = original(obj, _filename)
        return memo[key]

    inspect.getmodule = getmodule
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.getmodule = original


def _initialize_worker(user_initializer: Callable[[], None] | None = None) -> None:
    """A LocalBuilder worker's initializer: the tensor intrinsics the fast way, then the user's own."""
    import_tensor_intrin()
    if user_initializer is not None:
        user_initializer()


def fast_tensor_intrinsics() -> None:
    """Import TVM's tensor intrinsics the fast way wherever MetaSchedule imports them, so a plain `tune_relax`
    works on a small machine.

    TVM 0.27 imports tvm.s_tir.tensor_intrin in TuneContext's constructor (this process) and inside each
    LocalBuilder worker's timed build.  A fresh process takes 42 s for it here with torch installed (tvm_ffi
    imports torch, and the import's cost grows with sys.modules) and 22 s without, against LocalBuilder's 30 s
    timeout, so every build of a plain `tune_relax` timed out, novagen's tasks or not.  This wraps both
    constructors (LocalBuilder's inner class, inside TVM's `derived_object`): TuneContext imports them with
    `import_tensor_intrin` first (6 s, once), and LocalBuilder's workers run it as their initializer, which
    PopenPool runs untimed, before a user's own initializer.  Idempotent."""
    from tvm.s_tir.meta_schedule import TuneContext
    from tvm.s_tir.meta_schedule.builder import LocalBuilder

    def wrap(cls: Any, before: Callable[..., tuple[tuple, dict]]) -> None:
        original = cls.__init__
        if getattr(original, "novagen_wrapped", False):
            return

        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            args, kwargs = before(*args, **kwargs)
            original(self, *args, **kwargs)

        __init__.novagen_wrapped = True  # type: ignore[attr-defined]
        cls.__init__ = __init__

    def builder_args(*args: Any, initializer: Callable[[], None] | None = None, **kwargs: Any) -> tuple[tuple, dict]:
        return args, {**kwargs, "initializer": functools.partial(_initialize_worker, initializer)}

    def context_args(*args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        import_tensor_intrin()
        return args, kwargs

    wrap(LocalBuilder._cls, builder_args)
    wrap(TuneContext, context_args)


def in_process_builder() -> Any:
    """A MetaSchedule builder that compiles and exports in this process: each LocalBuilder batch starts a
    worker that imports TVM, most of the time of a short tuning run.  Relies on the module-level
    `default_build` and `default_export` of `tvm.s_tir.meta_schedule.builder.local_builder` (TVM 0.27)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for inp in build_inputs:
                try:
                    results.append(ms.builder.BuilderResult(default_export(default_build(inp.mod, inp.target, None)),
                                                            None))
                except Exception as exc:  # a candidate that fails to build is recorded as an error
                    results.append(ms.builder.BuilderResult(None, f"in-process build: {exc}"))
            return results

    return InProcessBuilder()


def in_process_runner() -> Any:
    """A MetaSchedule runner that loads and times each candidate in this process (LocalRunner's own
    measurement: random arguments, time_evaluator with its default repeats).  Relies on the private
    `local_runner._worker_func` (its positional signature) and `EvaluatorConfig._normalized` (TVM 0.27):
    LocalRunner offers no in-process mode."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture, _worker_func

    config = ms.runner.EvaluatorConfig._normalized(None)

    @derived_object
    class InProcessRunner(ms.runner.PyRunner):
        def run(self, runner_inputs: list[Any]) -> list[Any]:
            futures = []
            for inp in runner_inputs:
                try:
                    costs = _worker_func(None, None, None, config, 1, inp.artifact_path, inp.device_type,
                                         tuple(a.as_json() for a in inp.args_info))
                    futures.append(LocalRunnerFuture([float(c) for c in costs], None))
                except Exception as exc:  # a candidate that fails to run is recorded as an error
                    futures.append(LocalRunnerFuture(None, f"in-process run: {exc}"))
            return futures

    return InProcessRunner()


def drop_unnamed_handlers() -> None:
    """MetaSchedule rebuilds its loggers from the names of the handlers already on its logger and fails
    on a handler without a name (pytest's log capture leaves such handlers behind between tests)."""
    import logging

    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(ms_logger.handlers):
        if handler.get_name() is None:
            ms_logger.removeHandler(handler)



@contextlib.contextmanager
def quiet_console() -> Iterator[None]:
    """Tune with stdout kept clean for the caller (`--json`): MetaSchedule's `create_loggers` binds its console
    handler to whatever sys.stdout is when tuning starts ("ext://sys.stdout"); pointing it at /dev/null for the
    run leaves the task tables in the log files of the work folder only."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield
