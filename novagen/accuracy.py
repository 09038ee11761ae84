"""Accuracy lab: the error of a Winograd (or direct) layer under a precision policy, measured against a
float64 direct convolution on realistic layer data.

The policies and their emulation live in `novagen.precision`; this module picks the operands, runs the
emulation and reports the error (`ErrorReport`), never hiding an overflow: any inf/NaN output makes the
error infinite and is counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from novagen.algebra import Algorithm, AnyAlgorithm, Nested
from novagen.balancing import balance
from novagen.catalog import algorithm as lookup_algorithm
from novagen.errors import InputError
from novagen.layers import conv_bytes, parse_layer
from novagen.limits import require_memory
from novagen.limits import seed as limits_seed
from novagen.precision import Policy, direct_emulate, policy, winograd_emulate
from novagen.reference import correlate_direct, real_array

DIRECT = "direct"


def emulation_bytes(shape: Sequence[int], algs: Sequence[Algorithm] | None) -> float:
    """Memory the float64 emulation of a layer needs, about: the reference (with its im2col copy), and for
    Winograd three copies each of the input tiles and the Winograd-domain products (per-operation rounding
    keeps temporaries of their size)."""
    if len(shape) != 5:
        return 0.0
    n, c, h, w, k = (int(v) for v in shape)
    total = conv_bytes((n, c, h, w, k), 3, 1)
    if algs:
        a, m = algs[0].alpha, algs[0].m
        tiles = n * -(-h // m) * -(-w // m)
        total += 8.0 * 3 * (tiles * a * a * (c + k)) + 8.0 * k * c * a * a
    return total


def _shape(shape: Sequence[int]) -> tuple[int, int, int, int, int]:
    parsed = parse_layer(shape)
    assert parsed is not None
    return parsed


# ---------------------------------------------------------------------------------------------------
# Layer error


def layer_data(shape: Sequence[int], seed: int = 0, r: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Realistic layer operands: post-ReLU activations with a BatchNorm-like per-channel scale and
    shift (about half the values zero, the rest O(1)), and He-initialised weights N(0, 2/(C·r²))."""
    N, C, H, W, K = _shape(shape)
    rng = np.random.default_rng(limits_seed(seed))
    gamma = rng.uniform(0.5, 2.0, C)[None, :, None, None]
    beta = rng.normal(0.0, 0.5, C)[None, :, None, None]
    x = np.maximum(gamma * rng.standard_normal((N, C, H, W)) + beta, 0.0)
    w = rng.standard_normal((K, C, r, r)) * math.sqrt(2.0 / (C * r * r))
    return x, w


def resolve_algorithm(alg: str | AnyAlgorithm, balanced: bool = False) -> AnyAlgorithm | str:
    """An algorithm object, a catalog name or spec, or "direct" for the direct-convolution baseline
    (with `balanced`, each axis replaced by `balance` of it)."""
    if isinstance(alg, str) and alg.strip().lower() == DIRECT:
        return DIRECT
    if isinstance(alg, str):
        alg = lookup_algorithm(alg)
    if not isinstance(alg, (Algorithm, Nested)):
        raise InputError(f"expected an algorithm, a catalog name or 'direct', got {type(alg).__name__}")
    if not balanced:
        return alg
    if isinstance(alg, Algorithm):
        return balance(alg)
    return Nested(tuple(balance(a) for a in alg.axes), f"{alg.label}+balanced")


def axes_2d(alg: AnyAlgorithm) -> tuple[Algorithm, Algorithm]:
    """The two 1D algorithms of a 2D convolution (a 1D algorithm is used on both axes)."""
    if isinstance(alg, Algorithm):
        return (alg, alg)
    if len(alg.axes) != 2:
        raise InputError(f"{alg.label} is {len(alg.axes)}D; a 2D convolution needs a 1D or 2D algorithm")
    return alg.axes[0], alg.axes[1]


