"""The C backend: a fused fp32 Winograd conv2d rendered from the transform programs, built with the
system C compiler, loaded with ctypes and cached by content hash.

The cache key is the sha256 of (algorithm hash, rendered source, compiler identity, flags); an entry
lives in `$NOVAGEN_CACHE_DIR/c/<key>/` (default `~/.cache/novagen`) and is used only when the key it
records matches.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from novagen.algebra import Algorithm
from novagen.backends.base import Backend, Option, choice, one_axis, positive_int
from novagen.backends.toolchain import BuildError, Library, build_library, find_compiler, tool_identity
from novagen.errors import InputError
from novagen.files import write_files
from novagen.layers import LAYOUTS, check_layout, output_hw
from novagen.program import programs, transform_cost
from novagen.reference import resolve_padding
from novagen.resources import templates
from novagen.version import __version__

FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-strict-aliasing", "-std=gnu11")
TEMPLATE = "winograd_conv2d"


class Shape(ctypes.Structure):
    """The kernel's `nv_shape`: one layer's dimensions, padding, layout, threads, stages and fused max pool."""

    _fields_ = [(name, ctypes.c_long) for name in ("n", "c", "h", "w", "k", "oh", "ow", "pad_top", "pad_left")] + [
        ("relu", ctypes.c_int), ("threads", ctypes.c_int), ("tile_block", ctypes.c_long),
        ("budget_bytes", ctypes.c_long), ("layout", ctypes.c_int), ("stages", ctypes.c_int), ("pool", ctypes.c_int)]
ALL_STAGES = 7
"""Stage bits of the kernel: 1 input transform, 2 channel GEMMs, 4 output transform."""


def prefix(alg: Algorithm) -> str:
    """C symbol prefix of an algorithm's kernel: stable, short, from the content hash."""
    return f"nv_f{alg.m}_{alg.r}_{alg.content_hash[:10]}"


def check(alg: Any) -> Algorithm:
    """The 1D algorithm of a C kernel (tiles up to 16 × 16)."""
    alg = one_axis(alg, "C")
    if alg.alpha > 16:
        raise InputError(f"{alg.label}: tiles of alpha = {alg.alpha} > 16 are not supported by the C kernel")
    return alg


