"""The generated C kernel as a PyTorch operator, and the module that runs it.

Two custom operators (`torch.library`), each with a fake implementation so `torch.compile` and
`torch.export` trace through them:

- `novagen::winograd_weights(w, algorithm)`: U = G·w·Gᵀ packed for the kernel, from fp32 weights (K, C, r, r);
- `novagen::winograd_conv2d(x, u, bias, algorithm, padding, out_channels, relu, pool)`: y from x (NCHW, or
  channels_last memory), U, an optional bias, an optional ReLU and an optional 2×2 stride-2 max pool, on
  `torch.get_num_threads()` threads.

`algorithm` is an algorithm's content hash, registered by `register`; the kernel library is built (or
taken from the cache) once per algorithm.  `KernelConv2d` keeps U per algorithm, transformed again when
its weight changes (in eager mode; a compiled model assumes inference weights stay put), and runs the
epilogue fused into it (`Epilogue`: the model's BatchNorm folded into the weights, a ReLU, a max pool).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from novagen.algebra import Algorithm
from novagen.backends.c import KernelLibrary, kernel_library
from novagen.errors import InputError
from novagen.torch.auto import TORCH, decide
from novagen.torch.direct import DIRECT, direct_conv2d
from novagen.torch.direct import ineligible as direct_ineligible
from novagen.torch.workspaces import workspace, workspaces

_ALGORITHMS: dict[str, Algorithm] = {}
"""Algorithms by content hash: what the operators' `algorithm` strings name."""
_LIBRARIES: dict[str, KernelLibrary] = {}


def register(alg: Algorithm) -> str:
    """Make `alg` callable by the operators; returns the name they take (its content hash)."""
    _ALGORITHMS[alg.content_hash] = alg
    return alg.content_hash


def _library(name: str) -> KernelLibrary:
    """The kernel library of a registered algorithm, by content hash (looked up on every call: hashing the
    algorithm's exact matrices for `kernel_library`'s cache cost ~30 µs a call)."""
    lib = _LIBRARIES.get(name)
    if lib is None:
        if name not in _ALGORITHMS:
            raise InputError(f"algorithm {name[:16]}… is not registered with novagen.torch.fast.register")
        lib = _LIBRARIES[name] = kernel_library(_ALGORITHMS[name])
    return lib


