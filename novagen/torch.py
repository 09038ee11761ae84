"""PyTorch integration: a drop-in Winograd `nn.Conv2d` and `replace_conv2d` for whole models.

`WinogradConv2d` computes a 3×3 stride-1 convolution with any 2D (or nested 1D) algorithm under a
precision policy of `novagen.accuracy`, emulated in fp32 tensors the same way the NumPy lab does it:
every stored tensor is rounded to its format, arithmetic narrower than fp32 is rounded per operation,
int8 stages quantize with per-tensor or per-tap scales and accumulate exactly, overflow becomes
inf/NaN (fp8 e4m3 gives NaN as IEEE-style hardware does) and is counted per stage in `overflows`.
Under "fp32" and "fp64" the module is an exact Winograd convolution in that precision.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from novagen.accuracy import (
    DIRECT,
    DTYPES,
    FLOAT_FORMATS,
    INT8_MAX,
    INT32_MAX,
    Policy,
    Stage,
    axes_2d,
    format_max,
    policy,
    resolve_algorithm,
)
from novagen.algebra import Algorithm, AnyAlgorithm
from novagen.errors import InputError

TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
STAGES = ("x", "w", "V", "U", "int32", "M", "y")


def work_dtype(pol: Policy) -> torch.dtype:
    """fp64 tensors when a stage stores or computes in fp64, else fp32 (which holds every narrower value)."""
    stages = (pol.operands, pol.input_transform, pol.filter_transform, pol.product, pol.output_transform)
    return torch.float64 if any("fp64" in (s.store, s.compute) for s in stages) else torch.float32


def round_to(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Round to a float format and back to x's dtype; fp8 e4m3 overflow gives NaN (torch saturates)."""
    dt = TORCH_DTYPES[fmt]
    if dt == x.dtype or (fmt == "fp64" and x.dtype == torch.float32):
        return x
    y = x.to(dt).to(x.dtype)
    if fmt == "fp8_e4m3":
        top = format_max(fmt)
        y = torch.where(x.abs() >= top + 16.0, torch.full_like(x, float("nan")), y)
    return y


def _amax(x: torch.Tensor, keep_last: int) -> torch.Tensor:
    if keep_last == 0:
        return x.abs().max() if x.numel() else torch.zeros((), dtype=x.dtype)
    return x.abs().flatten(0, x.ndim - keep_last - 1).amax(0)


def store(x: torch.Tensor, stage: Stage, taps: int = 0) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(q, scale) of a tensor stored by a stage; its value is q * scale."""
    keep = taps if stage.scale == "tap" else 0
    if stage.store == "int8" or (stage.scale != "none" and stage.store not in ("fp64", "fp32")):
        amax = _amax(x, keep)
        scale = torch.where(amax > 0, amax / format_max(stage.store), torch.ones_like(amax))
        if stage.store == "int8":
            return torch.clamp(torch.round(x / scale), -INT8_MAX, INT8_MAX), scale
        return round_to(x / scale, stage.store), scale
    return round_to(x, stage.store), 1.0


def transform_axis(x: torch.Tensor, T: torch.Tensor, axis: int, fmt: str) -> torch.Tensor:
    """T along `axis`, zero entries skipped as generated kernels do (inf·0 would be NaN): a matmul in
    fp32/fp64 while x is finite, else every multiply and add rounded in order."""
    x = x.movedim(axis, -1)
    if TORCH_DTYPES[fmt].itemsize >= x.dtype.itemsize and bool(torch.isfinite(x).all()):
        return (x @ T.T).movedim(-1, axis)
    acc = torch.zeros((*x.shape[:-1], T.shape[0]), dtype=x.dtype)
    for j in range(T.shape[1]):
        col = T[:, j]
        nz = col != 0
        if not bool(nz.any()):
            continue
        term = round_to(x[..., j:j + 1] * col, fmt)
        acc = torch.where(nz, round_to(acc + term, fmt), acc)
    return acc.movedim(-1, axis)


def _gemm(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Σ_c U[k,c,a,b]·V[n,c,t,s,a,b] as alpha² batched matrix products (einsum is slow here)."""
    K, C, a, b = U.shape
    N, _, t, s = V.shape[:4]
    u = U.permute(2, 3, 0, 1).reshape(a * b, K, C)
    v = V.permute(4, 5, 1, 0, 2, 3).reshape(a * b, C, N * t * s)
    return torch.bmm(u, v).reshape(a, b, K, N, t, s).permute(3, 2, 4, 5, 0, 1)


