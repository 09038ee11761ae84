"""Reference convolutions in NumPy: direct correlation and the staged Winograd pipeline.

Tensors are channel-first: x (N, C, *spatial), w (K, C, *kernel), y (N, K, *out), with one spatial
axis per algorithm axis.  Each Winograd stage is its own function so that precision studies can
round between stages; `winograd_correlate` chains them in float64.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from novagen.errors import InputError

Pads = tuple[tuple[int, int], ...]


def resolve_padding(padding: Any, kernel: Sequence[int]) -> Pads:
    """(before, after) per spatial axis from "valid", "same", an int, a tuple of ints (one per axis) or
    (before, after) pairs (one per axis)."""
    nd = len(kernel)
    if (isinstance(padding, (tuple, list)) and len(padding) == nd
            and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in padding)):
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
        if any(v < 0 for pair in pairs for v in pair):
            raise InputError(f"padding {padding!r} must not be negative")
        return pairs
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            return tuple(((r - 1) // 2, r - 1 - (r - 1) // 2) for r in kernel)
        raise InputError(f"padding '{padding}' is not understood: use 'valid', 'same' or a number")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        values: tuple[int, ...] = (int(padding),) * nd
    elif isinstance(padding, (tuple, list)) and len(padding) == nd:
        values = tuple(int(p) for p in padding)
    else:
        raise InputError(f"padding {padding!r} is not understood: use 'valid', 'same', an int or {nd} ints")
    if any(p < 0 for p in values):
        raise InputError(f"padding {padding!r} must not be negative")
    return tuple((p, p) for p in values)


def real_array(a: Any, name: str) -> np.ndarray:
    """`a` as a float64 array; InputError for complex, text or object data, which a convolution of real
    tensors cannot take."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf" and not (arr.dtype.kind == "V" and "float" in arr.dtype.name):
        raise InputError(f"{name} must hold real numbers, not {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check(x: np.ndarray, w: np.ndarray, nd: int) -> None:
    if x.ndim != nd + 2 or w.ndim != nd + 2:
        raise InputError(
            f"expected x of shape (N, C, {nd} spatial) and w of shape (K, C, {nd} kernel), "
            f"got x {x.shape} and w {w.shape}"
        )
    if x.shape[1] != w.shape[1]:
        raise InputError(f"x has {x.shape[1]} channels but w expects {w.shape[1]}")


def _out_sizes(x: np.ndarray, kernel: Sequence[int], pads: Pads) -> list[int]:
    sizes = [s + lo + hi - r + 1 for s, r, (lo, hi) in zip(x.shape[2:], kernel, pads)]
    if any(o < 1 for o in sizes):
        raise InputError(f"input {x.shape[2:]} with padding {pads} is smaller than the kernel {tuple(kernel)}")
    return sizes


def correlate_direct(x: np.ndarray, w: np.ndarray, padding: Any = "valid") -> np.ndarray:
    """Direct correlation in float64 (the ground truth every algorithm is measured against)."""
    x = real_array(x, "x")
    w = real_array(w, "w")
    nd = w.ndim - 2
    _check(x, w, nd)
    kernel = w.shape[2:]
    pads = resolve_padding(padding, kernel)
    _out_sizes(x, kernel, pads)
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    axes = tuple(range(2, 2 + nd))
    win = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=axes)
    # win: (N, C, *out, *kernel); contract C and kernel against w (K, C, *kernel)
    return np.tensordot(win, w, axes=([1, *range(2 + nd, 2 + 2 * nd)], [1, *range(2, 2 + nd)])).transpose(
        0, -1, *range(1, 1 + nd)
    )


def _apply(t: np.ndarray, mats: Sequence[np.ndarray], first_axis: int) -> np.ndarray:
    """Multiply each matrix along its axis: axis first_axis + i gets mats[i] (rows replace columns)."""
    for i, mat in enumerate(mats):
        ax = first_axis + i
        t = np.moveaxis(np.tensordot(t, mat, axes=([ax], [1])), -1, ax)
    return t


