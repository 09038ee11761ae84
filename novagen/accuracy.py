"""Accuracy lab: emulate a precision policy on a Winograd layer and measure its error.

A `Policy` says, for each stage of the pipeline, the format its result is stored in and the format
its arithmetic runs in:

- operands: the layer's input x and weights w as they arrive;
- input transform V = BT·d·B and filter transform U = G·g·Gᵀ;
- product: the element-wise product summed over channels (alpha² channel GEMMs), M;
- output transform Y = AT·M·A, assembled into y.

Rounding is modelled per operation: inside a stage every multiply and every add is rounded to the
compute format (no fused multiply-add, sums in a fixed sequential order), and the stage's result is
rounded once more to its storage format.  Products of two fp16/bf16/fp8 values are exact in fp32, so
"fp16 storage, fp32 compute" is the usual GPU discipline (tensor cores) and "fp16-pure" is HFMA-free
half arithmetic.  int8 stages quantize symmetrically with a scale per tensor or per Winograd tap and
accumulate exactly in int32.  Overflow becomes inf or NaN as the format does it (fp8 e4m3 has no inf:
NaN) and is counted at every stage, never clipped away.

Everything is emulated in float64 NumPy, which holds every value of these formats exactly; rounding a
float64 to bf16 or fp8 goes through fp32 with round-to-odd so that it rounds once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np

from novagen.algebra import Algorithm, AnyAlgorithm, Nested
from novagen.catalog import algorithm as lookup_algorithm
from novagen.errors import InputError
from novagen.reference import (
    assemble,
    correlate_direct,
    input_tiles,
    multiply,
    resolve_padding,
)

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
SCALES = ("none", "tensor", "tap")
INT8_MAX = 127
INT32_MAX = 2**31 - 1
DIRECT = "direct"


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


@dataclass(frozen=True)
class Stage:
    """How one stage runs: its result is stored in `store`, its arithmetic runs in `compute`.

    `scale` applies to int8 and fp8 storage: "tensor" (one symmetric scale, amax-calibrated), "tap"
    (one per Winograd-domain point; transformed tensors only) or "none" (fp8 values as they are).
    """

    store: str
    compute: str = "fp32"
    scale: str = "none"

    def __post_init__(self) -> None:
        if self.store not in STORE_FORMATS:
            raise InputError(f"storage format '{self.store}' is not known: use one of {', '.join(STORE_FORMATS)}")
        if self.compute not in COMPUTE_FORMATS:
            raise InputError(f"compute format '{self.compute}' is not known: use one of "
                             f"{', '.join(COMPUTE_FORMATS)}")
        if self.scale not in SCALES:
            raise InputError(f"scale '{self.scale}' is not known: use one of {', '.join(SCALES)}")
        if self.store == "int8" and self.scale == "none":
            raise InputError("int8 storage needs a scale: 'tensor' or 'tap'")


@dataclass(frozen=True)
class Policy:
    """A precision policy: one `Stage` per step of the Winograd pipeline."""

    name: str
    operands: Stage
    input_transform: Stage
    filter_transform: Stage
    product: Stage
    output_transform: Stage

    def __post_init__(self) -> None:
        int_gemm = self.product.compute == "int32"
        int_ops = self.input_transform.store == "int8" and self.filter_transform.store == "int8"
        if int_gemm != int_ops:
            raise InputError(f"policy '{self.name}': int32 accumulation needs int8 transformed operands and "
                             "int8 operands need int32 accumulation")
        for label, st in (("input transform", self.input_transform), ("filter transform", self.filter_transform),
                          ("output transform", self.output_transform)):
            if st.compute not in FLOAT_FORMATS:
                raise InputError(f"policy '{self.name}': the {label} computes in a float format, not {st.compute}")

    def describe(self) -> str:
        parts = []
        for label, st in (("x,w", self.operands), ("BT·d·B", self.input_transform), ("G·g·Gᵀ", self.filter_transform),
                          ("Σc U⊙V", self.product), ("AT·M·A", self.output_transform)):
            scale = f"/{st.scale}" if st.scale != "none" else ""
            parts.append(f"{label}: {st.store}{scale} ({st.compute})")
        return "; ".join(parts)


def _uniform(name: str, store: str, compute: str) -> Policy:
    st = Stage(store, compute)
    return Policy(name, st, st, st, st, st)


def _scaled(name: str, fmt: str, scale: str) -> Policy:
    """GEMM operands (V, U) in a narrow format with scales; transforms in fp32; the rest in fp16."""
    if fmt == "int8":
        ops = Stage("int8", "fp32", "tensor")
        return Policy(name, ops, Stage("int8", "fp32", scale), Stage("int8", "fp32", scale),
                      Stage("fp32", "int32"), Stage("fp32", "fp32"))
    half = Stage("fp16", "fp32")
    return Policy(name, half, Stage(fmt, "fp32", scale), Stage(fmt, "fp32", scale), half, half)


POLICIES: dict[str, Policy] = {
    "fp64": _uniform("fp64", "fp64", "fp64"),
    "fp32": _uniform("fp32", "fp32", "fp32"),
    "fp16": _uniform("fp16", "fp16", "fp32"),
    "fp16-pure": _uniform("fp16-pure", "fp16", "fp16"),
    "bf16": _uniform("bf16", "bf16", "fp32"),
    "bf16-pure": _uniform("bf16-pure", "bf16", "bf16"),
    "fp8-e4m3": _scaled("fp8-e4m3", "fp8_e4m3", "tensor"),
    "fp8-e4m3-tap": _scaled("fp8-e4m3-tap", "fp8_e4m3", "tap"),
    "fp8-e5m2": _scaled("fp8-e5m2", "fp8_e5m2", "tensor"),
    "fp8-e5m2-tap": _scaled("fp8-e5m2-tap", "fp8_e5m2", "tap"),
    "int8": _scaled("int8", "int8", "tensor"),
    "int8-tap": _scaled("int8-tap", "int8", "tap"),
}


def policy(precision: str | Policy) -> Policy:
    """A policy by name (fp32, fp16, fp16-pure, bf16, fp8-e4m3, int8, int8-tap, ...) or as given."""
    if isinstance(precision, Policy):
        return precision
    if not isinstance(precision, str) or precision.strip().lower() not in POLICIES:
        raise InputError(f"precision {precision!r} is not known: use one of {', '.join(POLICIES)}")
    return POLICIES[precision.strip().lower()]


# ---------------------------------------------------------------------------------------------------
# Emulated stages (float64 arrays holding values of the emulated formats)


@dataclass(frozen=True)
class Stored:
    """A tensor as a stage stored it: `q` in the storage format, real value q * scale."""

    q: np.ndarray
    scale: np.ndarray | float = 1.0

    @property
    def value(self) -> np.ndarray:
        return self.q * self.scale


def _amax(x: np.ndarray, keep_last: int) -> np.ndarray | float:
    if keep_last == 0:
        return float(np.max(np.abs(x))) if x.size else 0.0
    return np.max(np.abs(x), axis=tuple(range(x.ndim - keep_last)))


def store(x: np.ndarray, stage: Stage, taps: int = 0) -> Stored:
    """Round a float64 tensor to a stage's storage format; `taps` trailing axes are Winograd taps."""
    keep = taps if stage.scale == "tap" else 0
    if stage.store == "int8":
        amax = _amax(x, keep)
        scale = np.where(amax > 0, amax / INT8_MAX, 1.0) if keep else (amax / INT8_MAX if amax > 0 else 1.0)
        with np.errstate(invalid="ignore"):
            q = np.clip(np.rint(x / scale), -INT8_MAX, INT8_MAX)
        return Stored(q, scale)
    if stage.scale != "none" and stage.store not in ("fp64", "fp32"):
        amax = _amax(x, keep)
        top = format_max(stage.store)
        scale = np.where(amax > 0, amax / top, 1.0) if keep else (amax / top if amax > 0 else 1.0)
        return Stored(round_to(x / scale, stage.store), scale)
    return Stored(round_to(x, stage.store))


