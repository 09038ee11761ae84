"""Numerical metrics of an algorithm: pure float64 functions of its exact matrices.

- `vandermonde_cond`: 2-norm condition number of the square Vandermonde matrix of the finite points,
  the NOVA paper's κ; `vandermonde_cond_2d` = κ², the condition number of V ⊗ V.
- `cond_AT`, `cond_G`, `cond_BT`: 2-norm condition numbers (σmax/σmin) of the transforms.
- `amplification`: sum over Winograd-domain points j of |AT[:, j]|² · |G[j, :]|² · |BT[j, :]|².  Each
  term bounds how much rounding at point j reaches the output; unlike κ it tracks measured
  low-precision error closely.  `amplification_2d` is the same sum over the 2D grid (its square).
- `max_entry`: the largest |entry| of AT, G, BT; `nnz_*`: nonzero entries of each.

A `Nested` algorithm's transforms are Kronecker products of its axes', so its metrics are the
products of the axes' (the largest entry is the largest product across axes).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from novagen.algebra import Algorithm, AnyAlgorithm, Nested

METRIC_NAMES = (
    "vandermonde_cond", "vandermonde_cond_2d", "cond_AT", "cond_G", "cond_BT", "amplification",
    "amplification_2d", "max_entry", "max_entry_AT", "max_entry_G", "max_entry_BT", "nnz_AT", "nnz_G",
    "nnz_BT",
)


def vandermonde(points: Any) -> np.ndarray:
    """Square Vandermonde matrix V[i, j] = p_i^j of finite points, in float64."""
    p = np.array([float(x) for x in points], dtype=np.float64)
    return np.vander(p, increasing=True)


def cond2(mat: np.ndarray) -> float:
    """2-norm condition number σmax/σmin (inf when singular)."""
    s = np.linalg.svd(mat, compute_uv=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else math.inf


def amplification_of(AT: np.ndarray, G: np.ndarray, BT: np.ndarray) -> float:
    """sum_j |AT[:, j]|² · |G[j, :]|² · |BT[j, :]|² of float transforms (see module docstring)."""
    return float(np.sum((AT**2).sum(axis=0) * (G**2).sum(axis=1) * (BT**2).sum(axis=1)))


def amplification(alg: Algorithm) -> float:
    """Transform-based error amplification of a 1D algorithm."""
    return amplification_of(*alg.matrices("float64"))


def float_transforms(m: int, r: int, points: np.ndarray, infinity: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AT, G, BT in float64 straight from float points (the Cook–Toom formulas of `algebra`).

    For searches, which evaluate thousands of point sets; row signs may differ from the exact
    construction (no metric here depends on them).
    """
    p = np.asarray(points, dtype=np.float64)
    alpha = m + r - 1
    diff = p[:, None] - p[None, :]
    np.fill_diagonal(diff, 1.0)
    f = diff.prod(axis=1)
    AT = p[None, :] ** np.arange(m)[:, None]
    G = p[:, None] ** np.arange(r)[None, :] / f[:, None]
    BT = np.zeros((len(p) + int(infinity), alpha))
    for j in range(len(p)):
        BT[j, : len(p)] = np.poly(np.delete(p, j))[::-1]
    if infinity:
        AT = np.hstack([AT, np.eye(m)[:, -1:]])
        G = np.vstack([G, np.eye(r)[-1:]])
        BT[-1] = np.poly(p)[::-1]
    return AT, G, BT


@lru_cache(maxsize=1024)
def _axis_metrics(alg: Algorithm) -> dict[str, Any]:
    AT, G, BT = alg.matrices("float64")
    finite = alg.finite_points
    kappa = cond2(vandermonde(finite)) if finite else None
    amp = amplification(alg)
    out: dict[str, Any] = {
        "vandermonde_cond": kappa,
        "vandermonde_cond_2d": None if kappa is None else kappa**2,
        "cond_AT": cond2(AT),
        "cond_G": cond2(G),
        "cond_BT": cond2(BT),
        "amplification": amp,
        "amplification_2d": amp**2,
        "max_entry_AT": float(np.abs(AT).max()),
        "max_entry_G": float(np.abs(G).max()),
        "max_entry_BT": float(np.abs(BT).max()),
        "nnz_AT": int(np.count_nonzero(AT)),
        "nnz_G": int(np.count_nonzero(G)),
        "nnz_BT": int(np.count_nonzero(BT)),
    }
    out["max_entry"] = max(out["max_entry_AT"], out["max_entry_G"], out["max_entry_BT"])
    return {k: out[k] for k in METRIC_NAMES}


def metrics(alg: AnyAlgorithm) -> dict[str, Any]:
    """All metrics of an algorithm, keyed as in METRIC_NAMES (None where undefined)."""
    if isinstance(alg, Algorithm):
        return dict(_axis_metrics(alg))
    if not isinstance(alg, Nested):
        raise TypeError(f"metrics() takes an Algorithm or Nested, not {type(alg).__name__}")
    per_axis = [_axis_metrics(a) for a in alg.axes]
    out: dict[str, Any] = {}
    for key in METRIC_NAMES:
        values = [m[key] for m in per_axis]
        out[key] = None if any(v is None for v in values) else math.prod(values)
    out["vandermonde_cond_2d"] = out["vandermonde_cond"] if len(alg.axes) == 2 else None
    out["amplification_2d"] = out["amplification"] if len(alg.axes) == 2 else None
    out["max_entry"] = max(out["max_entry_AT"], out["max_entry_G"], out["max_entry_BT"])
    return out
