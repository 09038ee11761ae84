"""The precision emulator, written once: a Winograd or direct convolution under a `Policy`, on any array
library that offers the few primitives of `Arrays` (NumPy in `numpy_arrays`, PyTorch in `torch_arrays`).

Rounding is modelled per operation: inside a stage every multiply and every add is rounded to the stage's
compute format (no fused multiply-add, sums in a fixed sequential order, zero matrix entries skipped as
generated kernels skip them), so the NumPy and PyTorch arrays give the same transforms bit for bit.  Where
the arrays say a format runs natively (`Arrays.native` for transforms, `Arrays.native_sums` for the
channel sums and direct convolutions), the library's own arithmetic (its matrix products, in its order)
is used instead while the data is finite: fp64 everywhere, and fp32 channel sums in PyTorch, where the
per-operation loop over channels would make network studies slow.  Each stage's result is then
rounded to its storage format; int8 stages quantize symmetrically with a scale per tensor or per Winograd
tap and accumulate exactly in int32.  Overflow becomes inf or NaN as the format does it (fp8 e4m3 has no
inf: NaN) and is counted at every stage, never clipped away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from novagen.precision.formats import DTYPES, INT8_MAX, INT32_MAX, format_max
from novagen.precision.policies import Policy, Stage

Pads = tuple[tuple[int, int], ...]


class Transforms(Protocol):
    """What the emulator reads of an algorithm: m, r and its matrices rounded to a dtype.  `Algorithm`
    rounds its exact entries once; `FloatTransforms` rounds float64 matrices."""

    m: int
    r: int

    @property
    def alpha(self) -> int: ...

    def matrices(self, dtype: Any = "float64") -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class Arrays(Protocol):
    """The array primitives the emulator needs; `native` and `native_sums` are the compute formats the
    library runs directly (its own order and FMAs) in transforms and in channel sums."""

    native: frozenset[str]
    native_sums: frozenset[str]

    def asarray(self, x: Any) -> Any: ...
    def matrix(self, m: np.ndarray) -> Any: ...
    def round(self, x: Any, fmt: str) -> Any: ...
    def amax(self, x: Any, keep_last: int) -> Any: ...
    def largest(self, x: Any) -> float: ...
    def rint(self, x: Any) -> Any: ...
    def clip(self, x: Any, lo: float, hi: float) -> Any: ...
    def where(self, cond: Any, a: Any, b: Any) -> Any: ...
    def count_nonfinite(self, x: Any) -> int: ...
    def count_true(self, mask: Any) -> int: ...
    def all_finite(self, x: Any) -> bool: ...
    def zeros(self, shape: Sequence[int]) -> Any: ...
    def moveaxis(self, x: Any, src: int, dst: int) -> Any: ...
    def slices(self, x: Any, axis: int) -> list[Any]: ...
    def stack(self, xs: Sequence[Any], axis: int) -> Any: ...
    def scalar(self, v: float) -> Any: ...
    def fp32(self, x: Any) -> Any: ...
    def widen(self, x: Any) -> Any: ...
    def apply(self, x: Any, T: Any, fmt: str) -> Any: ...
    def gemm(self, U: Any, V: Any, fmt: str) -> Any: ...
    def tiles(self, x: Any, algs: Sequence[Transforms], pads: Pads) -> tuple[Any, list[int]]: ...
    def assemble(self, Y: Any, out: Sequence[int]) -> Any: ...
    def pad(self, x: Any, pads: Pads) -> Any: ...
    def conv(self, x: Any, w: Any, stride: tuple[int, ...], dilation: tuple[int, ...], groups: int,
             fmt: str) -> Any: ...


def store(x: Any, stage: Stage, ops: Arrays, taps: int = 0, scale: Any = None) -> tuple[Any, Any]:
    """(q, scale) of a tensor stored by a stage, its value q * scale; `taps` trailing axes are Winograd taps
    (the axes a per-tap scale keeps).  The scale is this tensor's amax unless a calibrated `scale` is given
    (any shape that broadcasts: per tensor, per tap, per output channel and tap)."""
    keep = taps if stage.scale == "tap" else 0
    if stage.store == "int8" or (stage.scale != "none" and stage.store not in ("fp64", "fp32")):
        if scale is None:
            amax = ops.amax(x, keep)
            scale = ops.where(amax > 0, amax / format_max(stage.store), 1.0)
        else:
            scale = ops.asarray(scale)
        if stage.store == "int8":
            return ops.clip(ops.rint(x / scale), -INT8_MAX, INT8_MAX), scale
        return ops.round(x / scale, stage.store), scale
    return ops.round(x, stage.store), 1.0


def transform_axis(x: Any, T: np.ndarray, axis: int, fmt: str, ops: Arrays) -> Any:
    """T applied along `axis` of x in format `fmt` (see the module docstring): each output row sums its
    nonzero terms T[i, j]·x_j in increasing j, from +0, every product and sum rounded."""
    if fmt in ops.native and ops.all_finite(ops.moveaxis(x, axis, -1)):
        return ops.moveaxis(ops.apply(ops.moveaxis(x, axis, -1), ops.matrix(T), fmt), -1, axis)
    xs = ops.slices(x, axis)
    rows = []
    for i in range(T.shape[0]):
        if fmt == "fp32":  # held in fp32, summed by fp32 adds: the same as each fp64 result rounded to fp32
            acc = ops.fp32(ops.zeros(xs[0].shape))  # (double rounding of + and × is innocuous: 53 >= 2·24 + 2)
            for j in np.flatnonzero(T[i]):
                acc = acc + ops.fp32(xs[j] * ops.scalar(T[i, j]))
            rows.append(ops.widen(acc))
            continue
        acc = ops.zeros(xs[0].shape)
        for j in np.flatnonzero(T[i]):
            acc = ops.round(acc + ops.round(xs[j] * ops.scalar(T[i, j]), fmt), fmt)
        rows.append(acc)
    return ops.stack(rows, axis)


def transform(x: Any, mats: Sequence[np.ndarray], first_axis: int, fmt: str, ops: Arrays) -> Any:
    """One matrix per axis (axis first_axis + i gets mats[i]), in format `fmt`."""
    for i, T in enumerate(mats):
        x = transform_axis(x, T, first_axis + i, fmt, ops)
    return x


def accumulate_channels(U: Any, V: Any, fmt: str, ops: Arrays) -> Any:
    """M[n, k, *tiles, *taps] = Σ_c U[k, c, *taps]·V[n, c, *tiles, *taps], products and sums in `fmt`
    (int32: exact)."""
    if fmt == "int32" or fmt in ops.native_sums:
        return ops.gemm(U, V, fmt)
    nt = V.ndim - U.ndim
    acc = None
    for c in range(U.shape[1]):
        u = U[:, c].reshape(1, U.shape[0], *([1] * nt), *U.shape[2:])
        term = ops.round(u * V[:, c][:, None], fmt)
        acc = term if acc is None else ops.round(acc + term, fmt)
    return acc


def _count(counts: dict[str, int], key: str, x: Any, ops: Arrays) -> None:
    counts[key] = counts.get(key, 0) + ops.count_nonfinite(x)


def int32_guard(acc: Any, counts: dict[str, int], ops: Arrays) -> Any:
    """An int32 accumulator that left its range wraps in hardware: mark it NaN and count it.  (The NaN is a
    constant, not acc * NaN: that branch's zero gradient times NaN would make every gradient through a
    fine-tuned network NaN.)"""
    if ops.all_finite(acc) and ops.largest(acc) <= INT32_MAX:  # the common case, in two reductions
        counts["int32"] = counts.get("int32", 0)
        return acc
    bad = abs(acc) > INT32_MAX
    counts["int32"] = counts.get("int32", 0) + ops.count_true(bad)
    return ops.where(bad, float("nan"), acc)


def _matrices(algs: Sequence[Transforms], fmt: str, which: int) -> list[np.ndarray]:
    return [np.asarray(a.matrices(DTYPES[fmt])[which], dtype=np.float64) for a in algs]


def _finish(y: Any, pol: Policy, counts: dict[str, int], ops: Arrays, bias: Any = None) -> Any:
    if bias is not None:
        y = y + bias.reshape(-1, *([1] * (y.ndim - 2)))
    q, scale = store(y, pol.output_transform, ops)
    _count(counts, "y", q, ops)
    return q * scale


def _operands(x: Any, w: Any, pol: Policy, counts: dict[str, int], ops: Arrays,
              scales: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    sc = scales or {}
    xq, xs = store(x, pol.operands, ops, scale=sc.get("x"))
    wq, ws = store(w, pol.operands, ops, scale=sc.get("w"))
    _count(counts, "x", xq, ops)
    _count(counts, "w", wq, ops)
    return xq * xs, wq * ws


def winograd_domain(x: Any, w: Any, algs: Sequence[Transforms], pol: Policy, pads: Pads, ops: Arrays,
                    scales: Mapping[str, Any] | None = None, counts: dict[str, int] | None = None
                    ) -> tuple[Any, Any, list[int]]:
    """V = BT d B and U = G g Gᵀ in the transforms' compute format, before they are stored (what calibration
    measures), and the output size."""
    nd = len(algs)
    counts = {} if counts is None else counts
    xv, wv = _operands(x, w, pol, counts, ops, scales)
    tiles, out = ops.tiles(xv, algs, pads)
    it, ft = pol.input_transform, pol.filter_transform
    V = transform(tiles, _matrices(algs, it.compute, 2), tiles.ndim - nd, it.compute, ops)
    U = transform(wv, _matrices(algs, ft.compute, 1), 2, ft.compute, ops)
    return V, U, out


def winograd(x: Any, w: Any, algs: Sequence[Transforms], pol: Policy, pads: Pads, ops: Arrays,
             bias: Any = None, scales: Mapping[str, Any] | None = None) -> tuple[Any, dict[str, int]]:
    """Winograd correlation of x (N, C, *spatial) with w (K, C, *kernel), one 1D algorithm per spatial axis,
    under a policy; returns y and the non-finite counts per stage (x, w, V, U, int32, M, y).  `scales` holds
    calibrated scales ("x", "w", "V", "U") used instead of each tensor's own amax."""
    nd = len(algs)
    counts: dict[str, int] = {}
    sc = scales or {}
    Vf, Uf, out = winograd_domain(x, w, algs, pol, pads, ops, scales, counts)
    it, ft, pt = pol.input_transform, pol.filter_transform, pol.product
    V, vs = store(Vf, it, ops, nd, sc.get("V"))
    U, us = store(Uf, ft, ops, nd, sc.get("U"))
    _count(counts, "V", V, ops)
    _count(counts, "U", U, ops)
    acc = accumulate_channels(U, V, pt.compute, ops)
    if pt.compute == "int32":
        acc = int32_guard(acc, counts, ops)
    M, ms = store(acc * _per_channel(us * vs, acc, nd, ops), pt, ops, nd)
    _count(counts, "M", M, ops)
    ot = pol.output_transform
    Y = transform(M * ms, _matrices(algs, ot.compute, 0), M.ndim - nd, ot.compute, ops)
    return _finish(ops.assemble(Y, out), pol, counts, ops, bias), counts


