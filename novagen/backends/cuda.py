"""The CUDA backend: one fused Winograd conv2d kernel per algorithm for NVIDIA GPUs, rendered from the
transform programs, built with nvcc, loaded with ctypes (device memory from PyTorch).

The kernel (templates/cuda/winograd_conv2d.cu.j2) keeps 16 tiles × `kb` output channels per thread
block: input transform through shared memory in fp32, α² channel GEMMs on tensor cores (WMMA, fp16
operands, fp32 accumulators in registers), output transform, bias, ReLU, store.  x and y are fp16
(`dtype="fp16"`) or fp32; the Winograd-domain operands V and U are always fp16.

Without a GPU the kernels can still be compiled (`ptxas_report` reads registers and spills from
`ptxas -v`).  On a GPU machine: `python -m novagen.backends.cuda --selftest --bench`.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from novagen import __version__
from novagen.algebra import Algorithm
from novagen.backends.c import BuildError, cache_dir
from novagen.catalog import data_dir
from novagen.errors import InputError
from novagen.export import atomic_write
from novagen.program import programs

DTYPES = {"fp16": "__half", "fp32": "float"}
DEFAULT_ARCH = "sm_80"
NVCC_FLAGS = ("-O3", "-std=c++17", "-Xcompiler", "-fPIC", "-shared")


def prefix(alg: Algorithm, dtype: str = "fp16") -> str:
    """Symbol prefix of an algorithm's CUDA kernel: stable, short, from the content hash."""
    return f"nvcu_f{alg.m}_{alg.r}_{dtype}_{alg.content_hash[:10]}"


def _check(alg: Any, dtype: str) -> Algorithm:
    if not isinstance(alg, Algorithm):
        raise InputError(f"the CUDA backend takes a 1D algorithm such as F(4,3)/nova (used on both axes), got {alg!r}")
    if alg.alpha > 8:
        raise InputError(f"{alg.label}: tiles of alpha = {alg.alpha} > 8 are not supported by the CUDA kernel "
                         "(the fp32 scratch of alpha^2 x 256 values must fit in shared memory)")
    if dtype not in DTYPES:
        raise InputError(f"dtype '{dtype}' is not supported by the CUDA target: use fp16 or fp32")
    return alg


@dataclass(frozen=True)
class Layout:
    """Thread-block shape: warps, Winograd points per warp, 16-wide output-channel fragments."""

    warps: int
    xpw: int
    nf: int

    @property
    def kb(self) -> int:
        return 16 * self.nf


