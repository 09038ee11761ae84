"""The C max pool: fp32 NCHW max_pool2d, one library per window and stride, built like the conv kernels.

torch's CPU max pool runs ~10x slower on NCHW tensors than on channels_last ones (ResNet's 3×3/2 stem pool,
batch 1: ~5 ms of a 39 ms ResNet-18 pass); this one runs at memory speed.  Same answers as torch: the
output size of its formula (floor or ceil mode), padding as -inf, a NaN in a window wins.
"""

from __future__ import annotations

import ctypes
import functools
import os

from novagen.backends.c import build_c_library
from novagen.backends.toolchain import Library
from novagen.errors import InputError
from novagen.resources import templates
from novagen.version import __version__

TEMPLATE = "maxpool2d"


class PoolShape(ctypes.Structure):
    """The kernel's shape struct: input and output sizes, padding and threads."""

    _fields_ = [(name, ctypes.c_long) for name in ("n", "c", "h", "w", "oh", "ow", "pad_top", "pad_left")] + [
        ("threads", ctypes.c_int)]


def prefix(kernel: tuple[int, int], stride: tuple[int, int]) -> str:
    return f"nv_maxpool_{kernel[0]}x{kernel[1]}_s{stride[0]}x{stride[1]}"


def output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """torch's pooled size: floor (or ceil) of the window count, and in ceil mode no window that starts in the
    right padding."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def check(kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> None:
    """InputError for a window, stride or padding torch's max pool would refuse."""
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise InputError(f"max pool: kernel {kernel} and stride {stride} must be positive, padding {padding} "
                         "not negative")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise InputError(f"max pool: padding {padding} must be at most half the kernel {kernel}")


def render(kernel: tuple[int, int], stride: tuple[int, int]) -> dict[str, str]:
    """The kernel's source: {"<prefix>.c": ...}."""
    p = prefix(kernel, stride)
    text = templates("c").get_template(f"{TEMPLATE}.c.j2").render(
        p=p, version=__version__, kh=kernel[0], kw=kernel[1], sh=stride[0], sw=stride[1])
    return {f"{p}.c": text}


class PoolLibrary:
    """The built max pool of one window and stride, called through raw pointers."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int]) -> None:
        check(kernel, stride, (0, 0))
        self.kernel, self.stride = kernel, stride
        self.prefix = prefix(kernel, stride)
        self.built: Library = build_c_library(
            "c-maxpool", self.prefix, render(kernel, stride),
            f"the {kernel[0]}x{kernel[1]} stride-{stride[0]}x{stride[1]} C max pool",
            {"kernel": list(kernel), "stride": list(stride)})
        self._run = getattr(ctypes.CDLL(str(self.built.path)), f"{self.prefix}_run")
        self._run.argtypes = [ctypes.POINTER(PoolShape), ctypes.c_void_p, ctypes.c_void_p]
        self._run.restype = ctypes.c_int

    def shape(self, n: int, c: int, h: int, w: int, padding: tuple[int, int], ceil_mode: bool = False,
              threads: int | None = None) -> PoolShape:
        """The shape struct of one input; InputError where torch would refuse it (bad padding, empty output)."""
        check(self.kernel, self.stride, padding)
        oh = output_size(h, self.kernel[0], self.stride[0], padding[0], ceil_mode)
        ow = output_size(w, self.kernel[1], self.stride[1], padding[1], ceil_mode)
        if min(n, c, h, w) < 1 or oh < 1 or ow < 1:
            raise InputError(f"max pool {self.kernel}: input {n}x{c}x{h}x{w} with padding {padding} gives an "
                             f"empty output ({oh}x{ow})")
        return PoolShape(n, c, h, w, oh, ow, padding[0], padding[1], threads or os.cpu_count() or 1)

    def run(self, s: PoolShape, x: int, y: int) -> None:
        """y (n, c, oh, ow) from x (n, c, h, w), both contiguous fp32, by data pointers."""
        if self._run(ctypes.byref(s), x, y) != 0:
            raise MemoryError("the C max pool could not allocate its row buffers")


@functools.lru_cache(maxsize=16)
def pool_library(kernel: tuple[int, int], stride: tuple[int, int]) -> PoolLibrary:
    """The PoolLibrary of one window and stride, built once per process (and cached on disk)."""
    return PoolLibrary(kernel, stride)