def input_tiles(x: np.ndarray, algs: Sequence[Any], padding: Any = "valid") -> tuple[np.ndarray, list[int]]:
    """Overlapping alpha-tiles (N, C, *tiles, *alpha) of the padded input, and the output sizes."""
    nd = len(algs)
    kernel = [a.r for a in algs]
    pads = resolve_padding(padding, kernel)
    out = _out_sizes(x, kernel, pads)
    tiles = [math.ceil(o / a.m) for o, a in zip(out, algs)]
    need = [t * a.m + a.r - 1 for t, a in zip(tiles, algs)]
    extra = [n - (s + lo + hi) for n, s, (lo, hi) in zip(need, x.shape[2:], pads)]
    xp = np.pad(x, ((0, 0), (0, 0), *((lo, hi + e) for (lo, hi), e in zip(pads, extra))))
    win = np.lib.stride_tricks.sliding_window_view(xp, [a.alpha for a in algs], axis=tuple(range(2, 2 + nd)))
    step = (slice(None), slice(None), *(slice(None, None, a.m) for a in algs))
    return win[step], out


def transform_input(tiles: np.ndarray, BTs: Sequence[np.ndarray]) -> np.ndarray:
    """V = BT · d · B per tile: (N, C, *tiles, *alpha)."""
    return _apply(tiles, BTs, tiles.ndim - len(BTs))


def transform_filter(w: np.ndarray, Gs: Sequence[np.ndarray]) -> np.ndarray:
    """U = G · g · Gᵀ: (K, C, *alpha)."""
    return _apply(w, Gs, 2)


def multiply(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """M[n, k, tiles, alpha] = sum_c U[k, c, alpha] V[n, c, tiles, alpha]: alpha^nd channel GEMMs."""
    nd = U.ndim - 2
    letters = iter(string.ascii_lowercase[4:])
    tiles = "".join(next(letters) for _ in range(V.ndim - 2 - nd))
    alpha = "".join(next(letters) for _ in range(nd))
    return np.einsum(f"kc{alpha},nc{tiles}{alpha}->nk{tiles}{alpha}", U, V, optimize=True)


def transform_output(M: np.ndarray, ATs: Sequence[np.ndarray]) -> np.ndarray:
    """Y = AT · M · A per tile: (N, K, *tiles, *m)."""
    return _apply(M, ATs, M.ndim - len(ATs))


def assemble(Y: np.ndarray, out: Sequence[int]) -> np.ndarray:
    """Interleave (N, K, *tiles, *m) into (N, K, *out), dropping the padding tiles added at the end."""
    nd = len(out)
    n, k = Y.shape[:2]
    tiles, ms = Y.shape[2:2 + nd], Y.shape[2 + nd:]
    order = [0, 1, *(x for i in range(nd) for x in (2 + i, 2 + nd + i))]
    full = Y.transpose(order).reshape(n, k, *(t * m for t, m in zip(tiles, ms)))
    return full[(slice(None), slice(None), *(slice(0, o) for o in out))]


def winograd_correlate(x: np.ndarray, w: np.ndarray, algs: Sequence[Any], padding: Any = "valid") -> np.ndarray:
    """Winograd correlation in float64 with one 1D algorithm per spatial axis."""
    x = real_array(x, "x")
    w = real_array(w, "w")
    _check(x, w, len(algs))
    if tuple(w.shape[2:]) != tuple(a.r for a in algs):
        raise InputError(
            f"the kernel is {tuple(w.shape[2:])} but the algorithm expects {tuple(a.r for a in algs)}"
        )
    mats = [a.matrices("float64") for a in algs]
    tiles, out = input_tiles(x, algs, padding)
    V = transform_input(tiles, [bt for _, _, bt in mats])
    U = transform_filter(w, [g for _, g, _ in mats])
    Y = transform_output(multiply(U, V), [at for at, _, _ in mats])
    return assemble(Y, out)
