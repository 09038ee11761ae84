"""Low-precision emulation of Winograd and direct convolutions, written once (`emulator`) over an array
interface with NumPy (`numpy_arrays`) and PyTorch (`torch_arrays`) implementations; the policies
(`policies`) and number formats (`formats`) it reads.

`winograd_emulate` and `direct_emulate` run the NumPy emulation on float64 arrays: the accuracy lab and
the search's measured objectives use them; `novagen.torch` runs the same emulator on tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from novagen.precision.emulator import Transforms, direct, winograd
from novagen.precision.formats import DTYPES, FLOAT_FORMATS, INT8_MAX, INT32_MAX, format_max, round_to
from novagen.precision.numpy_arrays import NumpyArrays
from novagen.precision.policies import POLICIES, SCALES, Policy, Stage, policy
from novagen.reference import resolve_padding

__all__ = ["DTYPES", "FLOAT_FORMATS", "INT32_MAX", "INT8_MAX", "POLICIES", "SCALES", "FloatTransforms",
           "Policy", "Stage", "Transforms", "direct_emulate", "format_max", "policy", "round_to",
           "winograd_emulate"]


@dataclass(frozen=True)
class FloatTransforms:
    """Float64 transforms (AT, G, BT) for the emulator, e.g. of points not yet snapped to rationals;
    `matrices(dtype)` rounds them to a format (an `Algorithm` rounds its exact entries instead)."""

    m: int
    r: int
    mats: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def alpha(self) -> int:
        return self.m + self.r - 1

    def matrices(self, dtype: Any = "float64") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(M.astype(dtype) for M in self.mats)  # type: ignore[return-value]


def winograd_emulate(x: np.ndarray, w: np.ndarray, algs: Sequence[Transforms], pol: Policy | str,
                     padding: Any = "same", blas: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """Winograd correlation under a policy in NumPy; returns y (float64) and non-finite counts per stage
    (`blas`: fp32 stages as float32 matrix products, see `NumpyArrays`)."""
    ops = NumpyArrays(blas)
    x, w = ops.asarray(x), ops.asarray(w)
    pads = resolve_padding(padding, [a.r for a in algs])
    with np.errstate(over="ignore", invalid="ignore"):
        return winograd(x, w, algs, policy(pol), pads, ops)


def direct_emulate(x: np.ndarray, w: np.ndarray, pol: Policy | str,
                   padding: Any = "same") -> tuple[np.ndarray, dict[str, int]]:
    """Direct correlation under the same policy in NumPy (see `emulator.direct`)."""
    ops = NumpyArrays()
    x, w = ops.asarray(x), ops.asarray(w)
    pads = resolve_padding(padding, w.shape[2:])
    with np.errstate(over="ignore", invalid="ignore"):
        return direct(x, w, policy(pol), pads, ops)