def transform_axis(x: np.ndarray, T: np.ndarray, axis: int, fmt: str, blas: bool = False) -> np.ndarray:
    """T applied along `axis` of x, every multiply and add rounded to `fmt`; zero entries are skipped.

    `blas` runs fp32 as a float32 matrix product instead (the library's own order and FMAs): 10x faster,
    different only at fp32 precision; the search's measured objectives use it, the lab does not.
    """
    x = np.moveaxis(x, axis, -1)
    if fmt == "fp64":
        return np.moveaxis(x @ T.T, -1, axis)
    if fmt == "fp32" and blas:
        with np.errstate(over="ignore", invalid="ignore"):
            y = x.astype(np.float32) @ T.astype(np.float32).T
        return np.moveaxis(y.astype(np.float64), -1, axis)
    acc = np.zeros((*x.shape[:-1], T.shape[0]))
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(T.shape[1]):
            col = T[:, j]
            nz = col != 0
            if not nz.any():
                continue
            term = round_to(x[..., j:j + 1] * col, fmt)
            acc = np.where(nz, round_to(acc + term, fmt), acc)
    return np.moveaxis(acc, -1, axis)


def transform(x: np.ndarray, mats: Sequence[np.ndarray], first_axis: int, fmt: str,
              blas: bool = False) -> np.ndarray:
    """Apply one matrix per axis (axis first_axis + i gets mats[i]), rounding per operation."""
    for i, T in enumerate(mats):
        x = transform_axis(x, T, first_axis + i, fmt, blas)
    return x


