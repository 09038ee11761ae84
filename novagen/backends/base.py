"""The contract every code-generation target keeps.

A target is one module (or package) under `novagen/backends/` that defines `BACKENDS`, a tuple of
`Backend` values, one per target name it serves.  A `Backend` says what the target makes:

- `generate(alg, out_dir, layer, padding, overwrite, **options) -> list[Path]`: source and build files
  for a layer (`layer` None where the target builds kernels for any shape), written through
  `novagen.files.write_files` (existing files only with `overwrite`);
- `compile(alg, layer, padding, **options)`: a callable kernel on this machine, where the target runs
  here (`runs_here()` says why not otherwise);

and which options each takes.  `novagen.codegen` finds targets in the registry of
`novagen.backends`, checks the options a target declares and hands it only those: an option a target
does not take is refused with one line naming the options it does take.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novagen.algebra import Algorithm
from novagen.errors import InputError


@dataclass(frozen=True)
class Option:
    """An option a target takes: its name, what it means, its default, and a check that returns the
    value to use or raises InputError naming the bad value."""

    name: str
    help: str
    default: Any = None
    check: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Backend:
    """One target: how to generate its files, how to compile a kernel here, and the options of each."""

    name: str
    summary: str
    generate: Callable[..., list[Path]]
    generate_options: tuple[Option, ...] = ()
    compile: Callable[..., Any] | None = None
    compile_options: tuple[Option, ...] = ()
    runs_here: Callable[[], str | None] = field(default=lambda: None)
    layer_required: bool = False

    def options_for(self, verb: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """The options to pass to `verb` ("generate" or "compile"): each given one checked, defaults for
        the rest; InputError naming an option the target does not take."""
        declared = {o.name: o for o in (self.generate_options if verb == "generate" else self.compile_options)}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            def flag(name: str) -> str:
                return "--" + name.replace("_", "-")

            takes = ", ".join(flag(n) for n in sorted(declared)) or "none"
            raise InputError(f"target {self.name} takes no option {', '.join(map(flag, unknown))} when it {verb}s "
                             f"(its options: {takes})")
        out = {}
        for name, opt in declared.items():
            value = given.get(name, opt.default)
            out[name] = opt.check(value) if opt.check is not None and value is not None else value
        return out


def one_axis(alg: Any, target: str) -> Algorithm:
    """The 1D algorithm a kernel nests on both axes: an `Algorithm`, or a catalog name or spec string;
    InputError for anything else (a 2D `Nested` algorithm, say)."""
    if isinstance(alg, str):
        from novagen.catalog import algorithm

        alg = algorithm(alg)
    if not isinstance(alg, Algorithm):
        raise InputError(f"the {target} target takes a 1D algorithm such as F(4,3)/nova, which the 2D conv nests "
                         f"on both axes; got {getattr(alg, 'label', alg)}")
    return alg


def choice(name: str, allowed: Sequence[str], normalize: Callable[[str], str] = str) -> Callable[[Any], str]:
    """A check accepting one of `allowed` (after `normalize`)."""
    def check(value: Any) -> str:
        v = normalize(str(value))
        if v not in allowed:
            raise InputError(f"{name} '{value}' is not supported: use {' or '.join(allowed)}")
        return v
    return check


def positive_int(name: str, minimum: int = 1, maximum: int | None = None) -> Callable[[Any], int]:
    """A check accepting whole numbers from `minimum` (to `maximum`)."""
    def check(value: Any) -> int:
        try:
            v = int(value)
            ok = not isinstance(value, bool) and float(value) == v
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok or v < minimum or (maximum is not None and v > maximum):
            top = f" to {maximum}" if maximum is not None else " or more"
            raise InputError(f"{name} {value!r} must be a whole number from {minimum}{top}")
        return v
    return check
