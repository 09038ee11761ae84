"""The emulator's array primitives in PyTorch: float32 tensors (float64 when a policy stage uses fp64),
which hold every narrower format exactly.  Transforms are rounded per operation like NumPy's (fp32 arithmetic
on fp32 tensors is itself the per-operation rounding), so they agree bit for bit; channel sums and direct
convolutions in fp32 use torch's matrix products.  Differentiable where the arithmetic is (rounding passes
gradients straight through its casts), for the 2D convolutions of `novagen.torch`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from novagen.errors import InputError
from novagen.precision.formats import INT8_MAX, format_max
from novagen.precision.policies import Policy

TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}


def work_dtype(pol: Policy) -> torch.dtype:
    """fp64 tensors when a stage stores or computes in fp64, or stores int8 (its scales and codes then come out
    exactly as NumPy's float64 lab computes them: the int8 path agrees bit for bit); else fp32 (which holds
    every narrower value)."""
    stages = (pol.operands, pol.input_transform, pol.filter_transform, pol.product, pol.output_transform)
    wide = any("fp64" in (s.store, s.compute) or s.store == "int8" for s in stages)
    return torch.float64 if wide else torch.float32


class TorchArrays:
    """Tensors of one float dtype (float32 or float64) on one device."""

    def __init__(self, dtype: torch.dtype = torch.float32, device: Any = None) -> None:
        self.dtype, self.device = dtype, device
        self.native = frozenset({"fp64"})
        self.native_sums = frozenset({"fp64", "fp32"})

    def asarray(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    def matrix(self, m: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(m, dtype=np.float64), device=self.device).to(self.dtype)

    def round(self, x: torch.Tensor, fmt: str) -> torch.Tensor:
        """Round to a float format and back; fp8 e4m3 overflow gives NaN (torch's cast saturates)."""
        dt = TORCH_DTYPES[fmt]
        if dt == x.dtype or (fmt == "fp64" and x.dtype == torch.float32):
            return x
        y = x.to(dt).to(x.dtype)
        if fmt == "fp8_e4m3":
            y = torch.where(x.abs() >= format_max(fmt) + 16.0, torch.full_like(x, float("nan")), y)
        return y

    def amax(self, x: torch.Tensor, keep_last: int) -> torch.Tensor:
        if keep_last == 0:
            return x.abs().max() if x.numel() else torch.zeros((), dtype=x.dtype, device=x.device)
        return x.abs().flatten(0, x.ndim - keep_last - 1).amax(0)

    def largest(self, x: torch.Tensor) -> float:
        """max |x| as a number, outside autograd (a check, not part of the computation)."""
        return float(x.detach().abs().max()) if x.numel() else 0.0

    def rint(self, x: torch.Tensor) -> torch.Tensor:
        """Round to integers; straight through in the backward pass (so training sees past int8 stages)."""
        return x + (torch.round(x) - x).detach() if x.requires_grad else torch.round(x)

    def clip(self, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.clamp(x, lo, hi)

    def where(self, cond: Any, a: Any, b: Any) -> torch.Tensor:
        return torch.where(cond, a, b)

    def count_nonfinite(self, x: Any) -> int:
        if not isinstance(x, torch.Tensor) or self.all_finite(x):
            return 0
        return int((~torch.isfinite(x)).sum())

    def count_true(self, mask: torch.Tensor) -> int:
        return int(mask.sum())

    def all_finite(self, x: torch.Tensor) -> bool:
        """One pass with no temporary: the extremes are finite exactly when every value is (NaN propagates)."""
        if not x.numel():
            return True
        lo, hi = torch.aminmax(x.detach())
        return bool(torch.isfinite(lo) & torch.isfinite(hi))

    def zeros(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.zeros(tuple(shape), dtype=self.dtype, device=self.device)

    def moveaxis(self, x: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        return x.movedim(src, dst)

    def slices(self, x: torch.Tensor, axis: int) -> list[torch.Tensor]:
        return list(x.movedim(axis, 0).contiguous().unbind(0))

    def stack(self, xs: Sequence[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.stack(list(xs), dim=axis)

    def scalar(self, v: float) -> float:
        return float(v)

    def fp32(self, x: torch.Tensor) -> torch.Tensor:
        """x rounded to fp32 and held as float32 (float32 arithmetic on it rounds per operation)."""
        return x.to(torch.float32)

    def widen(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)

    def apply(self, x: torch.Tensor, T: torch.Tensor, fmt: str) -> torch.Tensor:
        return x @ T.T

    def gemm(self, U: torch.Tensor, V: torch.Tensor, fmt: str) -> torch.Tensor:
        """Σ_c U[k,c,a,b]·V[n,c,t,s,a,b] as alpha² batched matrix products; int32 sums exactly (in float64
        when float32 could not hold them)."""
        if fmt == "int32" and U.dtype == torch.float32 and U.shape[1] * INT8_MAX * INT8_MAX >= 2**24:
            return self.gemm(U.double(), V.double(), fmt).to(U.dtype)
        if U.ndim != 4 or V.ndim != 6:
            raise InputError("the PyTorch emulator runs 2D convolutions only")
        K, C, a, b = U.shape
        N, _, t, s = V.shape[:4]
        u = U.permute(2, 3, 0, 1).reshape(a * b, K, C)
        v = V.permute(4, 5, 1, 0, 2, 3).reshape(a * b, C, N * t * s)
        return torch.bmm(u, v).reshape(a, b, K, N, t, s).permute(3, 2, 4, 5, 0, 1)

    def tiles(self, x: torch.Tensor, algs: Sequence[Any], pads: tuple[tuple[int, int], ...]
              ) -> tuple[torch.Tensor, list[int]]:
        a0, a1 = algs
        (t0, b0), (l1, r1) = pads
        H = x.shape[2] + t0 + b0 - a0.r + 1
        W = x.shape[3] + l1 + r1 - a1.r + 1
        if H < 1 or W < 1:
            raise InputError(f"input {tuple(x.shape[2:])} with padding {pads} is smaller than the kernel")
        th, tw = -(-H // a0.m), -(-W // a1.m)
        xp = F.pad(x, (l1, r1 + tw * a1.m + a1.r - 1 - (x.shape[3] + l1 + r1),
                       t0, b0 + th * a0.m + a0.r - 1 - (x.shape[2] + t0 + b0)))
        return xp.unfold(2, a0.alpha, a0.m).unfold(3, a1.alpha, a1.m), [H, W]

    def assemble(self, Y: torch.Tensor, out: Sequence[int]) -> torch.Tensor:
        n, k, th, tw, m0, m1 = Y.shape
        return Y.permute(0, 1, 2, 4, 3, 5).reshape(n, k, th * m0, tw * m1)[:, :, :out[0], :out[1]]

    def pad(self, x: torch.Tensor, pads: tuple[tuple[int, int], ...]) -> torch.Tensor:
        (t0, b0), (l1, r1) = pads
        return F.pad(x, (l1, r1, t0, b0))

    def conv(self, x: torch.Tensor, w: torch.Tensor, stride: tuple[int, ...], dilation: tuple[int, ...],
             groups: int, fmt: str) -> torch.Tensor:
        exact = fmt != "int32" or x.dtype == torch.float64 or w[0].numel() * INT8_MAX**2 < 2**24
        dt = x.dtype if exact else torch.float64
        return F.conv2d(x.to(dt), w.to(dt), None, stride, 0, dilation, groups).to(x.dtype)