def accumulate_channels(U: np.ndarray, V: np.ndarray, fmt: str, blas: bool = False) -> np.ndarray:
    """M[n,k,t,a] = Σ_c U[k,c,a]·V[n,c,t,a], each product and each add rounded to `fmt` (c in order)."""
    if fmt in ("fp64", "int32"):
        return multiply(U, V)
    if fmt == "fp32" and blas:  # as in transform_axis
        with np.errstate(over="ignore", invalid="ignore"):
            return multiply(U.astype(np.float32), V.astype(np.float32)).astype(np.float64)
    nd = U.ndim - 2
    nt = V.ndim - 2 - nd
    acc = None
    with np.errstate(over="ignore", invalid="ignore"):
        for c in range(U.shape[1]):
            u = U[:, c].reshape(1, U.shape[0], *([1] * nt), *U.shape[2:])
            v = V[:, c][:, None]
            term = round_to(u * v, fmt)
            acc = term if acc is None else round_to(acc + term, fmt)
    assert acc is not None
    return acc


def _matrices(algs: Sequence[Algorithm], fmt: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    dtype = DTYPES[fmt]
    return [tuple(m.astype(np.float64) for m in a.matrices(dtype)) for a in algs]  # type: ignore[misc]


def _nonfinite(x: np.ndarray) -> int:
    return int(np.count_nonzero(~np.isfinite(x)))


def _int32_guard(acc: np.ndarray) -> tuple[np.ndarray, int]:
    """An int32 accumulator that left its range wraps in hardware: mark it NaN and count it."""
    bad = np.abs(acc) > INT32_MAX
    return np.where(bad, np.nan, acc), int(np.count_nonzero(bad))


def winograd_emulate(x: np.ndarray, w: np.ndarray, algs: Sequence[Algorithm], pol: Policy,
                     padding: Any = "same", blas: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """Winograd correlation under a policy; returns y (float64) and non-finite counts per stage
    (`blas`: fp32 stages as float32 matrix products, see transform_axis)."""
    nd = len(algs)
    counts: dict[str, int] = {}
    xs, ws = store(x, pol.operands), store(w, pol.operands)
    counts["x"], counts["w"] = _nonfinite(xs.q), _nonfinite(ws.q)
    tiles, out = input_tiles(xs.value, algs, padding)
    it, ft, pt, ot = pol.input_transform, pol.filter_transform, pol.product, pol.output_transform
    V = store(transform(tiles, [bt for _, _, bt in _matrices(algs, it.compute)], tiles.ndim - nd, it.compute, blas),
              it, nd)
    U = store(transform(ws.value, [g for _, g, _ in _matrices(algs, ft.compute)], 2, ft.compute, blas), ft, nd)
    counts["V"], counts["U"] = _nonfinite(V.q), _nonfinite(U.q)
    acc = accumulate_channels(U.q, V.q, pt.compute, blas)
    if pt.compute == "int32":
        acc, counts["int32"] = _int32_guard(acc)
    with np.errstate(over="ignore", invalid="ignore"):
        M = store(acc * (np.asarray(U.scale) * np.asarray(V.scale)), pt, nd)
    counts["M"] = _nonfinite(M.q)
    Y = transform(M.value, [at for at, _, _ in _matrices(algs, ot.compute)], M.q.ndim - nd, ot.compute, blas)
    y = store(assemble(Y, out), ot)
    counts["y"] = _nonfinite(y.q)
    return y.value, counts


def direct_emulate(x: np.ndarray, w: np.ndarray, pol: Policy,
                   padding: Any = "same") -> tuple[np.ndarray, dict[str, int]]:
    """Direct correlation under the same policy: x and w stored as the GEMM operands would be
    (per-tensor scales), products summed over (c, ky, kx) in the product stage's compute format."""
    counts: dict[str, int] = {}
    xs, ws = store(x, pol.operands), store(w, pol.operands)
    per_tensor = "tensor" if pol.input_transform.scale != "none" else "none"
    xq = store(xs.value, replace(pol.input_transform, scale=per_tensor))
    wq = store(ws.value, replace(pol.filter_transform, scale=per_tensor))
    counts["x"], counts["w"] = _nonfinite(xq.q), _nonfinite(wq.q)
    fmt = pol.product.compute
    if fmt in ("fp64", "int32"):
        acc = correlate_direct(xq.q, wq.q, padding)
        if fmt == "int32":
            acc, counts["int32"] = _int32_guard(acc)
    else:
        kernel = w.shape[2:]
        pads = resolve_padding(padding, kernel)
        xp = np.pad(xq.q, ((0, 0), (0, 0), *pads))
        H, W = (xp.shape[2] - kernel[0] + 1, xp.shape[3] - kernel[1] + 1)
        acc = None
        with np.errstate(over="ignore", invalid="ignore"):
            for c in range(w.shape[1]):
                for i in range(kernel[0]):
                    for j in range(kernel[1]):
                        term = round_to(wq.q[None, :, c, i, j, None, None] * xp[:, c:c + 1, i:i + H, j:j + W], fmt)
                        acc = term if acc is None else round_to(acc + term, fmt)
    with np.errstate(over="ignore", invalid="ignore"):
        y = store(acc * (xq.scale * wq.scale), pol.output_transform)
    counts["y"] = _nonfinite(y.q)
    return y.value, counts


# ---------------------------------------------------------------------------------------------------
# Layer error


def layer_data(shape: Sequence[int], seed: int = 0, r: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Realistic layer operands: post-ReLU activations with a BatchNorm-like per-channel scale and
    shift (about half the values zero, the rest O(1)), and He-initialised weights N(0, 2/(C·r²))."""
    N, C, H, W, K = _shape(shape)
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 2.0, C)[None, :, None, None]
    beta = rng.normal(0.0, 0.5, C)[None, :, None, None]
    x = np.maximum(gamma * rng.standard_normal((N, C, H, W)) + beta, 0.0)
    w = rng.standard_normal((K, C, r, r)) * math.sqrt(2.0 / (C * r * r))
    return x, w


def _shape(shape: Sequence[int]) -> tuple[int, int, int, int, int]:
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"layer shape {shape!r} must be five integers N,C,H,W,K") from None
    if len(dims) != 5 or any(d < 1 for d in dims):
        raise InputError(f"layer shape {shape!r} must be five positive integers N,C,H,W,K")
    return dims  # type: ignore[return-value]


def parse_shape(text: str) -> tuple[int, int, int, int, int]:
    """"1,64,56,56,64" -> (1, 64, 56, 56, 64)."""
    try:
        return _shape([int(p) for p in text.replace("x", ",").split(",")])
    except ValueError:
        raise InputError(f"layer shape '{text}' must be N,C,H,W,K such as 1,64,56,56,64") from None


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


def balance(alg: Algorithm) -> Algorithm:
    """The same algorithm with each row of G and of BT scaled by a power of two to max |entry| in
    [1/2, 1), the inverse folded into the matching column of AT.

    Exactly the same function and the same rounding error away from the range limits (powers of two
    scale floats exactly), but no Winograd-domain tap sits near fp16's underflow or overflow because of
    how the matrices happen to be normalised (the wincnn convention puts all fractions in G).
    """
    def power(row: Sequence[Any]) -> Fraction:
        top = max(abs(v) for v in row)
        return Fraction(2) ** -(math.floor(math.log2(top)) + 1) if top else Fraction(1)

    g_scale = [power(row) for row in alg.G]
    b_scale = [power(row) for row in alg.BT]
    G = tuple(tuple(v * s for v in row) for row, s in zip(alg.G, g_scale))
    BT = tuple(tuple(v * s for v in row) for row, s in zip(alg.BT, b_scale))
    AT = tuple(tuple(v / (g_scale[j] * b_scale[j]) for j, v in enumerate(row)) for row in alg.AT)
    return Algorithm(alg.m, alg.r, AT, G, BT, alg.points, f"{alg.label}+balanced")


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
    bad = _nonfinite(y)
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
    gx, gw = layer_data(shape, seed, r)
    x = gx if x is None else np.asarray(x, dtype=np.float64)
    w = gw if w is None else np.asarray(w, dtype=np.float64)
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
