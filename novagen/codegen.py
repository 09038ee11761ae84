"""Code generation entry points: `compile` an algorithm into a callable kernel for this machine, or
`generate` a target's source and build files.  Both look the target up in `novagen.backends`' registry,
check the layer and padding once for every target, and hand the target only the options it declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from novagen.algebra import AnyAlgorithm
from novagen.backends import Backend, backend, registry
from novagen.errors import InputError
from novagen.layers import check_padding, parse_layer


def compile(alg: AnyAlgorithm | str, target: str = "c", layer: Any = None, padding: Any = 1,
            **options: Any) -> Any:
    """A fused conv2d kernel for `alg` on this machine: `kernel(x, w)` returns y.

    target "c" (options: relu, threads, tile_block, layout), "tvm-llvm" (a `novagen.tvm.Conv2d` for one
    layer; options: dtype, layout, weights), "cuda" on a machine with an NVIDIA GPU."""
    b = backend(target)
    if b.compile is None:
        raise InputError(f"target {target} does not run kernels in Python: use generate for it")
    reason = b.runs_here()
    if reason:
        raise InputError(f"target {target} cannot run here: {reason}")
    shape = parse_layer(layer)
    if shape is None and b.layer_required:
        raise InputError(f"target {target} builds a kernel for one layer: give layer=(N, C, H, W, K)")
    return b.compile(alg, shape, padding, **_options(b, "compile", options))


def generate(alg: AnyAlgorithm | str, out_dir: str | Path, target: str = "c", layer: Any = None,
             padding: Any = 1, overwrite: bool = False, **options: Any) -> list[Path]:
    """Write a target's source and build files into `out_dir` (created when missing); returns the paths
    written.  Files already there are overwritten only with `overwrite` (see `novagen.files`).

    Targets and their options: `novagen.backends.registry()` (c; cuda: dtype, arch; hls: bits;
    verilog: bits; tvm-llvm and tvm-cuda: dtype, layout, tuned).  Options left None take the target's
    default."""
    b = backend(target)
    shape = parse_layer(layer)
    if shape is None and b.layer_required:
        raise InputError(f"target {target} builds for one layer: give --layer N,C,H,W,K")
    given = {k: v for k, v in options.items() if v is not None}
    return b.generate(alg, out_dir, shape, check_padding(padding), overwrite=bool(overwrite),
                      **_options(b, "generate", given))


def _options(b: Backend, verb: str, given: dict[str, Any]) -> dict[str, Any]:
    """The target's checked options; refusing one it does not take names the targets that do."""
    try:
        return b.options_for(verb, given)
    except InputError as exc:
        declared = {o.name for o in (b.generate_options if verb == "generate" else b.compile_options)}
        others = {name: [t for t, o in registry().items()
                         if name in {x.name for x in (o.generate_options if verb == "generate" else o.compile_options)}]
                  for name in given if name not in declared}
        hints = [f"--{n.replace('_', '-')} is an option of {', '.join(ts)}" for n, ts in others.items() if ts]
        if not hints:
            raise
        raise InputError(f"{exc}; {'; '.join(hints)}") from None