def accumulate_channels(U: torch.Tensor, V: torch.Tensor, fmt: str) -> torch.Tensor:
    """M[n,k,t,s,a,b] = Σ_c U[k,c,a,b]·V[n,c,t,s,a,b]; narrow formats rounded per operation."""
    if fmt == "int32":
        exact = U.shape[1] * INT8_MAX * INT8_MAX < 2**24 or U.dtype == torch.float64
        return _gemm(U, V) if exact else _gemm(U.double(), V.double()).to(U.dtype)
    if fmt in FLOAT_FORMATS and TORCH_DTYPES[fmt].itemsize >= U.dtype.itemsize:
        return _gemm(U, V)
    acc = None
    for c in range(U.shape[1]):
        term = round_to(U[None, :, c, None, None] * V[:, c, None], fmt)
        acc = term if acc is None else round_to(acc + term, fmt)
    assert acc is not None
    return acc


def _count(counts: dict[str, int], key: str, t: torch.Tensor) -> None:
    counts[key] = counts.get(key, 0) + int((~torch.isfinite(t)).sum())


def _int32_guard(acc: torch.Tensor, counts: dict[str, int]) -> torch.Tensor:
    bad = acc.abs() > INT32_MAX
    counts["int32"] = counts.get("int32", 0) + int(bad.sum())
    return torch.where(bad, torch.full_like(acc, float("nan")), acc)