def pixel_groups(side: int, width: int = 8) -> list[dict[str, list[tuple[int, ...]]]]:
    """The side × side pixels of a tile, row-major, in groups of `width` (one register transpose each): per
    group its row segments (lane, row, column, length), the contiguous loads or stores of one channel, and its
    pixels (lane, row, column)."""
    groups = []
    for p0 in range(0, side * side, width):
        pixels = [(p - p0, p // side, p % side) for p in range(p0, min(p0 + width, side * side))]
        segments: list[tuple[int, ...]] = []
        for lane, i, j in pixels:
            if segments and segments[-1][1] == i:
                segments[-1] = (*segments[-1][:3], segments[-1][3] + 1)
            else:
                segments.append((lane, i, j, 1))
        groups.append({"segments": segments, "pixels": pixels})
    return groups


def render(alg: Algorithm) -> dict[str, str]:
    """The kernel's source files: {"<prefix>.c": ..., "<prefix>.h": ...}."""
    alg = check(alg)
    p = programs(alg)
    a, m, r = alg.alpha, alg.m, alg.r
    xs = [f"x{i}" for i in range(a)]
    ys = [f"y[{i} * sy]" for i in range(a)]
    env = templates("c")
    name = prefix(alg)

    def fmt(c: dict[str, int]) -> str:
        return f"{c['adds']}/{c['muls']}/{c['shifts']}"

    ctx = {
        "p": name, "label": alg.label, "version": __version__, "m": m, "r": r, "alpha": a,
        "hash": alg.content_hash, "guard": name.upper() + "_H",
        "counts": {"BT": fmt(p.BT.counts()), "AT": fmt(p.AT.counts()), "G": fmt(p.G.counts())},
        "bt_vec": p.BT.c_lines(xs, ys, "v8"), "at_vec": p.AT.c_lines(xs, ys[:m], "v8"),
        "bt_vec16": p.BT.c_lines(xs, ys, "v16"), "at_vec16": p.AT.c_lines(xs, ys[:m], "v16"),
        "bt_scalar": p.BT.c_lines(xs, ys, "float"), "at_scalar": p.AT.c_lines(xs, ys[:m], "float"),
        "g_scalar": p.G.c_lines(xs[:r], ys, "float"), "window_groups": pixel_groups(a),
    }
    return {f"{name}.c": env.get_template(f"{TEMPLATE}.c.j2").render(ctx),
            f"{name}.h": env.get_template(f"{TEMPLATE}.h.j2").render(ctx)}


def compiler_identity(cc: str) -> str:
    """First line of `cc --version`: part of the cache key."""
    return tool_identity(cc)


def build_command(cc: str, sources: list[str], output: str, flags: tuple[str, ...] = FLAGS) -> list[str]:
    return [cc, *flags, *sources, "-o", output, "-lm"]


def build_c_library(kind: str, key: str, files: dict[str, str], what: str, meta: dict[str, Any],
                    flags: tuple[str, ...] = FLAGS) -> Library:
    """Compile rendered C sources (or find them in the cache) with the host compiler: the cache key is `key`
    with the compiler, its version and the flags, which the library's metadata records too."""
    cc = find_compiler()
    ident = compiler_identity(cc)
    sources = [n for n in files if n.endswith(".c")]
    return build_library(kind, (key, cc, ident, " ".join(flags)), files,
                         lambda src, out: build_command(cc, [str(src / n) for n in sources], str(out), flags),
                         what, {**meta, "compiler": ident, "flags": list(flags)})


def build(alg: Algorithm, flags: tuple[str, ...] = FLAGS) -> Library:
    """Compile (or find in the cache) the shared library of an algorithm's kernel."""
    alg = check(alg)
    return build_c_library("c", alg.content_hash, render(alg), f"the {alg.label} C kernel",
                           {"algorithm": alg.label, "hash": alg.content_hash, "prefix": prefix(alg)}, flags)


@functools.lru_cache(maxsize=64)
def _load(path: str, name: str) -> Any:
    lib = ctypes.CDLL(path)
    ptr, shape = ctypes.c_void_p, ctypes.POINTER(Shape)
    for fn, args, res in (("tile_block", [shape], ctypes.c_long), ("local_chunk", [shape], ctypes.c_long),
                          ("workspace_floats", [shape], ctypes.c_long),
                          ("weight_floats", [shape], ctypes.c_long), ("transform_weights", [shape, ptr, ptr], None),
                          ("conv2d", [shape, ptr, ptr, ptr, ptr, ptr], None), ("input_tile", [ptr, ptr], None),
                          ("output_tile", [ptr, ptr], None), ("filter_tile", [ptr, ptr], None),
                          ("ukernel_gflops", [ctypes.c_int, ctypes.c_long], ctypes.c_double),
                          ("panel", [], ctypes.c_int)):
        f = getattr(lib, f"{name}_{fn}")
        f.argtypes, f.restype = args, res
    return lib


class KernelLibrary:
    """The built kernel of one algorithm, called through raw pointers: what `Kernel` (NumPy) and the PyTorch
    operator (`novagen.torch`) both run.  Float buffers may be NumPy arrays or torch tensors; U must be
    32-byte aligned (both allocators give 64)."""

    def __init__(self, alg: Algorithm, flags: tuple[str, ...] = FLAGS) -> None:
        self.algorithm = check(alg)
        self.built = build(self.algorithm, flags)
        self.prefix = prefix(self.algorithm)
        self._lib = _load(str(self.built.path), self.prefix)

    def fn(self, name: str) -> Any:
        return getattr(self._lib, f"{self.prefix}_{name}")

    def shape(self, n: int, c: int, h: int, w: int, k: int, pads: Any, layout: str = "NCHW",
              threads: int | None = None, relu: bool = False, tile_block: int = 0, pool: int = 0) -> Shape:
        """The nv_shape of a layer; InputError when the padded input is smaller than the kernel, or for a fused
        max pool (`pool` 2: y is the 2×2 stride-2 max pool of the output) the tile cannot hold its windows."""
        (pt, pb), (pl, pr) = pads
        r = self.algorithm.r
        oh, ow = h + pt + pb - r + 1, w + pl + pr - r + 1
        if oh < 1 or ow < 1:
            raise InputError(f"input {h}x{w} with padding {pads} is smaller than the {r}x{r} kernel")
        if not self.pools(pool):
            raise InputError(f"{self.algorithm.label} cannot fuse a {pool}x{pool} max pool: its {self.algorithm.m}x"
                             f"{self.algorithm.m} tiles would split windows (pool 2 needs tiles of even side)")
        if pool and min(oh, ow) < pool:
            raise InputError(f"a {pool}x{pool} max pool needs an output of at least {pool}x{pool}, got {oh}x{ow}")
        return Shape(n, c, h, w, k, oh, ow, pt, pl, int(relu), threads or os.cpu_count() or 1, tile_block, 0,
                     LAYOUTS.index(layout), ALL_STAGES, pool)

    def pools(self, pool: int) -> bool:
        """Whether the kernel can compute a `pool` × `pool` stride-`pool` max pool of its output (0: none):
        2, with tiles of even side, whose windows never straddle two tiles."""
        return pool == 0 or pool == 2 and self.algorithm.m % 2 == 0

    def weight_floats(self, s: Shape) -> int:
        return int(self.fn("weight_floats")(ctypes.byref(s)))

    @property
    def panel(self) -> int:
        """Output channels per GEMM panel (32 with AVX-512, else 16): U pads K to a multiple of it."""
        return int(self.fn("panel")())

    def workspace_floats(self, s: Shape) -> int:
        return int(self.fn("workspace_floats")(ctypes.byref(s)))

    def transform_weights(self, s: Shape, w: int, u: int) -> None:
        """U (weight_floats) from w (K, C, r, r), by data pointers."""
        self.fn("transform_weights")(ctypes.byref(s), w, u)

    def conv2d(self, s: Shape, x: int, u: int, bias: int | None, y: int, work: int) -> None:
        """y from x and U (+ bias), by data pointers, with a workspace of workspace_floats."""
        self.fn("conv2d")(ctypes.byref(s), x, u, bias, y, work)


@functools.lru_cache(maxsize=64)
def kernel_library(alg: Algorithm, flags: tuple[str, ...] = FLAGS) -> KernelLibrary:
    """The KernelLibrary of an algorithm, built once per process (algorithms compare by their exact matrices)."""
    return KernelLibrary(alg, flags)


def _aligned(n: int) -> np.ndarray:
    buf = np.empty(n + 16, dtype=np.float32)
    off = (-buf.ctypes.data % 64) // 4
    return buf[off:off + n]


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


class Kernel:
    """A compiled conv2d for one algorithm: `kernel(x, w, bias=None)` → y, float32.

    layout "NCHW": x (N, C, H, W) → y (N, K, OH, OW); "NHWC": x (N, H, W, C) → y (N, OH, OW, K).
    Weights are (K, C, r, r) in both.  With `relu` the kernel applies a ReLU, with `pool=2` a 2×2 stride-2 max
    pool (even tiles only): y is then (OH // 2, OW // 2).

    The transformed weights are cached for the last `w` passed (by identity): after changing the
    values of the same array in place, call `set_weights(w)`.
    """

    def __init__(self, alg: Algorithm, padding: Any = 1, layer: tuple[int, ...] | None = None, relu: bool = False,
                 threads: int | None = None, tile_block: int = 0, layout: str = "NCHW",
                 flags: tuple[str, ...] = FLAGS, pool: int = 0) -> None:
        self.algorithm = check(alg)
        self.layout = check_layout(layout)
        self.pads = resolve_padding(padding, (self.algorithm.r, self.algorithm.r))
        self.relu = relu
        self.pool = pool
        self.threads = threads or os.cpu_count() or 1
        self.tile_block = tile_block
        self.library = kernel_library(self.algorithm, tuple(flags))
        self.built = self.library.built
        self.prefix = self.library.prefix
        self.layer = tuple(int(v) for v in layer) if layer is not None else None
        if self.layer is not None and len(self.layer) != 5:
            raise InputError(f"layer {layer} must be (N, C, H, W, K)")
        self._shape: Shape | None = None
        self._key: tuple[int, ...] | None = None
        self._work: np.ndarray | None = None
        self._w: np.ndarray | None = None
        self._u: np.ndarray | None = None

    def _fn(self, name: str) -> Any:
        return self.library.fn(name)

    def _shape_for(self, x_shape: tuple[int, ...], k: int) -> Shape:
        n, c, h, w = x_shape
        return self.library.shape(n, c, h, w, k, self.pads, self.layout, self.threads, self.relu, self.tile_block,
                                  self.pool)

    def _prepare(self, x_shape: tuple[int, ...], k: int) -> Shape:
        key = (*x_shape, k)
        if key != self._key:
            self._shape = self._shape_for(x_shape, k)
            self._work = _aligned(self._fn("workspace_floats")(ctypes.byref(self._shape)))
            self._key = key
            self._w = None
        assert self._shape is not None
        return self._shape

    def set_weights(self, w: np.ndarray) -> None:
        """Transform the weights (K, C, r, r) now and keep them for the next calls."""
        w = np.ascontiguousarray(w, dtype=np.float32)
        if self._shape is None or w.shape[:2] != (self._shape.k, self._shape.c):
            n, c, h, wd = self._key[:4] if self._key else (1, w.shape[1], 8, 8)
            self._prepare((n, w.shape[1], h, wd) if self._key else (1, c, h, wd), w.shape[0])
        s = self._shape
        assert s is not None
        u = _aligned(self._fn("weight_floats")(ctypes.byref(s)))
        self._fn("transform_weights")(ctypes.byref(s), _ptr(w), _ptr(u))
        self._w, self._u = w, u

    def __call__(self, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None,
                 out: np.ndarray | None = None, stages: int = ALL_STAGES) -> np.ndarray:
        """y for input x and weights w (+ bias); `out`, a C-contiguous float32 array of y's shape, is
        written in place of a new array (saves the page faults of a fresh large array per call).
        `stages` runs only some stages (bits of ALL_STAGES), for profiling one of them."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        r = self.algorithm.r
        nhwc = self.layout == "NHWC"
        nchw_shape = (x.shape[0], x.shape[3], x.shape[1], x.shape[2]) if nhwc and x.ndim == 4 else x.shape
        if x.ndim != 4 or w.ndim != 4 or tuple(w.shape[2:]) != (r, r) or w.shape[1] != nchw_shape[1]:
            raise InputError(f"expected x {'(N, H, W, C)' if nhwc else '(N, C, H, W)'} and w (K, C, {r}, {r}); "
                             f"got x {x.shape} and w {w.shape}")
        if self.layer is not None and (*nchw_shape, w.shape[0]) != self.layer:
            raise InputError(f"this kernel was compiled for layer {self.layer} (N, C, H, W, K); "
                             f"got x {x.shape} ({self.layout}) and {w.shape[0]} filters")
        s = self._prepare(tuple(nchw_shape), int(w.shape[0]))
        if w is not self._w:
            self.set_weights(w)
        if bias is not None:
            bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
            if bias.size != s.k:
                raise InputError(f"bias has {bias.size} values, expected {s.k}")
        oh, ow = (s.oh // s.pool, s.ow // s.pool) if s.pool else (s.oh, s.ow)
        y_shape = (s.n, oh, ow, s.k) if nhwc else (s.n, s.k, oh, ow)
        if out is None:
            y = np.empty(y_shape, dtype=np.float32)
        elif out.shape != y_shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise InputError(f"out must be a C-contiguous float32 array of shape {y_shape}, "
                             f"got {out.dtype} {out.shape}")
        else:
            y = out
        s.stages = stages
        try:
            self._fn("conv2d")(ctypes.byref(s), _ptr(x), _ptr(self._u), _ptr(bias), _ptr(y), _ptr(self._work))
        finally:
            s.stages = ALL_STAGES
        return y

    def gemm_flops(self) -> float:
        """FLOPs of the channel-GEMM stage for the shape of the last call, as the kernel computes them
        (tiles padded to its tile block, K to the GEMM panel, C as given)."""
        if self._shape is None:
            raise InputError("call the kernel once first: the GEMM size depends on the input shape")
        s, alg = self._shape, self.algorithm
        tiles = s.n * math.ceil(s.oh / alg.m) * math.ceil(s.ow / alg.m)
        tb = self._fn("tile_block")(ctypes.byref(s))
        panel = int(self._fn("panel")())
        return 2.0 * alg.alpha ** 2 * math.ceil(tiles / tb) * tb * s.c * (-(-s.k // panel) * panel)

    def ukernel_gflops(self, reps: int = 200_000) -> float:
        """GFLOP/s of the GEMM micro-kernel on cache-resident data with all threads (best of 3)."""
        return max(self._fn("ukernel_gflops")(self.threads, reps) for _ in range(3))

    def transform_tile(self, which: str, tile: np.ndarray) -> np.ndarray:
        """Run one 2D transform of the compiled code on one tile: "input" (BT d B), "output" (AT m A)
        or "filter" (G g Gᵀ); for checking the generated programs against the matrices."""
        a, m, r = self.algorithm.alpha, self.algorithm.m, self.algorithm.r
        sizes = {"input": (a, a), "output": (a, m), "filter": (r, a)}
        if which not in sizes:
            raise InputError(f"transform '{which}' is not one of input, output, filter")
        n_in, n_out = sizes[which]
        t = np.ascontiguousarray(tile, dtype=np.float32).reshape(n_in, n_in)
        out = np.zeros((n_out, n_out), dtype=np.float32)
        self._fn(f"{which}_tile")(_ptr(t), _ptr(out))
        return out


def compile_kernel(alg: Algorithm, layer: tuple[int, ...] | None = None, padding: Any = 1, **options: Any) -> Kernel:
    """Build (or load from the cache) the C kernel of `alg` for fp32 conv2d."""
    return Kernel(alg, padding=padding, layer=layer, **options)


def _readme(alg: Algorithm, name: str, layer: tuple[int, ...] | None, padding: Any, cmd: list[str]) -> str:
    p = programs(alg)
    cost = transform_cost(alg)
    shape = "any shape" if layer is None else "N, C, H, W, K = " + ", ".join(map(str, layer))
    lines = [
        f"# {name}: fused Winograd conv2d, {alg.label}",
        "",
        f"Generated by novagen for {alg.label} (F({alg.m}x{alg.m},{alg.r}x{alg.r}), tile {alg.alpha}x{alg.alpha}, "
        f"sha256 {alg.content_hash}); layer: {shape}, padding {padding}.",
        "fp32, NCHW in and out, weights (K, C, r, r). The shape is given at run time in an `nv_shape`.",
        "",
        "Calls, in order:",
        "",
        f"1. `{name}_weight_floats(&s)` and `{name}_workspace_floats(&s)`: buffer sizes in floats.",
        f"2. `{name}_transform_weights(&s, w, u)`: once per weight tensor.",
        f"3. `{name}_conv2d(&s, x, u, bias_or_NULL, y, work)`: per input.",
        "",
        "Start from a zeroed `nv_shape s = {0};`, then set the layer's fields, `s.stages = 7` (all stages) and",
        "`s.threads` to the number of OpenMP threads; `s.pool = 2` makes y the 2x2 stride-2 max pool of the output",
        f"(oh / 2, ow / 2){'' if alg.m % 2 == 0 else ' (not with this algorithm: its tiles have odd side)'}.",
        "",
        "Transform programs (adds/muls/shifts, shared subexpressions; dense product in brackets):",
        "",
    ]
    for label, prog, M in (("BT", p.BT, alg.BT), ("AT", p.AT, alg.AT), ("G", p.G, alg.G)):
        c = prog.counts()
        lines.append(f"- {label}: {c['adds']}/{c['muls']}/{c['shifts']} = {c['total']} "
                     f"({len(M) * (2 * len(M[0]) - 1)})")
    lines += [f"- one 2D tile (input + output transforms): {cost['total']} ({cost['naive']['total']})", "",
              "Build:", "", "```", " ".join(shlex.quote(c) for c in cmd), "```", ""]
    return "\n".join(lines)


def generate(alg: Algorithm, out_dir: str | Path, layer: tuple[int, ...] | None = None,
             padding: int = 1, overwrite: bool = False) -> list[Path]:
    """Write the kernel's .c and .h, a Makefile, build.sh and a README into `out_dir`."""
    alg = check(alg)
    if layer is not None:
        output_hw(layer, alg.r, padding)
    files = render(alg)
    name = prefix(alg)
    try:
        cc = Path(find_compiler()).name
    except BuildError:
        cc = "cc"
    cmd = build_command(cc, [f"{name}.c"], f"lib{name}.so", FLAGS)
    files["Makefile"] = (f"CC ?= {cc}\nCFLAGS ?= {' '.join(FLAGS)}\n\nlib{name}.so: {name}.c {name}.h\n"
                         f"\t$(CC) $(CFLAGS) {name}.c -o $@ -lm\n\nclean:\n\trm -f lib{name}.so\n")
    files["build.sh"] = "#!/bin/sh\nset -e\ncd \"$(dirname \"$0\")\"\n" + " ".join(shlex.quote(c) for c in cmd) + "\n"
    files["README.md"] = _readme(alg, name, layer, padding, cmd)
    return write_files(out_dir, files, overwrite, executable=("build.sh",))


BACKENDS = (Backend(
    name="c",
    summary="fused fp32 Winograd conv2d in C (AVX2/AVX-512, OpenMP), built with the system compiler",
    generate=generate,
    compile=compile_kernel,
    compile_options=(
        Option("relu", "apply ReLU to the output", False, bool),
        Option("threads", "OpenMP threads (default: all cores)", None, positive_int("threads", 1, 4096)),
        Option("tile_block", "tiles per block (0: automatic)", 0, positive_int("tile_block", 0)),
        Option("layout", "NCHW or NHWC", "NCHW", choice("layout", LAYOUTS, str.upper)),
        Option("pool", "2: also the 2x2 stride-2 max pool of the output (even tiles), 0: none", 0,
               lambda v: int(choice("pool", ("0", "2"))(v))),
        Option("flags", "compiler flags", FLAGS, tuple),
    ),
),)