def _per_channel(scale: Any, acc: Any, nd: int, ops: Arrays) -> Any:
    """A U·V scale of shape (K, 1, *taps) (per output channel and tap) laid out for the accumulator
    (N, K, *tiles, *taps); other shapes broadcast as they are."""
    if getattr(scale, "ndim", 0) == nd + 2:
        return scale.reshape(1, scale.shape[0], *([1] * (acc.ndim - 2 - nd)), *scale.shape[2:])
    return scale


def direct(x: Any, w: Any, pol: Policy, pads: Pads, ops: Arrays, stride: tuple[int, ...] = (1, 1),
           dilation: tuple[int, ...] = (1, 1), groups: int = 1, bias: Any = None,
           scales: Mapping[str, Any] | None = None) -> tuple[Any, dict[str, int]]:
    """Direct correlation under the same policy: x and w stored as the GEMM operands would be (per-tensor
    scales, or calibrated ones: "x" per tensor, "w" per output channel, shape (K, 1, 1, 1)), products summed
    over (c, ky, kx) in the product stage's compute format."""
    counts: dict[str, int] = {}
    sc = scales or {}
    xv, wv = _operands(x, w, pol, counts, ops, {"x": sc.get("x")} if "x" in sc else None)
    per_tensor = "tensor" if pol.input_transform.scale != "none" else "none"
    xq, xs = store(xv, Stage(pol.input_transform.store, pol.input_transform.compute, per_tensor), ops,
                   scale=sc.get("x"))
    wq, ws = store(wv, Stage(pol.filter_transform.store, pol.filter_transform.compute, per_tensor), ops,
                   scale=sc.get("w"))
    _count(counts, "x", xq, ops)
    _count(counts, "w", wq, ops)
    xp = ops.pad(xq, pads)
    fmt = pol.product.compute
    if fmt == "int32" or fmt in ops.native_sums:
        acc = ops.conv(xp, wq, stride, dilation, groups, fmt)
        if fmt == "int32":
            acc = int32_guard(acc, counts, ops)
    else:
        acc = _direct_per_operation(xp, wq, fmt, stride, dilation, groups, ops)
    if getattr(ws, "ndim", 0) == 4:  # per output channel
        ws = ws.reshape(1, ws.shape[0], *([1] * (acc.ndim - 2)))
    return _finish(acc * (xs * ws), pol, counts, ops, bias), counts


def _direct_per_operation(xp: Any, w: Any, fmt: str, stride: tuple[int, ...], dilation: tuple[int, ...],
                          groups: int, ops: Arrays) -> Any:
    if groups != 1:
        from novagen.errors import InputError

        raise InputError(f"per-operation {fmt} arithmetic is emulated for groups=1 only, not {groups}")
    (sh, sw), (dh, dw) = stride, dilation
    kh, kw = w.shape[2:]
    H = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    W = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    acc = None
    for c in range(w.shape[1]):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, c:c + 1, i * dh:i * dh + (H - 1) * sh + 1:sh, j * dw:j * dw + (W - 1) * sw + 1:sw]
                term = ops.round(w[:, c, i, j].reshape(1, -1, 1, 1) * patch, fmt)
                acc = term if acc is None else ops.round(acc + term, fmt)
    return acc
