"""Code-generation targets, found by name.

Every module or package under `novagen/backends/` that defines `BACKENDS` (a tuple of `base.Backend`)
is a target: adding a target means adding one module and its templates.  Modules are imported when the
registry is first read; each imports its heavy dependencies (TVM, torch) only when used.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from novagen.backends.base import Backend, Option
from novagen.errors import InputError

__all__ = ["Backend", "Option", "backend", "registry", "target_names"]


@lru_cache(maxsize=1)
def registry() -> dict[str, Backend]:
    """Target name → Backend, in the order the modules sort."""
    found: dict[str, Backend] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for b in getattr(module, "BACKENDS", ()):
            if b.name in found:
                raise RuntimeError(f"two backends claim the target name {b.name}")
            found[b.name] = b
    return found


def target_names(runnable: bool = False) -> tuple[str, ...]:
    """Every target name; with `runnable`, those whose kernels can be compiled and run in Python."""
    return tuple(n for n, b in registry().items() if not runnable or b.compile is not None)


def backend(target: str) -> Backend:
    """The Backend of a target name; InputError listing the targets for an unknown one."""
    targets = registry()
    if target not in targets:
        raise InputError(f"target '{target}' is not known: use one of {', '.join(targets)}")
    return targets[target]
