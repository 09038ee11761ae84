"""Number formats the precision policies store and compute in, and rounding float64 values to them once.

Every format's values are held exactly in float64 (fp32, fp16, bf16, fp8 and int8 all are), so an emulator
can keep float64 arrays that hold format values; rounding a float64 to bf16 or fp8 goes through fp32 with
round-to-odd so that it rounds once.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

DTYPES: dict[str, Any] = {
    "fp64": np.dtype(np.float64),
    "fp32": np.dtype(np.float32),
    "fp16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "fp8_e4m3": np.dtype(ml_dtypes.float8_e4m3fn),
    "fp8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}
FLOAT_FORMATS = tuple(DTYPES)
STORE_FORMATS = (*FLOAT_FORMATS, "int8")
COMPUTE_FORMATS = (*FLOAT_FORMATS, "int32")
BITS = {"fp64": 64, "fp32": 32, "fp16": 16, "bf16": 16, "fp8_e4m3": 8, "fp8_e5m2": 8, "int8": 8, "int32": 32}
INT8_MAX = 127
INT32_MAX = 2**31 - 1


def format_max(fmt: str) -> float:
    """Largest finite value of a storage format (127 for int8)."""
    if fmt == "int8":
        return float(INT8_MAX)
    return float(ml_dtypes.finfo(DTYPES[fmt]).max)


def _to_float32_odd(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd: a second rounding to <= 22 bits is then correct."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = x.astype(np.float32)
    inexact = np.isfinite(x) & (f.astype(np.float64) != x)
    even = (f.view(np.uint32) & 1) == 0
    fix = inexact & even
    if np.any(fix):
        f = f.copy()
        toward = np.where(x[fix] > f[fix], np.inf, -np.inf).astype(np.float32)
        f[fix] = np.nextafter(f[fix], toward)
    return f


def round_to(x: np.ndarray, fmt: str) -> np.ndarray:
    """Round float64 values once to a float format and return them as float64 (overflow -> inf/NaN)."""
    if fmt == "fp64":
        return np.asarray(x, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if fmt in ("fp32", "fp16"):
            return x.astype(DTYPES[fmt]).astype(np.float64)
        return _to_float32_odd(x).astype(DTYPES[fmt]).astype(np.float64)