def _out_hw(x: torch.Tensor, r: int, padding: list[int], pool: int) -> tuple[int, int]:
    oh, ow = x.shape[2] + 2 * padding[0] - r + 1, x.shape[3] + 2 * padding[1] - r + 1
    return (oh // pool, ow // pool) if pool else (oh, ow)


@torch.library.custom_op("novagen::winograd_weights", mutates_args=())
def winograd_weights(w: torch.Tensor, algorithm: str) -> torch.Tensor:
    lib = _library(algorithm)
    w = w.detach().to(torch.float32).contiguous()
    k, c = int(w.shape[0]), int(w.shape[1])
    s = lib.shape(1, c, 8, 8, k, ((1, 1), (1, 1)), threads=torch.get_num_threads())
    u = torch.empty(lib.weight_floats(s), dtype=torch.float32)
    lib.transform_weights(s, w.data_ptr(), u.data_ptr())
    return u


@winograd_weights.register_fake
def _(w: torch.Tensor, algorithm: str) -> torch.Tensor:
    lib = _library(algorithm)
    k, c = int(w.shape[0]), int(w.shape[1])
    return w.new_empty(lib.algorithm.alpha ** 2 * (-(-c // 8) * 8) * (-(-k // lib.panel) * lib.panel),
                       dtype=torch.float32)


@torch.library.custom_op("novagen::winograd_conv2d", mutates_args=())
def winograd_conv2d(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, algorithm: str,
                    padding: list[int], out_channels: int, relu: bool = False, pool: int = 0) -> torch.Tensor:
    lib = _library(algorithm)
    n, c, h, w = (int(v) for v in x.shape)
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    xc = x.to(torch.float32).contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    pads = ((padding[0], padding[0]), (padding[1], padding[1]))
    s = lib.shape(n, c, h, w, out_channels, pads, "NHWC" if nhwc else "NCHW", torch.get_num_threads(), relu,
                  pool=pool)
    oh, ow = _out_hw(x, lib.algorithm.r, padding, pool)
    y = torch.empty((n, out_channels, oh, ow), dtype=torch.float32,
                    memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    b = None if bias is None else bias.to(torch.float32).contiguous()
    lib.conv2d(s, xc.data_ptr(), u.data_ptr(), None if b is None else b.data_ptr(), y.data_ptr(),
               workspace(algorithm, lib.workspace_floats(s)).data_ptr())
    return y


@winograd_conv2d.register_fake
def _(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, algorithm: str, padding: list[int],
      out_channels: int, relu: bool = False, pool: int = 0) -> torch.Tensor:
    oh, ow = _out_hw(x, _ALGORITHMS[algorithm].r, padding, pool)
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.empty((x.shape[0], out_channels, oh, ow), dtype=torch.float32, device=x.device,
                       memory_format=torch.channels_last if nhwc else torch.contiguous_format)


@dataclass
class Epilogue:
    """What a `KernelConv2d` applies to its output besides its bias, in place of the modules of the model that
    followed it (`novagen.torch.epilogue`): a BatchNorm2d of the model, folded into the weights while it is
    in eval mode and applied as it is in training, then a ReLU, then a 2×2 stride-2 max pool (`pool` 2; in
    the kernel's output transform, for tiles of even side)."""

    bn: nn.BatchNorm2d | None = None
    relu: bool = False
    pool: int = 0


def folded_weights(w: torch.Tensor, b: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of conv-then-`bn` (eval mode) as one convolution, folded in float64."""
    inv = torch.rsqrt(bn.running_var.double() + bn.eps)  # type: ignore[union-attr]
    scale = inv * bn.weight.double() if bn.weight is not None else inv
    shift = bn.bias.double() if bn.bias is not None else torch.zeros_like(scale)
    b0 = b.double() if b is not None else torch.zeros_like(scale)
    mean = bn.running_mean.double()  # type: ignore[union-attr]
    return ((w.double() * scale.view(-1, 1, 1, 1)).to(w.dtype),
            ((b0 - mean) * scale + shift).to(w.dtype))


class KernelConv2d(nn.Module):
    """Drop-in for a 3×3 stride-1 `nn.Conv2d` (groups 1, zero padding, fp32) that runs novagen's C kernel
    through the `novagen::winograd_conv2d` operator, or torch's conv2d where that is faster; with no
    algorithm and `direct`, for a conv only the direct kernel takes (a strided stem on 3 channels).

    With one algorithm it always runs that one.  With several (`algorithm="auto"`), each input shape
    (with its memory format and thread count) gets the fastest correct candidate (`candidates`: the
    algorithms, and with `direct` the direct C kernel where the layer has few input channels,
    `novagen.torch.direct`), timed inside the model
    when it is given an input ahead (`novagen.torch.auto.decide_in_model`), else measured alone on its first
    eager call (`novagen.torch.auto.decide`, or ahead with `decide(x)`); both cached on disk.  The state
    dict has the conv's own keys (weight, bias); U is kept per algorithm, transformed again when the
    weight (or the folded BatchNorm) changes (in eager mode: a compiled model assumes inference weights stay
    put).  `epilogue` is what the conv also computes for the modules after it (empty unless
    `novagen.torch.epilogue.fuse_epilogues` set it)."""

    def __init__(self, conv: nn.Conv2d, algorithms: list[Algorithm], direct: bool = False) -> None:
        super().__init__()
        if not algorithms and (not direct or direct_ineligible(conv) is not None):
            raise InputError("KernelConv2d needs at least one algorithm, or direct=True for a layer the direct "
                             f"kernel takes ({direct_ineligible(conv) or 'direct=False'})")
        for alg in algorithms:
            if tuple(conv.kernel_size) != (alg.r, alg.r):
                raise InputError(f"{alg.label} needs a {alg.r}x{alg.r} kernel, got {tuple(conv.kernel_size)}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        r = self.kernel_size[0]
        self.padding = tuple(int(p) for p in conv.padding) if not isinstance(conv.padding, str) else \
            ((r - 1) // 2, (r - 1) // 2)
        self.stride = int(conv.stride[0])
        self.algorithms = {register(alg): alg for alg in algorithms}
        self.candidates = {name: alg.label for name, alg in self.algorithms.items()}
        """What `auto` chooses among besides torch: choice name -> label."""
        if direct and direct_ineligible(conv) is None:
            self.candidates[DIRECT] = DIRECT
        self.auto = direct or len(algorithms) > 1
        """Whether each input shape gets the fastest of the candidates and torch (else the one algorithm runs)."""
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=conv.weight.requires_grad)
        self.bias = (nn.Parameter(conv.bias.detach().clone(), requires_grad=conv.bias.requires_grad)
                     if conv.bias is not None else None)
        self.epilogue = Epilogue()
        self.choices: dict[tuple[Any, ...], str] = {}
        self.decisions: list[dict[str, Any]] = []
        self.trial: tuple[str, list[float]] | None = None
        """While `auto` times candidates inside the model: the one to run, and where each call's seconds go."""
        self._u: dict[str, tuple[tuple[Any, ...], torch.Tensor]] = {}
        self._folded: tuple[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] | None = None

    def extra_repr(self) -> str:
        algs = ", ".join(self.candidates.values())
        fused = [name for name, on in (("batchnorm", self.epilogue.bn is not None), ("relu", self.epilogue.relu),
                                       ("maxpool", self.epilogue.pool > 0)) if on]
        return (f"{self.in_channels}, {self.out_channels}, algorithms=[{algs}], padding={self.padding}"
                + (f", stride={self.stride}" if self.stride != 1 else "")
                + (f", fused=[{', '.join(fused)}]" if fused else ""))

    def key(self, x: torch.Tensor) -> tuple[Any, ...]:
        """What a choice depends on: the input's shape, its memory format and the thread count."""
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return (*x.shape, nhwc, torch.get_num_threads())

    def _folds(self) -> bool:
        bn = self.epilogue.bn
        return bn is not None and not bn.training

    def _stamp(self) -> tuple[Any, ...]:
        """Identity and version of every tensor the kernel's weights come from."""
        bn = self.epilogue.bn if self._folds() else None
        sources = [self.weight, self.bias] + ([bn.weight, bn.bias, bn.running_mean, bn.running_var] if bn else [])
        return tuple((t.data_ptr(), t._version) if t is not None else None for t in sources)

    def kernel_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """Weight, bias and ReLU the convolution computes with: its own, or with the BatchNorm folded in
        (eval mode; the ReLU then runs in the kernel too)."""
        if not self._folds():
            return self.weight, self.bias, self.epilogue.relu and self.epilogue.bn is None
        bn = self.epilogue.bn
        if torch.compiler.is_compiling():
            return (*folded_weights(self.weight, self.bias, bn), self.epilogue.relu)  # type: ignore[arg-type]
        stamp = self._stamp()
        if self._folded is None or self._folded[0] != stamp:
            with torch.no_grad():
                self._folded = (stamp, folded_weights(self.weight, self.bias, bn))  # type: ignore[arg-type]
        return (*self._folded[1], self.epilogue.relu)

    def kernel_pool(self) -> int:
        """The max pool the convolution computes with (0: none): the epilogue's, unless a BatchNorm in training
        mode runs between them."""
        bn = self.epilogue.bn
        return self.epilogue.pool if bn is None or self._folds() else 0

    def transformed(self, name: str) -> torch.Tensor:
        """U of one algorithm for the current weights (transformed again after a change, in eager mode)."""
        held = self._u.get(name)
        if torch.compiler.is_compiling():  # traced: the U of the last eager call, or the operator in the graph
            return held[1] if held is not None else winograd_weights(self.kernel_parameters()[0], name)
        stamp = self._stamp()
        if held is None or held[0] != stamp:
            held = self._u[name] = (stamp, winograd_weights(self.kernel_parameters()[0], name))
        return held[1]

    def resident(self) -> list[torch.Tensor]:
        """What a timed run should find out of the caches, as inside a model: weight, bias, every U and this
        thread's kernel workspaces."""
        held = [u for _, u in self._u.values()]
        folded = list(self._folded[1]) if self._folded is not None else []
        return [self.weight, self.bias, *folded, *held, *workspaces()]

    def compute(self, x: torch.Tensor, choice: str) -> torch.Tensor:
        """One candidate's convolution with the kernel's parameters (`kernel_parameters`, `kernel_pool`): an
        algorithm's name (content hash), DIRECT or TORCH.  The direct kernel and a tile of odd side leave the
        max pool to torch."""
        w, b, relu = self.kernel_parameters()
        pool = self.kernel_pool()
        if choice in (TORCH, DIRECT):
            if choice == TORCH:
                y = nn.functional.conv2d(x, w, b, self.stride, self.padding)
                y = torch.relu(y) if relu else y
            else:
                y = direct_conv2d(x, w, b, list(self.padding), relu, self.stride)
            return nn.functional.max_pool2d(y, pool) if pool else y
        inner = pool if _library(choice).pools(pool) else 0
        y = winograd_conv2d(x, self.transformed(choice), b, choice, list(self.padding), self.out_channels, relu, inner)
        return nn.functional.max_pool2d(y, pool) if pool and not inner else y

    def run(self, x: torch.Tensor, choice: str) -> torch.Tensor:
        """The module's output with one candidate: the convolution, then what of the epilogue it did not fold
        (a BatchNorm in training mode, and the ReLU and max pool after it)."""
        y = self.compute(x, choice)
        bn = self.epilogue.bn
        if bn is not None and bn.training:
            y = nn.BatchNorm2d.forward(bn, y)
            if self.epilogue.relu:
                y = torch.relu(y)
            if self.epilogue.pool:
                y = nn.functional.max_pool2d(y, self.epilogue.pool)
        return y

    def decide(self, x: torch.Tensor) -> str:
        """The choice for x's key: the only algorithm, or the fastest correct candidate (measured once)."""
        key = self.key(x)
        if key not in self.choices:
            if not self.auto:
                self.choices[key] = next(iter(self.candidates))
            else:
                decision = decide(self, x)
                self.choices[key] = decision["choice"]
                self.decisions.append(decision)
        return self.choices[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trial is not None:
            choice, seconds = self.trial
            start = time.perf_counter()
            y = self.run(x, choice)
            seconds.append(time.perf_counter() - start)
            return y
        key = self.key(x)
        choice = self.choices.get(key)
        if choice is None:
            if not self.auto:
                choice = next(iter(self.candidates))
            else:  # auto measures in eager mode only: traced before it chose, the layer stays torch's
                choice = TORCH if torch.compiler.is_compiling() else self.decide(x)
        return self.run(x, choice)
