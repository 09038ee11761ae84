"""Emulated convolutions: a drop-in Winograd `nn.Conv2d` under a precision policy, for accuracy studies.

`WinogradConv2d` computes a 3×3 stride-1 convolution with any 2D (or nested 1D) algorithm under a
precision policy of `novagen.precision`, running the one emulator (`novagen.precision.emulator`) on
tensors: every stored tensor is rounded to its format, arithmetic narrower than fp32 is rounded per
operation, int8 stages quantize with per-tensor or per-tap scales and accumulate exactly, overflow becomes
inf/NaN (fp8 e4m3 gives NaN as IEEE-style hardware does) and is counted per stage in `overflows`.
Under "fp32" and "fp64" the module is an exact Winograd convolution in that precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from novagen.accuracy import DIRECT, axes_2d, resolve_algorithm
from novagen.algebra import Algorithm, AnyAlgorithm
from novagen.errors import InputError
from novagen.precision import Policy, policy
from novagen.precision.emulator import direct, winograd
from novagen.precision.torch_arrays import TorchArrays, work_dtype
from novagen.reference import resolve_padding


class _Emulated(nn.Module):
    """Shared parameters and bookkeeping of the emulated convolutions."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], precision: str | Policy,
                 bias: bool) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.policy = policy(precision)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.overflows: dict[str, int] = {}

    def _arrays(self, x: torch.Tensor) -> TorchArrays:
        return TorchArrays(work_dtype(self.policy), x.device)

    def _record(self, y: torch.Tensor, counts: dict[str, int], dtype: torch.dtype) -> torch.Tensor:
        for k, v in counts.items():
            self.overflows[k] = self.overflows.get(k, 0) + v
        return y.to(dtype)


def _copy_parameters(mod: nn.Module, conv: nn.Conv2d) -> nn.Module:
    """`mod` with `conv`'s weight and bias copied in (the from_conv constructors)."""
    with torch.no_grad():
        mod.weight.copy_(conv.weight)
        if conv.bias is not None and mod.bias is not None:
            mod.bias.copy_(conv.bias)
    return mod


class WinogradConv2d(_Emulated):
    """Drop-in for a 3×3 stride-1 `nn.Conv2d` (groups 1, zero padding) computed by a Winograd algorithm
    under a precision policy ("fp32" by default)."""

    def __init__(self, in_channels: int, out_channels: int, algorithm: str | AnyAlgorithm,
                 precision: str | Policy = "fp32", padding: Any = 1, bias: bool = True) -> None:
        resolved = resolve_algorithm(algorithm)
        if resolved == DIRECT:
            raise InputError("WinogradConv2d needs a Winograd algorithm; use DirectConv2d for 'direct'")
        self.algs: tuple[Algorithm, Algorithm] = axes_2d(resolved)  # type: ignore[arg-type]
        super().__init__(in_channels, out_channels, (self.algs[0].r, self.algs[1].r), precision, bias)
        self.algorithm_label = resolved.label  # type: ignore[union-attr]
        self.padding = resolve_padding(padding, self.kernel_size)
        self.scales: dict[str, Any] | None = None  # calibrated static scales (novagen.torch.calibrate)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, algorithm: str | AnyAlgorithm,
                  precision: str | Policy = "fp32") -> WinogradConv2d:
        """A module with `conv`'s weights (copied) computing the same function by `algorithm`."""
        reason = ineligible(conv, (3, 3))
        if reason:
            raise InputError(f"cannot compute this Conv2d with Winograd: {reason}")
        mod = cls(conv.in_channels, conv.out_channels, algorithm, precision, conv.padding, conv.bias is not None)
        return _copy_parameters(mod, conv)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, algorithm={self.algorithm_label}, "
                f"precision={self.policy.name}, padding={self.padding}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ops = self._arrays(x)
        bias = None if self.bias is None else self.bias.to(ops.dtype)
        y, counts = winograd(x.to(ops.dtype), self.weight.to(ops.dtype), self.algs, self.policy, self.padding, ops,
                             bias, self.scales)
        return self._record(y, counts, x.dtype)