def _pads(padding: Any, kernel: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)  # type: ignore[return-value]
        raise InputError(f"padding '{padding}' is not understood: use 'valid', 'same' or numbers")
    ph, pw = (padding, padding) if isinstance(padding, int) else tuple(padding)
    return ((int(ph), int(ph)), (int(pw), int(pw)))


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

    def _finish(self, y: torch.Tensor, counts: dict[str, int], dtype: torch.dtype) -> torch.Tensor:
        ot = self.policy.output_transform
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)[:, None, None]
        q, scale = store(y, ot)
        _count(counts, "y", q)
        for k, v in counts.items():
            self.overflows[k] = self.overflows.get(k, 0) + v
        return (q * scale).to(dtype)

    def _operands(self, x: torch.Tensor, counts: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        work = work_dtype(self.policy)
        xq, xs = store(x.to(work), self.policy.operands)
        wq, ws = store(self.weight.to(work), self.policy.operands)
        _count(counts, "x", xq)
        _count(counts, "w", wq)
        return xq * xs, wq * ws


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
        self.padding = _pads(padding, self.kernel_size)
        self._mats: dict[tuple[str, torch.dtype], list[tuple[torch.Tensor, ...]]] = {}

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

    def _matrices(self, fmt: str, work: torch.dtype) -> list[tuple[torch.Tensor, ...]]:
        key = (fmt, work)
        if key not in self._mats:
            self._mats[key] = [tuple(torch.from_numpy(m.astype(np.float64)).to(work) for m in a.matrices(DTYPES[fmt]))
                               for a in self.algs]
        return self._mats[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pol, (a0, a1) = self.policy, self.algs
        work = work_dtype(pol)
        counts: dict[str, int] = {}
        xv, wv = self._operands(x, counts)
        (t0, b0), (l1, r1) = self.padding
        H = x.shape[2] + t0 + b0 - a0.r + 1
        W = x.shape[3] + l1 + r1 - a1.r + 1
        if H < 1 or W < 1:
            raise InputError(f"input {tuple(x.shape[2:])} with padding {self.padding} is smaller than the kernel")
        th, tw = -(-H // a0.m), -(-W // a1.m)
        xp = F.pad(xv, (l1, r1 + tw * a1.m + a1.r - 1 - (x.shape[3] + l1 + r1),
                        t0, b0 + th * a0.m + a0.r - 1 - (x.shape[2] + t0 + b0)))
        tiles = xp.unfold(2, a0.alpha, a0.m).unfold(3, a1.alpha, a1.m)
        it, ft, pt, ot = pol.input_transform, pol.filter_transform, pol.product, pol.output_transform
        mi, mf = self._matrices(it.compute, work), self._matrices(ft.compute, work)
        mo = self._matrices(ot.compute, work)
        V = transform_axis(transform_axis(tiles, mi[0][2], -2, it.compute), mi[1][2], -1, it.compute)
        Vq, Vs = store(V, it, 2)
        U = transform_axis(transform_axis(wv, mf[0][1], -2, ft.compute), mf[1][1], -1, ft.compute)
        Uq, Us = store(U, ft, 2)
        _count(counts, "V", Vq)
        _count(counts, "U", Uq)
        acc = accumulate_channels(Uq, Vq, pt.compute)
        if pt.compute == "int32":
            acc = _int32_guard(acc, counts)
        Mq, Ms = store(acc * (Us * Vs), pt, 2)
        _count(counts, "M", Mq)
        M = Mq * Ms
        Y = transform_axis(transform_axis(M, mo[0][0], -2, ot.compute), mo[1][0], -1, ot.compute)
        n, k = Y.shape[:2]
        y = Y.permute(0, 1, 2, 4, 3, 5).reshape(n, k, th * a0.m, tw * a1.m)[:, :, :H, :W]
        return self._finish(y, counts, x.dtype)


class DirectConv2d(_Emulated):
    """A `nn.Conv2d` computed directly under a precision policy: the baseline every algorithm is
    compared with, and the fallback for convolutions Winograd cannot take (strided, 1×1, grouped)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 precision: str | Policy = "fp32", stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels // groups, out_channels, tuple(kernel_size), precision, bias)  # type: ignore[arg-type]
        self.in_channels = in_channels
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding = _pads(padding, self.kernel_size)

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
        pol = self.policy
        counts: dict[str, int] = {}
        xv, wv = self._operands(x, counts)
        scale = "tensor" if pol.input_transform.scale != "none" else "none"
        xq, xs = store(xv, Stage(pol.input_transform.store, pol.input_transform.compute, scale))
        wq, ws = store(wv, Stage(pol.filter_transform.store, pol.filter_transform.compute, scale))
        (t0, b0), (l1, r1) = self.padding
        xq = F.pad(xq, (l1, r1, t0, b0))
        fmt = pol.product.compute
        if fmt == "int32" or TORCH_DTYPES[fmt].itemsize >= xq.dtype.itemsize:
            exact = fmt != "int32" or xq.dtype == torch.float64 or wq[0].numel() * INT8_MAX**2 < 2**24
            dt = xq.dtype if exact else torch.float64
            acc = F.conv2d(xq.to(dt), wq.to(dt), None, self.stride, 0, self.dilation, self.groups).to(xq.dtype)
            if fmt == "int32":
                acc = _int32_guard(acc, counts)
        else:
            acc = self._per_operation(xq, wq, fmt)
        return self._finish(acc * (xs * ws), counts, x.dtype)

    def _per_operation(self, xp: torch.Tensor, w: torch.Tensor, fmt: str) -> torch.Tensor:
        if self.groups != 1:
            raise InputError(f"per-operation {fmt} arithmetic is emulated for groups=1 only, not {self.groups}")
        (sh, sw), (dh, dw) = _pair(self.stride), _pair(self.dilation)
        kh, kw = self.kernel_size
        H = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
        W = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
        acc = None
        for c in range(w.shape[1]):
            for i in range(kh):
                for j in range(kw):
                    patch = xp[:, c:c + 1, i * dh:i * dh + (H - 1) * sh + 1:sh, j * dw:j * dw + (W - 1) * sw + 1:sw]
                    term = round_to(w[None, :, c, i, j, None, None] * patch, fmt)
                    acc = term if acc is None else round_to(acc + term, fmt)
        assert acc is not None
        return acc


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
    """What `replace_conv2d` did: convolutions swapped, and those left alone with the reason."""

    replaced: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def replace_conv2d(model: nn.Module, algorithm: str | AnyAlgorithm, precision: str | Policy = "fp32", *,
                   others: str = "keep", inplace: bool = False) -> nn.Module:
    """A copy of `model` whose eligible 3×3 stride-1 convolutions run `algorithm` under `precision`.

    `algorithm` may be "direct" (the precision baseline). Ineligible convolutions are left alone
    (others="keep") or computed directly in the same precision (others="direct"); either way they are
    listed in `model.novagen_replacement.skipped`.
    """
    if others not in ("keep", "direct"):
        raise InputError(f"others='{others}' is not understood: use 'keep' or 'direct'")
    resolved = resolve_algorithm(algorithm)
    pol = policy(precision)
    kernel = (3, 3) if resolved == DIRECT else tuple(a.r for a in axes_2d(resolved))  # type: ignore[arg-type]
    out = model if inplace else copy.deepcopy(model)
    report = Replacement()
    for name, mod in list(out.named_modules()):
        if not isinstance(mod, nn.Conv2d):
            continue
        reason = ineligible(mod, kernel)  # type: ignore[arg-type]
        if reason is None:
            new: nn.Module = (DirectConv2d.from_conv(mod, pol) if resolved == DIRECT
                              else WinogradConv2d.from_conv(mod, resolved, pol))  # type: ignore[arg-type]
            report.replaced.append(name)
        else:
            report.skipped.append((name, reason))
            if others == "keep":
                continue
            new = DirectConv2d.from_conv(mod, pol)
        _set_submodule(out, name, new)
    out.novagen_replacement = report  # type: ignore[assignment]
    return out


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


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
