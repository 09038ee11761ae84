"""The emulator's array primitives in NumPy: float64 arrays (which hold every emulated format exactly), so
every stage narrower than fp64 is rounded per operation; `blas=True` runs fp32 stages as float32 matrix
products instead (the library's own order and FMAs: 10x faster, different only at fp32 precision; the
search's measured objectives use it, the lab does not)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from novagen.errors import InputError
from novagen.precision.formats import round_to
from novagen.reference import assemble, correlate_direct, input_tiles, multiply


class NumpyArrays:
    """float64 NumPy arrays; fp32 native too with `blas`."""

    def __init__(self, blas: bool = False) -> None:
        self.blas = blas
        self.native = self.native_sums = frozenset({"fp64", "fp32"} if blas else {"fp64"})

    def asarray(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def matrix(self, m: np.ndarray) -> np.ndarray:
        return np.asarray(m, dtype=np.float64)

    def round(self, x: np.ndarray, fmt: str) -> np.ndarray:
        return round_to(x, fmt)

    def amax(self, x: np.ndarray, keep_last: int) -> np.ndarray:
        if keep_last == 0:
            return np.asarray(np.max(np.abs(x)) if x.size else 0.0)
        return np.max(np.abs(x), axis=tuple(range(x.ndim - keep_last)))

    def largest(self, x: np.ndarray) -> float:
        return float(np.max(np.abs(x))) if x.size else 0.0

    def rint(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.rint(x)

    def clip(self, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.clip(x, lo, hi)

    def where(self, cond: Any, a: Any, b: Any) -> np.ndarray:
        return np.where(cond, a, b)

    def count_nonfinite(self, x: Any) -> int:
        return int(np.count_nonzero(~np.isfinite(x)))

    def count_true(self, mask: Any) -> int:
        return int(np.count_nonzero(mask))

    def all_finite(self, x: np.ndarray) -> bool:
        return bool(np.isfinite(x).all())

    def zeros(self, shape: Sequence[int]) -> np.ndarray:
        return np.zeros(tuple(shape))

    def moveaxis(self, x: np.ndarray, src: int, dst: int) -> np.ndarray:
        return np.moveaxis(x, src, dst)

    def slices(self, x: np.ndarray, axis: int) -> list[np.ndarray]:
        return list(np.ascontiguousarray(np.moveaxis(x, axis, 0)))

    def stack(self, xs: Sequence[np.ndarray], axis: int) -> np.ndarray:
        return np.stack(xs, axis=axis)

    def scalar(self, v: float) -> np.float64:
        return np.float64(v)

    def fp32(self, x: np.ndarray) -> np.ndarray:
        """x rounded to fp32 and held as float32 (float32 arithmetic on it rounds per operation)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(x, dtype=np.float32)

    def widen(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def apply(self, x: np.ndarray, T: np.ndarray, fmt: str) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            if fmt == "fp32":
                return (x.astype(np.float32) @ T.astype(np.float32).T).astype(np.float64)
            return x @ T.T

    def gemm(self, U: np.ndarray, V: np.ndarray, fmt: str) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            if fmt == "fp32":
                return multiply(U.astype(np.float32), V.astype(np.float32)).astype(np.float64)
            return multiply(U, V)

    def tiles(self, x: np.ndarray, algs: Sequence[Any], pads: tuple[tuple[int, int], ...]) -> tuple[Any, list[int]]:
        return input_tiles(x, algs, pads)

    def assemble(self, Y: np.ndarray, out: Sequence[int]) -> np.ndarray:
        return assemble(Y, out)

    def pad(self, x: np.ndarray, pads: tuple[tuple[int, int], ...]) -> np.ndarray:
        return np.pad(x, ((0, 0), (0, 0), *pads))

    def conv(self, x: np.ndarray, w: np.ndarray, stride: tuple[int, ...], dilation: tuple[int, ...], groups: int,
             fmt: str) -> np.ndarray:
        if any(s != 1 for s in (*stride, *dilation)) or groups != 1:
            raise InputError("the NumPy emulator runs stride-1, dilation-1, ungrouped convolutions only")
        with np.errstate(over="ignore", invalid="ignore"):
            y = correlate_direct(x, w, "valid")
        return round_to(y, "fp32") if fmt == "fp32" else y
