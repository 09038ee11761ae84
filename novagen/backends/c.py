"""The C backend: a fused fp32 Winograd conv2d rendered from the transform programs, built with the
system C compiler, loaded with ctypes and cached by content hash.

The cache key is the sha256 of (algorithm hash, rendered source, compiler identity, flags); an entry
lives in `$NOVAGEN_CACHE_DIR/c/<key>/` (default `~/.cache/novagen`) and is used only when the key it
records matches.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from novagen import __version__
from novagen.algebra import Algorithm
from novagen.catalog import data_dir
from novagen.errors import InputError, NovagenError
from novagen.program import programs
from novagen.reference import resolve_padding

FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-strict-aliasing", "-std=gnu11")
TEMPLATE = "winograd_conv2d"


class BuildError(NovagenError):
    """No C compiler, or the compiler rejected the generated kernel."""

    exit_code = 2


class _Shape(ctypes.Structure):
    _fields_ = [(name, ctypes.c_long) for name in ("n", "c", "h", "w", "k", "oh", "ow", "pad_top", "pad_left")] + [
        ("relu", ctypes.c_int), ("threads", ctypes.c_int), ("tile_block", ctypes.c_long),
        ("budget_bytes", ctypes.c_long), ("layout", ctypes.c_int), ("stages", ctypes.c_int)]
LAYOUTS = ("NCHW", "NHWC")


def prefix(alg: Algorithm) -> str:
    """C symbol prefix of an algorithm's kernel: stable, short, from the content hash."""
    return f"nv_f{alg.m}_{alg.r}_{alg.content_hash[:10]}"


def _check_alg(alg: Any) -> Algorithm:
    if not isinstance(alg, Algorithm):
        raise InputError(f"the C backend takes a 1D algorithm such as F(6,3)/nova (used on both axes), got {alg!r}")
    if alg.alpha > 16:
        raise InputError(f"{alg.label}: tiles of alpha = {alg.alpha} > 16 are not supported by the C kernel")
    return alg


def render(alg: Algorithm) -> dict[str, str]:
    """The kernel's source files: {"<prefix>.c": ..., "<prefix>.h": ...}."""
    import jinja2

    alg = _check_alg(alg)
    p = programs(alg)
    a, m, r = alg.alpha, alg.m, alg.r
    xs = [f"x{i}" for i in range(a)]
    ys = [f"y[{i} * sy]" for i in range(a)]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates") / "c")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    name = prefix(alg)

    def fmt(c: dict[str, int]) -> str:
        return f"{c['adds']}/{c['muls']}/{c['shifts']}"

    ctx = {
        "p": name, "label": alg.label, "version": __version__, "m": m, "r": r, "alpha": a,
        "hash": alg.content_hash, "guard": name.upper() + "_H",
        "counts": {"BT": fmt(p.BT.counts()), "AT": fmt(p.AT.counts()), "G": fmt(p.G.counts())},
        "bt_vec": p.BT.c_lines(xs, ys, "v8"), "at_vec": p.AT.c_lines(xs, ys[:m], "v8"),
        "bt_scalar": p.BT.c_lines(xs, ys, "float"), "at_scalar": p.AT.c_lines(xs, ys[:m], "float"),
        "g_scalar": p.G.c_lines(xs[:r], ys, "float"),
    }
    return {f"{name}.c": env.get_template(f"{TEMPLATE}.c.j2").render(ctx),
            f"{name}.h": env.get_template(f"{TEMPLATE}.h.j2").render(ctx)}


def find_compiler() -> str:
    """$CC, else cc, gcc or clang on PATH."""
    cc = os.environ.get("CC")
    candidates = [cc] if cc else ["cc", "gcc", "clang"]
    for c in candidates:
        path = shutil.which(shlex.split(c)[0]) if c else None
        if path:
            return path
    raise BuildError("no C compiler found: install gcc or clang, or set CC to one")


@functools.lru_cache(maxsize=8)
def compiler_identity(cc: str) -> str:
    """First line of `cc --version`: part of the cache key."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise BuildError(f"cannot run the C compiler {cc}: {exc.strerror}") from None
    return (out.stdout.splitlines() or ["unknown"])[0]


def cache_dir() -> Path:
    """$NOVAGEN_CACHE_DIR, else $XDG_CACHE_HOME/novagen, else ~/.cache/novagen."""
    root = os.environ.get("NOVAGEN_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "novagen"


def build_command(cc: str, sources: list[str], output: str, flags: tuple[str, ...] = FLAGS) -> list[str]:
    return [cc, *flags, *sources, "-o", output, "-lm"]


@dataclass(frozen=True)
class Built:
    """A compiled kernel library and how it was made."""

    path: Path
    key: str
    prefix: str
    compiler: str
    flags: tuple[str, ...]
    cached: bool


def build(alg: Algorithm, flags: tuple[str, ...] = FLAGS) -> Built:
    """Compile (or find in the cache) the shared library of an algorithm's kernel."""
    alg = _check_alg(alg)
    files = render(alg)
    cc = find_compiler()
    ident = compiler_identity(cc)
    h = hashlib.sha256()
    for part in (alg.content_hash, *(files[k] for k in sorted(files)), cc, ident, " ".join(flags)):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()
    folder = cache_dir() / "c" / key[:32]
    lib = folder / "kernel.so"
    meta = folder / "key.json"
    if lib.is_file() and meta.is_file():
        try:
            if json.loads(meta.read_text()).get("key") == key:
                return Built(lib, key, prefix(alg), ident, flags, True)
        except (OSError, json.JSONDecodeError):
            pass
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        out = Path(tmp) / "kernel.so"
        cmd = build_command(cc, [str(Path(tmp) / n) for n in files if n.endswith(".c")], str(out), flags)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
            raise BuildError(f"{Path(cc).name} failed on the {alg.label} kernel: {first}")
        os.replace(out, lib)
        for name, text in files.items():
            (folder / name).write_text(text)
        meta.write_text(json.dumps({"key": key, "algorithm": alg.label, "hash": alg.content_hash,
                                    "compiler": ident, "flags": list(flags)}))
    return Built(lib, key, prefix(alg), ident, flags, False)


