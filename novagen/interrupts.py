"""Ctrl-C that always works: a command runs in a worker thread while the main thread waits, so SIGINT is
handled at once even while the command sits in a long C++ call (a TVM build, LLVM, MetaSchedule).  The
handler runs the registered clean-ups (e.g. saving the complete records of a tuning database), removes the
temporary files being written, ends this process's child processes, prints one line and exits with 130.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from novagen.files import TEMPORARIES

INTERRUPTED = 130
_CLEANUPS: list[Callable[[], None]] = []


@contextmanager
def on_interrupt(cleanup: Callable[[], None]) -> Iterator[None]:
    """Run `cleanup` if the process is interrupted inside the block (before it exits)."""
    _CLEANUPS.append(cleanup)
    try:
        yield
    finally:
        _CLEANUPS.remove(cleanup)


def _child_pids() -> list[int]:
    """This process's descendants (psutil where installed, else Linux's /proc/<pid>/task/*/children)."""
    try:
        import psutil

        return [c.pid for c in psutil.Process().children(recursive=True)]
    except Exception:  # no psutil, or the process table changed under it
        pass
    found, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with suppress(OSError, ValueError):
                kids = [int(v) for v in task.read_text().split()]
                found += kids
                todo += kids
    return found


def abort(code: int = INTERRUPTED) -> None:
    """Clean up and end the process now (see the module docstring)."""
    for cleanup in reversed(list(_CLEANUPS)):
        with suppress(Exception):  # a failing clean-up must not keep the process alive
            cleanup()
    for path in list(TEMPORARIES):
        if os.path.isdir(path):
            for _ in range(5):  # the command's thread may still be writing into it (a tuning database)
                shutil.rmtree(path, ignore_errors=True)
                if not os.path.exists(path):
                    break
                time.sleep(0.02)
        else:
            with suppress(OSError):
                os.unlink(path)
    for pid in _child_pids():
        with suppress(OSError):  # already gone
            os.kill(pid, signal.SIGKILL)
    os.write(2, b"novagen: interrupted\n")
    os._exit(code)


def run_interruptibly(fn: Callable[[], Any]) -> Any:
    """fn() in a worker thread, SIGINT ending the process promptly (see the module docstring); called from a
    thread other than the main one, fn() just runs."""
    if threading.current_thread() is not threading.main_thread():
        return fn()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="novagen-command", daemon=True)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: abort())
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.05)
    finally:
        signal.signal(signal.SIGINT, previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def ignore_interrupts() -> None:
    """For worker processes: leave SIGINT to the parent, which ends them (no traceback from each)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