class DirectConv2d(_Emulated):
    """A `nn.Conv2d` computed directly under a precision policy: the baseline every algorithm is
    compared with, and the fallback for convolutions Winograd cannot take (strided, 1×1, grouped)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 precision: str | Policy = "fp32", stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels // groups, out_channels, tuple(kernel_size), precision, bias)  # type: ignore[arg-type]
        self.in_channels = in_channels
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding = resolve_padding(padding, self.kernel_size)
        self.scales: dict[str, Any] | None = None  # calibrated: x per tensor, w per output channel

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, precision: str | Policy = "fp32") -> DirectConv2d:
        if conv.padding_mode != "zeros":
            raise InputError(f"padding_mode '{conv.padding_mode}' is not supported: only 'zeros'")
        mod = cls(conv.in_channels, conv.out_channels, conv.kernel_size, precision, conv.stride,  # type: ignore[arg-type]
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None)
        return _copy_parameters(mod, conv)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, precision={self.policy.name}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ops = self._arrays(x)
        bias = None if self.bias is None else self.bias.to(ops.dtype)
        y, counts = direct(x.to(ops.dtype), self.weight.to(ops.dtype), self.policy, self.padding, ops,
                           _pair(self.stride), _pair(self.dilation), self.groups, bias, self.scales)
        return self._record(y, counts, x.dtype)


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def ineligible(conv: nn.Module, kernel: tuple[int, int] = (3, 3)) -> str | None:
    """Why a module cannot become a WinogradConv2d (None when it can)."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not nn.Conv2d"
    checks = (
        (tuple(conv.kernel_size) == kernel, f"kernel {tuple(conv.kernel_size)} is not {kernel}"),
        (_pair(conv.stride) == (1, 1), f"stride {tuple(_pair(conv.stride))} is not 1"),
        (_pair(conv.dilation) == (1, 1), f"dilation {tuple(_pair(conv.dilation))} is not 1"),
        (conv.groups == 1, f"groups={conv.groups} is not 1"),
        (conv.padding_mode == "zeros", f"padding_mode '{conv.padding_mode}' is not 'zeros'"),
    )
    for ok, reason in checks:
        if not ok:
            return reason
    return None


@dataclass
class Replacement:
    """What `replace_conv2d` did: convolutions swapped, and those left alone with the reason; with the fast
    backend, `choices()` gives what each replaced layer chose for each input shape so far."""

    replaced: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    model: Any = field(default=None, repr=False, compare=False)
    scales: dict[str, Any] = field(default_factory=dict)  # calibrated static scales by layer
    fused: list[dict[str, Any]] = field(default_factory=list)  # fast backend: epilogues run inside the convs
    not_fused: str | None = None  # why no epilogue was fused (the model is not traceable)
    pools: list[str] = field(default_factory=list)  # fast backend: MaxPool2d modules running novagen's C pool

    def choices(self) -> list[dict[str, Any]]:
        """Per replaced layer and input shape: the choice, its times and why (the fast backend's "auto")."""
        if self.model is None:
            return []
        out = []
        for name in self.replaced:
            mod = self.model.get_submodule(name)
            for d in getattr(mod, "decisions", []):
                out.append({"layer": name, **{k: v for k, v in d.items() if k != "choice"}})
        return out


def overflow_counts(model: nn.Module, reset: bool = False) -> dict[str, int]:
    """Non-finite values per stage summed over the model's emulated convolutions since the last reset."""
    total: dict[str, int] = {}
    for mod in model.modules():
        if isinstance(mod, _Emulated):
            for k, v in mod.overflows.items():
                total[k] = total.get(k, 0) + v
            if reset:
                mod.overflows = {}
    return total