def _label(alg: AnyAlgorithm | str) -> str:
    return alg if isinstance(alg, str) else alg.label


@dataclass(frozen=True)
class ErrorReport:
    """Error of one (algorithm, precision, layer or network) against the fp64 reference.

    Non-finite outputs are never dropped: any inf/NaN makes rel_l2 and max_abs inf and snr_db -inf,
    and `overflow_count` says how many outputs it was (`overflows` counts per stage).
    """

    algorithm: str
    precision: str
    target: str
    rel_l2: float
    max_abs: float
    snr_db: float
    overflow_count: int
    overflows: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The JSON row of the output contract (inf/NaN written as null; overflow_count says why)."""
        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        out: dict[str, Any] = {
            "algorithm": self.algorithm, "precision": self.precision, "target": self.target,
            "rel_l2": num(self.rel_l2), "max_abs": num(self.max_abs), "snr_db": num(self.snr_db),
            "overflow_count": self.overflow_count, "overflows": dict(self.overflows),
        }
        for k, v in self.extra.items():
            out[k] = num(v) if isinstance(v, float) else v
        return out


def error_metrics(y: np.ndarray, ref: np.ndarray) -> tuple[float, float, float, int]:
    """(rel_l2, max_abs, snr_db, non-finite count) of y against ref."""
    bad = int(np.count_nonzero(~np.isfinite(y)))
    if bad:
        return math.inf, math.inf, -math.inf, bad
    err = y - ref
    num = float(np.linalg.norm(err))
    den = float(np.linalg.norm(ref))
    rel = num / den if den > 0 else (0.0 if num == 0 else math.inf)
    snr = math.inf if num == 0 else (20 * math.log10(den / num) if den > 0 else -math.inf)
    return rel, float(np.max(np.abs(err))) if err.size else 0.0, snr, 0


def layer_error(alg: str | AnyAlgorithm, precision: str | Policy = "fp16",
                shape: Sequence[int] = (1, 64, 56, 56, 64), seed: int = 0, *,
                x: np.ndarray | None = None, w: np.ndarray | None = None,
                padding: Any = "same", balanced: bool = False) -> ErrorReport:
    """Error of one 3×3 layer run with `alg` (or "direct") under `precision`, against fp64 direct.

    Operands are `layer_data(shape, seed)` unless real `x` and/or `w` are given; `balanced` runs
    `balance(alg)` instead of the matrices as stored.
    """
    resolved = resolve_algorithm(alg, balanced)
    pol = policy(precision)
    r = 3 if resolved == DIRECT else axes_2d(resolved)[0].r  # type: ignore[arg-type]
    seed = limits_seed(seed)
    dims = _shape(shape) if x is None else (*np.shape(x), (np.shape(w)[0] if w is not None else _shape(shape)[4]))
    require_memory(emulation_bytes(dims, None if resolved == DIRECT else axes_2d(resolved)),  # type: ignore[arg-type]
                   f"emulating layer {','.join(map(str, dims))}")
    gx, gw = (None, None) if x is not None and w is not None else layer_data(shape, seed, r)
    x = gx if x is None else real_array(x, "x")
    w = gw if w is None else real_array(w, "w")
    ref = correlate_direct(x, w, padding)
    if resolved == DIRECT:
        y, counts = direct_emulate(x, w, pol, padding)
    else:
        algs = axes_2d(resolved)  # type: ignore[arg-type]
        if tuple(w.shape[2:]) != (algs[0].r, algs[1].r):
            raise InputError(f"{_label(resolved)} needs a {algs[0].r}×{algs[1].r} kernel, got {w.shape[2:]}")
        y, counts = winograd_emulate(x, w, algs, pol, padding)
    rel, mx, snr, bad = error_metrics(y, ref)
    target = "layer " + ",".join(str(d) for d in (x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0]))
    return ErrorReport(_label(resolved), pol.name, target, rel, mx, snr, bad, counts)