@functools.lru_cache(maxsize=64)
def _load(path: str, name: str) -> Any:
    lib = ctypes.CDLL(path)
    ptr, shape = ctypes.c_void_p, ctypes.POINTER(_Shape)
    for fn, args, res in (("tile_block", [shape], ctypes.c_long), ("workspace_floats", [shape], ctypes.c_long),
                          ("weight_floats", [shape], ctypes.c_long), ("transform_weights", [shape, ptr, ptr], None),
                          ("conv2d", [shape, ptr, ptr, ptr, ptr, ptr], None), ("input_tile", [ptr, ptr], None),
                          ("output_tile", [ptr, ptr], None), ("filter_tile", [ptr, ptr], None),
                          ("ukernel_gflops", [ctypes.c_int, ctypes.c_long], ctypes.c_double)):
        f = getattr(lib, f"{name}_{fn}")
        f.argtypes, f.restype = args, res
    return lib


def _aligned(n: int) -> np.ndarray:
    buf = np.empty(n + 16, dtype=np.float32)
    off = (-buf.ctypes.data % 64) // 4
    return buf[off:off + n]


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


class Kernel:
    """A compiled conv2d for one algorithm: `kernel(x, w, bias=None)` → y, float32.

    layout "NCHW": x (N, C, H, W) → y (N, K, OH, OW); "NHWC": x (N, H, W, C) → y (N, OH, OW, K).
    Weights are (K, C, r, r) in both.

    The transformed weights are cached for the last `w` passed (by identity): after changing the
    values of the same array in place, call `set_weights(w)`.
    """

    def __init__(self, alg: Algorithm, padding: Any = 1, layer: tuple[int, ...] | None = None, relu: bool = False,
                 threads: int | None = None, tile_block: int = 0, layout: str = "NCHW",
                 flags: tuple[str, ...] = FLAGS) -> None:
        self.algorithm = _check_alg(alg)
        if str(layout).upper() not in LAYOUTS:
            raise InputError(f"layout '{layout}' is not supported: use NCHW or NHWC")
        self.layout = str(layout).upper()
        self.pads = resolve_padding(padding, (alg.r, alg.r))
        self.relu = relu
        self.threads = threads or os.cpu_count() or 1
        self.tile_block = tile_block
        self.built = build(alg, flags)
        self._lib = _load(str(self.built.path), self.built.prefix)
        self.layer = tuple(int(v) for v in layer) if layer is not None else None
        if self.layer is not None and len(self.layer) != 5:
            raise InputError(f"layer {layer} must be (N, C, H, W, K)")
        self._shape: _Shape | None = None
        self._key: tuple[int, ...] | None = None
        self._work: np.ndarray | None = None
        self._w: np.ndarray | None = None
        self._u: np.ndarray | None = None

    def _fn(self, name: str) -> Any:
        return getattr(self._lib, f"{self.built.prefix}_{name}")

    def shape_for(self, x_shape: tuple[int, ...], k: int) -> _Shape:
        n, c, h, w = x_shape
        (pt, pb), (pl, pr) = self.pads
        r = self.algorithm.r
        oh, ow = h + pt + pb - r + 1, w + pl + pr - r + 1
        if oh < 1 or ow < 1:
            raise InputError(f"input {h}x{w} with padding {self.pads} is smaller than the {r}x{r} kernel")
        return _Shape(n, c, h, w, k, oh, ow, pt, pl, int(self.relu), self.threads, self.tile_block, 0,
                      LAYOUTS.index(self.layout), 7)

    def _shape_ref(self) -> Any:
        return ctypes.byref(self._shape)

    def _prepare(self, x_shape: tuple[int, ...], k: int) -> _Shape:
        key = (*x_shape, k)
        if key != self._key:
            self._shape = self.shape_for(x_shape, k)
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
                 out: np.ndarray | None = None) -> np.ndarray:
        """y for input x and weights w (+ bias); `out`, a C-contiguous float32 array of y's shape, is
        written in place of a new array (saves the page faults of a fresh large array per call)."""
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
        y_shape = (s.n, s.oh, s.ow, s.k) if nhwc else (s.n, s.k, s.oh, s.ow)
        if out is None:
            y = np.empty(y_shape, dtype=np.float32)
        elif out.shape != y_shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise InputError(f"out must be a C-contiguous float32 array of shape {y_shape}, "
                             f"got {out.dtype} {out.shape}")
        else:
            y = out
        self._fn("conv2d")(ctypes.byref(s), _ptr(x), _ptr(self._u), _ptr(bias), _ptr(y), _ptr(self._work))
        return y

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
    """Build (or load from the cache) the C kernel of `alg` for NCHW fp32 conv2d."""
    return Kernel(alg, padding=padding, layer=layer, **options)
