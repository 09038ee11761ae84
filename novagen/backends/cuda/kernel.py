"""The CUDA kernel: rendered from the transform programs, built with nvcc, loaded with ctypes (device
memory from PyTorch), and emulated on the CPU where there is no GPU.

The kernel (templates/cuda/winograd_conv2d.cu.j2) keeps 16 tiles × `kb` output channels per thread
block: input transform through shared memory in fp32, α² channel GEMMs on tensor cores (WMMA, fp16
operands, fp32 accumulators in registers), output transform, bias, ReLU, store.  x and y are fp16
(`dtype="fp16"`) or fp32; the Winograd-domain operands V and U are always fp16.

Without a GPU the kernels can still be compiled (`ptxas_report` reads registers and spills from
`ptxas -v`).  On a GPU machine: `python -m novagen.backends.cuda --selftest --bench`.
"""

from __future__ import annotations

import ctypes
import functools
import math
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from novagen.algebra import Algorithm
from novagen.backends.base import one_axis
from novagen.backends.toolchain import BuildError, Library, build_library, find_tool, first_error, tool_identity
from novagen.errors import InputError
from novagen.program import programs
from novagen.resources import templates
from novagen.version import __version__

DTYPES = {"fp16": "__half", "fp32": "float"}
DEFAULT_ARCH = "sm_80"
NVCC_FLAGS = ("-O3", "-std=c++17", "-Xcompiler", "-fPIC", "-shared")


def prefix(alg: Algorithm, dtype: str = "fp16") -> str:
    """Symbol prefix of an algorithm's CUDA kernel: stable, short, from the content hash."""
    return f"nvcu_f{alg.m}_{alg.r}_{dtype}_{alg.content_hash[:10]}"


def check(alg: Any, dtype: str) -> Algorithm:
    """The 1D algorithm and dtype of a CUDA kernel (tiles up to 8 × 8, fp16 or fp32 x and y)."""
    alg = one_axis(alg, "cuda")
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
    alg = check(alg, dtype)
    p = programs(alg)
    a, m, r = alg.alpha, alg.m, alg.r
    xs = [f"x{i}" for i in range(a)]
    ys = [f"y[{i}]" for i in range(a)]
    lay = layout(alg)
    env = templates("cuda")
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
    return find_tool("NVCC", ("nvcc", "/usr/local/cuda/bin/nvcc"), "CUDA compiler (nvcc)")


def nvcc_identity(nvcc: str) -> str:
    """The release line of `nvcc --version`: part of the cache key."""
    return tool_identity(nvcc, lambda line: "release" in line)


def check_arch(arch: str) -> str:
    if not re.fullmatch(r"sm_\d{2,3}a?", arch):
        raise InputError(f"arch '{arch}' is not a CUDA architecture such as sm_80 or sm_90")
    if int(re.sub(r"\D", "", arch)) < 70:
        raise InputError(f"arch {arch}: the kernel uses tensor cores (WMMA), which need sm_70 or newer")
    return arch


def nvcc_command(nvcc: str, source: str, output: str, arch: str = DEFAULT_ARCH) -> list[str]:
    """The build command of the shared library (ptxas statistics on)."""
    return [nvcc, *NVCC_FLAGS, f"-arch={check_arch(arch)}", "--ptxas-options=-v", source, "-o", output]


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
        cmd = [nvcc, "-O3", "-std=c++17", f"-arch={check_arch(arch)}", "--ptxas-options=-v", "-cubin", str(src),
               "-o", str(Path(tmp) / "k.cubin")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
    if proc.returncode != 0:
        raise BuildError(f"nvcc failed on the {alg.label} CUDA kernel: {first_error(proc.stderr)}")
    return parse_ptxas(proc.stderr)


def build(alg: Algorithm, dtype: str = "fp16", arch: str = DEFAULT_ARCH) -> Library:
    """Compile (or find in the cache, by content hash) the shared library of an algorithm's CUDA kernel;
    its record holds ptxas's figures per kernel ("ptxas")."""
    files = render(alg, dtype)
    (name, _), = files.items()
    nvcc = find_nvcc()
    ident = nvcc_identity(nvcc)
    arch = check_arch(arch)
    return build_library("cuda", (alg.content_hash, nvcc, ident, arch, " ".join(NVCC_FLAGS)), files,
                         lambda src, out: nvcc_command(nvcc, str(src / name), str(out), arch),
                         f"the {alg.label} CUDA kernel",
                         {"algorithm": alg.label, "hash": alg.content_hash, "prefix": prefix(alg, dtype),
                          "nvcc": ident, "arch": arch},
                         lambda stderr: {"ptxas": {k: vars(v) for k, v in parse_ptxas(stderr).items()}})


def kernel_stats(built: Library) -> dict[str, KernelStats]:
    """ptxas's figures per kernel of a built library."""
    return {k: KernelStats(**v) for k, v in built.record.get("ptxas", {}).items()}


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
    alg = check(alg, dtype)
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
    name = prefix(alg, dtype)
    run = getattr(_load(str(built.path), name), f"{name}_emulate")
    run(x.ctypes.data, w.ctypes.data, None if b is None else b.ctypes.data, y.ctypes.data, N, C, H, W, K, padding,
        int(relu))
    return y


def info(alg: Algorithm, dtype: str = "fp16", arch: str = DEFAULT_ARCH) -> dict[str, int]:
    """What the built library says of its kernel: alpha, m, r, threads, kb, smem_bytes (no GPU needed)."""
    built = build(alg, dtype, arch)
    name = prefix(alg, dtype)
    lib = _load(str(built.path), name)
    out = (ctypes.c_int * 6)()
    getattr(lib, f"{name}_info")(out)
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
        self.algorithm = check(alg, dtype)
        self.dtype = dtype
        self.torch_dtype = torch.float16 if dtype == "fp16" else torch.float32
        self.padding, self.relu = int(padding), relu
        self.built = build(alg, dtype, arch or gpu_arch() or DEFAULT_ARCH)
        self.prefix = prefix(self.algorithm, dtype)
        self._lib = _load(str(self.built.path), self.prefix)
        self._w: Any = None
        self._u: Any = None

    def _fn(self, name: str) -> Any:
        return getattr(self._lib, f"{self.prefix}_{name}")

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