def layout(alg: Algorithm) -> Layout:
    """8 warps for α ≤ 4, else 16; each warp keeps xpw × nf accumulator fragments (≤ 8, 64 registers)."""
    a2 = alg.alpha ** 2
    warps = 8 if a2 <= 16 else 16
    xpw = math.ceil(a2 / warps)
    return Layout(warps, xpw, max(1, min(4, 8 // xpw)))


def render(alg: Algorithm, dtype: str = "fp16") -> dict[str, str]:
    """The kernel source: {"<prefix>.cu": ...}."""
    import jinja2

    alg = _check(alg, dtype)
    p = programs(alg)
    a, m, r = alg.alpha, alg.m, alg.r
    xs = [f"x{i}" for i in range(a)]
    ys = [f"y[{i}]" for i in range(a)]
    lay = layout(alg)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates") / "cuda")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    name = prefix(alg, dtype)

    def fmt(c: dict[str, int]) -> str:
        return f"{c['adds']}/{c['muls']}/{c['shifts']}"

    ctx = {
        "p": name, "label": alg.label, "version": __version__, "m": m, "r": r, "alpha": a, "a2": a * a,
        "hash": alg.content_hash, "io_t": DTYPES[dtype], "warps": lay.warps, "xpw": lay.xpw, "nf": lay.nf,
        "kb": lay.kb, "counts": {"BT": fmt(p.BT.counts()), "AT": fmt(p.AT.counts()), "G": fmt(p.G.counts())},
        "bt": p.BT.c_lines(xs, ys, "const float"), "at": p.AT.c_lines(xs, ys[:m], "const float"),
        "g": p.G.c_lines(xs[:r], ys, "const float"),
    }
    return {f"{name}.cu": env.get_template("winograd_conv2d.cu.j2").render(ctx)}


def find_nvcc() -> str:
    """$NVCC, else nvcc on PATH, else /usr/local/cuda/bin/nvcc."""
    for c in (os.environ.get("NVCC"), "nvcc", "/usr/local/cuda/bin/nvcc"):
        path = shutil.which(c) if c else None
        if path:
            return path
    raise BuildError("no nvcc found: install the CUDA toolkit, or set NVCC to the compiler")


@functools.lru_cache(maxsize=4)
def nvcc_identity(nvcc: str) -> str:
    """The release line of `nvcc --version`: part of the cache key."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except OSError as exc:
        raise BuildError(f"cannot run {nvcc}: {exc.strerror}") from None
    return next((ln for ln in out.splitlines() if "release" in ln), out.strip()[-80:])


def _arch(arch: str) -> str:
    if not re.fullmatch(r"sm_\d{2,3}a?", arch):
        raise InputError(f"arch '{arch}' is not a CUDA architecture such as sm_80 or sm_90")
    if int(re.sub(r"\D", "", arch)) < 70:
        raise InputError(f"arch {arch}: the kernel uses tensor cores (WMMA), which need sm_70 or newer")
    return arch


def nvcc_command(nvcc: str, source: str, output: str, arch: str = DEFAULT_ARCH) -> list[str]:
    """The build command of the shared library (ptxas statistics on)."""
    return [nvcc, *NVCC_FLAGS, f"-arch={_arch(arch)}", "--ptxas-options=-v", source, "-o", output]


@dataclass(frozen=True)
class KernelStats:
    """ptxas figures of one kernel: registers per thread, spill stores/loads in bytes, shared memory."""

    name: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int


_FUNC = re.compile(r"Compiling entry function '(\w+)'")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas(text: str) -> dict[str, KernelStats]:
    """Kernel name → KernelStats from `ptxas -v` output (the stderr of nvcc --ptxas-options=-v)."""
    stats: dict[str, KernelStats] = {}
    name, spill = None, (0, 0, 0)
    for line in text.splitlines():
        if (mt := _FUNC.search(line)) is not None:
            name, spill = mt.group(1), (0, 0, 0)
        elif (mt := _SPILL.search(line)) is not None:
            spill = tuple(int(v) for v in mt.groups())  # type: ignore[assignment]
        elif (mt := _REGS.search(line)) is not None and name is not None:
            stats[name] = KernelStats(name, int(mt.group(1)), spill[1], spill[2], spill[0])
    return stats


def ptxas_report(alg: Algorithm, dtype: str = "fp16", arch: str = DEFAULT_ARCH) -> dict[str, KernelStats]:
    """Compile the kernel to a cubin (no GPU needed) and return ptxas's figures per kernel."""
    files = render(alg, dtype)
    nvcc = find_nvcc()
    with tempfile.TemporaryDirectory() as tmp:
        (name, text), = files.items()
        src = Path(tmp) / name
        src.write_text(text)
        cmd = [nvcc, "-O3", "-std=c++17", f"-arch={_arch(arch)}", "--ptxas-options=-v", "-cubin", str(src),
               "-o", str(Path(tmp) / "k.cubin")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
        raise BuildError(f"nvcc failed on the {alg.label} CUDA kernel: {first}")
    return parse_ptxas(proc.stderr)


@dataclass(frozen=True)
class Built:
    """A compiled CUDA kernel library and how it was made."""

    path: Path
    key: str
    prefix: str
    arch: str
    stats: dict[str, KernelStats]
    cached: bool


def build(alg: Algorithm, dtype: str = "fp16", arch: str = DEFAULT_ARCH) -> Built:
    """Compile (or find in the cache, by content hash) the shared library of an algorithm's CUDA kernel."""
    files = render(alg, dtype)
    (name, text), = files.items()
    nvcc = find_nvcc()
    ident = nvcc_identity(nvcc)
    h = hashlib.sha256()
    for part in (alg.content_hash, text, nvcc, ident, arch, " ".join(NVCC_FLAGS)):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()
    folder = cache_dir() / "cuda" / key[:32]
    lib, meta = folder / "kernel.so", folder / "key.json"
    if lib.is_file() and meta.is_file():
        try:
            doc = json.loads(meta.read_text())
            if doc.get("key") == key:
                stats = {k: KernelStats(**v) for k, v in doc.get("ptxas", {}).items()}
                return Built(lib, key, prefix(alg, dtype), arch, stats, True)
        except (OSError, json.JSONDecodeError, TypeError):
            pass
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = Path(tmp) / name
        src.write_text(text)
        out = Path(tmp) / "kernel.so"
        proc = subprocess.run(nvcc_command(nvcc, str(src), str(out), arch), capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
            raise BuildError(f"nvcc failed on the {alg.label} CUDA kernel: {first}")
        stats = parse_ptxas(proc.stderr)
        os.replace(out, lib)
        (folder / name).write_text(text)
        meta.write_text(json.dumps({"key": key, "algorithm": alg.label, "hash": alg.content_hash, "nvcc": ident,
                                    "arch": arch, "ptxas": {k: vars(v) for k, v in stats.items()}}))
    return Built(lib, key, prefix(alg, dtype), arch, stats, False)


def gpu_arch() -> str | None:
    """sm_XY of the first CUDA device (through PyTorch), or None without a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm_{major}{minor}"


@functools.lru_cache(maxsize=32)
def _load(path: str, name: str) -> Any:
    lib = ctypes.CDLL(path)
    vp, ci = ctypes.c_void_p, ctypes.c_int
    for fn, args, res in (("weight_elems", [ci, ci], ctypes.c_long), ("info", [ctypes.POINTER(ci)], None),
                          ("transform_weights", [vp, vp, ci, ci, vp], ci),
                          ("conv2d", [vp, vp, vp, vp, ci, ci, ci, ci, ci, ci, ci, vp], ci),
                          ("emulate", [vp, vp, vp, vp, ci, ci, ci, ci, ci, ci, ci], None)):
        f = getattr(lib, f"{name}_{fn}")
        f.argtypes, f.restype = args, res
    return lib


def emulate(alg: Algorithm, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None, dtype: str = "fp16",
            padding: int = 1, relu: bool = False, arch: str = DEFAULT_ARCH) -> np.ndarray:
    """Run the generated kernel's stages on the CPU (`<prefix>_emulate` in the built library): the same
    transforms, shared-memory layouts and fp16 operands, the tensor-core GEMM written as loops.  For
    checking the CUDA source where there is no GPU; y in the kernel's dtype (float16 or float32)."""
    alg = _check(alg, dtype)
    np_t = np.float16 if dtype == "fp16" else np.float32
    x = np.ascontiguousarray(x, dtype=np_t)
    w = np.ascontiguousarray(w, dtype=np.float32)
    r = alg.r
    if x.ndim != 4 or w.ndim != 4 or w.shape[1] != x.shape[1] or tuple(w.shape[2:]) != (r, r):
        raise InputError(f"expected x (N, C, H, W) and w (K, C, {r}, {r}); got x {x.shape} and w {w.shape}")
    N, C, H, W = x.shape
    K = w.shape[0]
    oh, ow = H + 2 * padding - r + 1, W + 2 * padding - r + 1
    if oh < 1 or ow < 1:
        raise InputError(f"input {H}x{W} with padding {padding} is smaller than the {r}x{r} kernel")
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    y = np.zeros((N, K, oh, ow), dtype=np_t)
    built = build(alg, dtype, arch)
    lib = _load(str(built.path), built.prefix)
    getattr(lib, f"{built.prefix}_emulate")(x.ctypes.data, w.ctypes.data, None if b is None else b.ctypes.data,
                                            y.ctypes.data, N, C, H, W, K, padding, int(relu))
    return y


def info(alg: Algorithm, dtype: str = "fp16", arch: str = DEFAULT_ARCH) -> dict[str, int]:
    """What the built library says of its kernel: alpha, m, r, threads, kb, smem_bytes (no GPU needed)."""
    built = build(alg, dtype, arch)
    lib = _load(str(built.path), built.prefix)
    out = (ctypes.c_int * 6)()
    getattr(lib, f"{built.prefix}_info")(out)
    return dict(zip(("alpha", "m", "r", "threads", "kb", "smem_bytes"), out))


class CudaKernel:
    """A compiled CUDA conv2d for one algorithm: `kernel(x, w, bias=None)` on torch CUDA tensors.

    x (N, C, H, W) in the kernel's dtype (fp16 or fp32), w (K, C, r, r); returns y (N, K, OH, OW) in the
    same dtype.  Weights are transformed once per `w` object (fp16 U) and kept.
    """

    def __init__(self, alg: Algorithm, dtype: str = "fp16", padding: int = 1, relu: bool = False,
                 arch: str | None = None) -> None:
        import torch

        if not torch.cuda.is_available():
            raise InputError("the CUDA kernel needs an NVIDIA GPU visible to PyTorch (torch.cuda.is_available())")
        self.algorithm = _check(alg, dtype)
        self.dtype = dtype
        self.torch_dtype = torch.float16 if dtype == "fp16" else torch.float32
        self.padding, self.relu = int(padding), relu
        self.built = build(alg, dtype, arch or gpu_arch() or DEFAULT_ARCH)
        self._lib = _load(str(self.built.path), self.built.prefix)
        self._w: Any = None
        self._u: Any = None

    def _fn(self, name: str) -> Any:
        return getattr(self._lib, f"{self.built.prefix}_{name}")

    def set_weights(self, w: Any) -> None:
        """Transform the weights (K, C, r, r) now into fp16 U and keep them."""
        import torch

        w32 = w.detach().to(device="cuda", dtype=torch.float32).contiguous()
        K, C = int(w32.shape[0]), int(w32.shape[1])
        u = torch.empty(int(self._fn("weight_elems")(K, C)), dtype=torch.float16, device="cuda")
        stream = torch.cuda.current_stream().cuda_stream
        err = self._fn("transform_weights")(w32.data_ptr(), u.data_ptr(), K, C, stream)
        if err:
            raise RuntimeError(f"CUDA error {err} in the weight transform")
        self._w, self._u, self._w32 = w, u, w32

    def __call__(self, x: Any, w: Any, bias: Any = None) -> Any:
        import torch

        r = self.algorithm.r
        if x.dim() != 4 or w.dim() != 4 or tuple(w.shape[2:]) != (r, r) or w.shape[1] != x.shape[1]:
            raise InputError(f"expected x (N, C, H, W) and w (K, C, {r}, {r}); got x {tuple(x.shape)} and "
                             f"w {tuple(w.shape)}")
        if w is not self._w:
            self.set_weights(w)
        x = x.to(device="cuda", dtype=self.torch_dtype).contiguous()
        N, C, H, W = (int(v) for v in x.shape)
        K = int(w.shape[0])
        oh, ow = H + 2 * self.padding - r + 1, W + 2 * self.padding - r + 1
        if oh < 1 or ow < 1:
            raise InputError(f"input {H}x{W} with padding {self.padding} is smaller than the {r}x{r} kernel")
        y = torch.empty((N, K, oh, ow), dtype=self.torch_dtype, device="cuda")
        b = None if bias is None else bias.to(device="cuda", dtype=torch.float32).contiguous()
        stream = torch.cuda.current_stream().cuda_stream
        err = self._fn("conv2d")(x.data_ptr(), self._u.data_ptr(), None if b is None else b.data_ptr(), y.data_ptr(),
                                 N, C, H, W, K, self.padding, int(self.relu), stream)
        if err:
            raise RuntimeError(f"CUDA error {err} in the {self.algorithm.label} kernel")
        return y


def _readme(alg: Algorithm, name: str, dtype: str, layer: tuple[int, ...] | None, padding: int,
            cmd: list[str]) -> str:
    p = programs(alg)
    lay = layout(alg)
    io = DTYPES[dtype]
    shape = "any shape" if layer is None else "N, C, H, W, K = " + ", ".join(map(str, layer))
    lines = [
        f"# {name}: fused Winograd conv2d for NVIDIA GPUs, {alg.label}",
        "",
        f"Generated by novagen for {alg.label} (F({alg.m}x{alg.m},{alg.r}x{alg.r}), tile {alg.alpha}x{alg.alpha}, "
        f"sha256 {alg.content_hash}); meant for {shape}, padding {padding}.",
        f"NCHW, x and y `{io}`, weights (K, C, r, r) fp32; the Winograd-domain operands are fp16 and the "
        f"{alg.alpha ** 2} channel GEMMs run on tensor cores (WMMA, fp32 accumulation). Needs sm_70 or newer.",
        f"Thread block: {lay.warps * 32} threads, 16 tiles x {lay.kb} output channels.",
        "",
        "Calls (all pointers on the device, `stream` a cudaStream_t or NULL; each returns 0 or a cudaError_t):",
        "",
        f"1. `{name}_weight_elems(K, C)`: halves to allocate for the transformed weights U.",
        f"2. `{name}_transform_weights(w, u, K, C, stream)`: once per weight tensor.",
        f"3. `{name}_conv2d(x, u, bias_or_NULL, y, N, C, H, W, K, pad, relu, stream)`: per input;",
        "   y is (N, K, H + 2 pad - r + 1, W + 2 pad - r + 1).",
        "",
        "Transform programs (adds/muls/shifts, shared subexpressions):",
        "",
    ]
    for label, prog in (("BT", p.BT), ("AT", p.AT), ("G", p.G)):
        c = prog.counts()
        lines.append(f"- {label}: {c['adds']}/{c['muls']}/{c['shifts']}")
    lines += ["", "Build (set ARCH=sm_90 for H100; `make` reads ARCH too):", "", "```",
              " ".join(shlex.quote(c) for c in cmd), "```", "",
              "Check and time it from Python on a GPU machine: `python -m novagen.backends.cuda --selftest --bench`.",
              ""]
    return "\n".join(lines)


def generate(alg: Algorithm, out_dir: str | Path, layer: tuple[int, ...] | None = None, padding: int = 1,
             dtype: str = "fp16", arch: str = DEFAULT_ARCH) -> list[Path]:
    """Write the .cu source, a Makefile, build.sh and a README into `out_dir`."""
    files = render(alg, dtype)
    (src, text), = files.items()
    name = prefix(alg, dtype)
    cmd = ["nvcc", *NVCC_FLAGS, f"-arch={_arch(arch)}", "--ptxas-options=-v", src, "-o", f"lib{name}.so"]
    out = Path(out_dir)
    written = [atomic_write(out / src, text)]
    make = (f"NVCC ?= nvcc\nARCH ?= {arch}\nNVCCFLAGS ?= {' '.join(NVCC_FLAGS)} --ptxas-options=-v\n\n"
            f"lib{name}.so: {src}\n\t$(NVCC) $(NVCCFLAGS) -arch=$(ARCH) {src} -o $@\n\n"
            f"clean:\n\trm -f lib{name}.so\n")
    written.append(atomic_write(out / "Makefile", make))
    build_sh = ("#!/bin/sh\nset -e\ncd \"$(dirname \"$0\")\"\n"
                + " ".join(shlex.quote(c) for c in cmd).replace(f"-arch={arch}", f"-arch=${{ARCH:-{arch}}}") + "\n")
    written.append(atomic_write(out / "build.sh", build_sh))
    (out / "build.sh").chmod(0o755)
    written.append(atomic_write(out / "README.md", _readme(alg, name, dtype, layer, padding, cmd)))
    return written


# ---------------------------------------------------------------------------------------------------
# Self-test and benchmark on a GPU machine


SELFTEST_ALGORITHMS = ("F(2,3)/classic", "F(4,3)/classic", "F(4,3)/nova", "F(6,3)/classic", "F(6,3)/nova")
SELFTEST_SHAPES = ((1, 16, 14, 14, 32), (2, 19, 13, 17, 21), (1, 64, 28, 28, 64), (3, 5, 9, 30, 70))
BENCH_LAYERS = ((64, 56, 64), (128, 28, 128), (256, 14, 256), (512, 7, 512))


def selftest(algorithms: tuple[str, ...] = SELFTEST_ALGORITHMS, dtype: str = "fp16", seed: int = 0,
             log: Any = print) -> bool:
    """Compare the GPU kernel with the float64 direct correlation on odd and even shapes.

    The bar: the error of novagen's emulation of the fp16 policy (every stage stored in fp16, fp32
    arithmetic; `novagen.accuracy`; the kernel rounds less: M stays fp32) on the same data, times 3,
    plus 1e-4 (fp32 x and y: 1e-5).
    Returns True when every case passes.
    """
    import torch

    from novagen.accuracy import layer_data, policy, winograd_emulate
    from novagen.catalog import algorithm
    from novagen.reference import correlate_direct

    ok = True
    log(f"{'algorithm':<16} {'N,C,H,W,K':<18} {'rel err':>10} {'bound':>10}  result")
    for name in algorithms:
        alg = algorithm(name)
        kernel = CudaKernel(alg, dtype=dtype, padding=1)
        for shape in SELFTEST_SHAPES:
            x, w = layer_data(shape, seed=seed)
            rng = np.random.default_rng(seed + 1)
            bias = rng.standard_normal(shape[4]) * 0.1
            ref = correlate_direct(x, w, 1) + bias[None, :, None, None]
            xt = torch.tensor(x, dtype=kernel.torch_dtype, device="cuda")
            y = kernel(xt, torch.tensor(w, dtype=torch.float32, device="cuda"),
                       torch.tensor(bias, device="cuda")).double().cpu().numpy()
            torch.cuda.synchronize()
            emu, _ = winograd_emulate(x, w, [alg, alg], policy("fp16"), padding=1)
            emu = emu + bias[None, :, None, None]
            err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
            bound = 3 * float(np.linalg.norm(emu - ref) / np.linalg.norm(ref)) + (1e-4 if dtype == "fp16" else 1e-5)
            good = bool(np.isfinite(err)) and err <= bound
            ok &= good
            log(f"{name:<16} {','.join(map(str, shape)):<18} {err:>10.3e} {bound:>10.3e}  {'ok' if good else 'FAIL'}")
    return ok


def _time_ms(fn: Any, repeats: int) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def benchmark(algorithms: tuple[str, ...] = ("F(2,3)/classic", "F(4,3)/nova", "F(6,3)/nova"),
              batches: tuple[int, ...] = (1, 32), repeats: int = 20, log: Any = print) -> list[dict[str, Any]]:
    """Time the fp16 kernels against torch.nn.functional.conv2d (cuDNN, fp16) on ResNet-style 3x3 layers."""
    import torch

    from novagen.catalog import algorithm

    torch.backends.cudnn.benchmark = True
    kernels = {name: CudaKernel(algorithm(name), dtype="fp16") for name in algorithms}
    rows = []
    log(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    log(f"{'N,C,H,W,K':<18} {'algorithm':<16} {'ours ms':>9} {'cuDNN ms':>9} {'speedup':>8} {'TFLOP/s':>8}")
    for batch in batches:
        for c, hw, k in BENCH_LAYERS:
            x = torch.randn(batch, c, hw, hw, device="cuda", dtype=torch.float16)
            w = torch.randn(k, c, 3, 3, device="cuda", dtype=torch.float16) * (2.0 / (9 * c)) ** 0.5
            ref_ms = _time_ms(lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1), repeats)
            flops = 2.0 * batch * c * k * hw * hw * 9
            for name, kern in kernels.items():
                kern.set_weights(w)
                ms = _time_ms(lambda x=x, w=w, kern=kern: kern(x, w), repeats)
                row = {"shape": (batch, c, hw, hw, k), "algorithm": name, "ours_ms": ms, "cudnn_ms": ref_ms,
                       "speedup": ref_ms / ms, "tflops": flops / ms / 1e9}
                rows.append(row)
                log(f"{','.join(map(str, row['shape'])):<18} {name:<16} {ms:>9.3f} {ref_ms:>9.3f} "
                    f"{row['speedup']:>7.2f}x {row['tflops']:>8.1f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m novagen.backends.cuda --selftest --bench`: exit 1 when a result is wrong, 2 without a GPU."""
    ap = argparse.ArgumentParser(prog="python -m novagen.backends.cuda",
                                 description="Check and time the generated CUDA kernels (novagen CUDA backend).")
    ap.add_argument("--selftest", action="store_true", help="correctness against the float64 reference")
    ap.add_argument("--bench", action="store_true", help="timing against torch conv2d (cuDNN), batch 1 and 32")
    ap.add_argument("--ptxas", action="store_true", help="registers and spills of each kernel (no GPU needed)")
    ap.add_argument("--arch", default=None, help="sm_80, sm_90, ... (default: the GPU's, else sm_80)")
    args = ap.parse_args(argv)
    if not (args.selftest or args.bench or args.ptxas):
        ap.print_help()
        return 2
    if args.ptxas:
        print(f"{'algorithm':<16} {'kernel':<10} {'registers':>9} {'spill st':>9} {'spill ld':>9}")
        for name in SELFTEST_ALGORITHMS:
            from novagen.catalog import algorithm

            for kname, st in ptxas_report(algorithm(name), arch=args.arch or gpu_arch() or DEFAULT_ARCH).items():
                kind = kname.rsplit("_", 1)[-1]
                print(f"{name:<16} {kind:<10} {st.registers:>9} {st.spill_stores:>9} {st.spill_loads:>9}")
    if not (args.selftest or args.bench):
        return 0
    if gpu_arch() is None:
        print("no CUDA GPU visible to PyTorch: the self-test and benchmark need one", file=sys.stderr)
        return 2
    ok = True
    if args.selftest:
        ok = selftest() and selftest(("F(4,3)/nova",), dtype="fp32")
        print("self-test:", "passed" if ok else "FAILED")
    if args.bench:
        benchmark()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
