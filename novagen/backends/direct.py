"""The direct C convolution: fp32 NCHW, stride 1 or 2, odd square kernels, for layers with few input channels.

With an image's 3 colour channels a Winograd kernel saves almost no multiplications (its GEMM has C = 3)
and its transforms cost more than the convolution (VGG-16 conv1_1: 3.6-4.8 ms against oneDNN's 2.7 ms on
an AMD EPYC), and ImageNet stems (7×7, stride 2, on the image) are no Winograd kernel's at all; a direct
kernel vectorised over output columns and blocked over output channels is the one that wins there.  One
library per kernel size and stride, built and cached like the Winograd kernels; `auto` offers it as a
candidate for layers with at most `MAX_CHANNELS` input channels.
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

TEMPLATE = "direct_conv2d"
DIRECT = "direct"
"""Its name as a candidate (auto's choice, the bench's tables)."""
MAX_CHANNELS = 16
"""Input channels up to which `auto` times the direct kernel (beyond, the Winograd kernels win)."""
STRIDES = (1, 2)


class DirectShape(ctypes.Structure):
    """The kernel's shape struct: sizes, padding, threads and the fused ReLU."""

    _fields_ = [(name, ctypes.c_long) for name in ("n", "c", "h", "w", "k", "oh", "ow", "pad_top", "pad_left")] + [
        ("threads", ctypes.c_int), ("relu", ctypes.c_int)]


def prefix(r: int, stride: int) -> str:
    return f"nv_direct_{r}x{r}_s{stride}"


def render(r: int, stride: int = 1) -> dict[str, str]:
    """The kernel's source: {"<prefix>.c": ...}."""
    p = prefix(r, stride)
    text = templates("c").get_template(f"{TEMPLATE}.c.j2").render(p=p, version=__version__, r=r, s=stride)
    return {f"{p}.c": text}


class DirectLibrary:
    """The built direct convolution of one kernel size and stride, called through raw pointers."""

    def __init__(self, r: int, stride: int = 1) -> None:
        if r < 1 or r % 2 == 0 or r > 11:
            raise InputError(f"the direct kernel takes odd square kernels from 1 to 11, not {r}x{r}")
        if stride not in STRIDES:
            raise InputError(f"the direct kernel takes strides {' and '.join(map(str, STRIDES))}, not {stride}")
        self.r, self.stride = r, stride
        self.prefix = prefix(r, stride)
        self.built: Library = build_c_library("c-direct", self.prefix, render(r, stride),
                                              f"the {r}x{r} stride-{stride} direct C convolution",
                                              {"r": r, "stride": stride})
        lib = ctypes.CDLL(str(self.built.path))
        self._run = getattr(lib, f"{self.prefix}_run")
        self._run.argtypes = [ctypes.POINTER(DirectShape)] + [ctypes.c_void_p] * 5
        self._run.restype = None
        self._work = getattr(lib, f"{self.prefix}_workspace_floats")
        self._work.argtypes = [ctypes.POINTER(DirectShape)]
        self._work.restype = ctypes.c_long

    def shape(self, n: int, c: int, h: int, w: int, k: int, padding: tuple[int, int], relu: bool = False,
              threads: int | None = None) -> DirectShape:
        """The shape struct of one call; InputError for an empty output or a padding beyond the kernel."""
        ph, pw = padding
        if min(ph, pw) < 0 or max(ph, pw) >= self.r:
            raise InputError(f"direct {self.r}x{self.r} convolution: padding {padding} must be from 0 to {self.r - 1}")
        oh, ow = output_size(h, self.r, self.stride, ph), output_size(w, self.r, self.stride, pw)
        if min(n, c, k) < 1 or oh < 1 or ow < 1:
            raise InputError(f"direct {self.r}x{self.r} convolution: input {n}x{c}x{h}x{w} with padding {padding} "
                             f"and {k} filters gives an empty output ({oh}x{ow})")
        return DirectShape(n, c, h, w, k, oh, ow, ph, pw, threads or os.cpu_count() or 1, int(relu))

    def workspace_floats(self, s: DirectShape) -> int:
        return int(self._work(ctypes.byref(s)))

    def run(self, s: DirectShape, x: int, w: int, bias: int | None, y: int, work: int) -> None:
        """y (n, k, oh, ow) from x (n, c, h, w), w (k, c, r, r) and bias (k) or None, all contiguous fp32, by
        data pointers; `work` holds `workspace_floats(s)` floats."""
        self._run(ctypes.byref(s), x, w, bias, y, work)


def output_size(size: int, r: int, stride: int, padding: int) -> int:
    """torch's output size of a convolution (0 or less: empty)."""
    return (size + 2 * padding - r) // stride + 1 if size + 2 * padding >= r else 0


@functools.lru_cache(maxsize=8)
def direct_library(r: int, stride: int = 1) -> DirectLibrary:
    """The DirectLibrary of one kernel size and stride, built once per process (and cached on disk)."""
    return DirectLibrary(r, stride)
