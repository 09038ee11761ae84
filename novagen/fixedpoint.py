"""Bit-accurate model of a fixed-point Winograd pipeline, with word widths from exact range analysis.

The runtime transforms run on integers only.  BT and AT are scaled to integer matrices, B̂ = D·BT (row i
times d_i, the lcm of its denominators) and Â = AT·E (column j times e_j); the scales go into the
weights, which are transformed offline: Û[i][j] = (G w Gᵀ)[i][j] / (d_i d_j e_i e_j).  Then

    V̂ = B̂ d B̂ᵀ (exact integers),  M̂[i][j] = Σ_c Û_q[i][j] · V̂[i][j],  Ŷ = Â M̃ Âᵀ,  y = Ŷ / 2^F

where Û_q = round(Û · 2^F_ij) is the only rounding (a `coef_bits` signed integer per tap, F_ij chosen per
tap from the exact bound of |Û| for |w| ≤ `weight_max`), and M̃[i][j] = M̂[i][j] << (F − F_ij) aligns the
taps (F = max F_ij).  Every word width follows from the exact rational matrices and the input width, so
nothing overflows; `error_bound` gives, per output, a rigorous bound of |y − y_exact|.

Fractional (non-dyadic) points make d_i, e_j and the constants of B̂ and Â large: more bits, more adders.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from math import ceil, lcm, log2
from typing import Any

import numpy as np

from novagen.algebra import Algorithm, Matrix
from novagen.errors import InputError
from novagen.limits import whole
from novagen.program import Program, compile_matrix
from novagen.reference import input_tiles, resolve_padding


def signed_bits(bound: int | Fraction) -> int:
    """Bits of a two's-complement word holding every integer in [−bound, bound]."""
    return int(ceil(bound)).bit_length() + 1


def csd(c: int) -> list[tuple[int, int]]:
    """Canonic signed digits of c: [(shift, ±1)], fewest nonzero digits, no two adjacent."""
    digits, k = [], 0
    while c:
        if c & 1:
            d = 2 - (c & 3)  # 1 if c ≡ 1 (mod 4), -1 if c ≡ 3
            digits.append((k, d))
            c -= d
        c >>= 1
        k += 1
    return digits


def csd_adders(c: int) -> int:
    """Two-input adders of a CSD constant multiplier (a negation counts as one)."""
    d = csd(abs(c))
    neg = c < 0
    positive = sum(s > 0 for _, s in d)
    return len(d) - 1 + (1 if (neg and positive == len(d)) or (not neg and positive == 0) else 0)


def var_l1(prog: Program) -> list[Fraction]:
    """L1 norm of the linear form of every variable of a program (inputs, then one per op): |var| ≤ L1 · max|x|."""
    n = prog.n_inputs
    forms: list[list[Fraction]] = [[Fraction(int(i == j)) for j in range(n)] for i in range(n)]
    for op in prog.ops:
        a = forms[op.a]
        if op.kind == "add":
            forms.append([x + y for x, y in zip(a, forms[op.b])])
        elif op.kind == "sub":
            forms.append([x - y for x, y in zip(a, forms[op.b])])
        elif op.kind == "neg":
            forms.append([-x for x in a])
        else:
            forms.append([x * op.c for x in a])
    return [sum(abs(c) for c in f) for f in forms]


def _row_scales(M: Matrix) -> tuple[int, ...]:
    return tuple(lcm(*(c.denominator for c in row)) for row in M)


@dataclass(frozen=True)
class FixedPointDesign:
    """Integer-scaled transforms and every word width of the pipeline for one algorithm and layer."""

    alg: Algorithm
    in_bits: int = 8
    coef_bits: int = 16
    channels: int = 16
    weight_max: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.alg, Algorithm):
            raise InputError(f"fixed point takes a 1D algorithm such as F(4,3)/classic, got {self.alg!r}")
        for name, v, lo, hi in (("input bits", self.in_bits, 2, 32), ("coefficient bits", self.coef_bits, 2, 32)):
            if not (isinstance(v, int) and lo <= v <= hi):
                raise InputError(f"{name} {v!r} must be an integer from {lo} to {hi}")
        whole("channels", self.channels, 1, 1 << 24)
        if not self.weight_max > 0:
            raise InputError(f"weight_max {self.weight_max} must be positive")

    # -- integer-scaled transforms -------------------------------------------------------------------

    @cached_property
    def d(self) -> tuple[int, ...]:
        """Row scales of BT (B̂ = D·BT is an integer matrix)."""
        return _row_scales(self.alg.BT)

    @cached_property
    def e(self) -> tuple[int, ...]:
        """Column scales of AT (Â = AT·E is an integer matrix)."""
        return _row_scales(tuple(zip(*self.alg.AT)))

    @cached_property
    def B(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(c * s) for c in row) for row, s in zip(self.alg.BT, self.d))

    @cached_property
    def A(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(c * s) for c, s in zip(row, self.e)) for row in self.alg.AT)

    @cached_property
    def bt_program(self) -> Program:
        return compile_matrix(self.B, integer=True)

    @cached_property
    def at_program(self) -> Program:
        return compile_matrix(self.A, integer=True)

    # -- ranges and widths ---------------------------------------------------------------------------

    @property
    def in_max(self) -> int:
        return 1 << (self.in_bits - 1)

    @cached_property
    def u_bound(self) -> tuple[tuple[Fraction, ...], ...]:
        """Exact bound of |Û[i][j]| over weights with |w| ≤ weight_max."""
        wmax = Fraction(self.weight_max)
        lg = [sum(abs(c) for c in row) for row in self.alg.G]
        a = self.alg.alpha
        return tuple(tuple(lg[i] * lg[j] * wmax / (self.d[i] * self.d[j] * self.e[i] * self.e[j])
                           for j in range(a)) for i in range(a))

    @cached_property
    def frac(self) -> tuple[tuple[int, ...], ...]:
        """Fraction bits F_ij of each tap of Û_q: the most that keep round(bound · 2^F) in coef_bits."""
        top = 1 << (self.coef_bits - 1)
        out = []
        for row in self.u_bound:
            fr = []
            for b in row:
                f = self.coef_bits - 1 - ceil(log2(b)) if b > 0 else self.coef_bits - 1
                while round(b * Fraction(2) ** f) >= top:
                    f -= 1
                fr.append(f)
            out.append(tuple(fr))
        return tuple(out)

    @property
    def frac_max(self) -> int:
        return max(max(r) for r in self.frac)

    @cached_property
    def widths(self) -> dict[str, int]:
        """Word widths: input, pass-1 and pass-2 words of the input transform, V̂, Û_q, the accumulator M̂,
        the aligned M̃, the output-transform words and Ŷ."""
        a, m = self.alg.alpha, self.alg.m
        xb = self.in_max
        lb = var_l1(self.bt_program)
        row_l1 = [sum(abs(c) for c in row) for row in self.B]
        zmax = max(row_l1) * xb
        vmax = [[row_l1[i] * row_l1[j] * xb for j in range(a)] for i in range(a)]
        umax = (1 << (self.coef_bits - 1))
        accmax = [[vmax[i][j] * umax * self.channels for j in range(a)] for i in range(a)]
        fm = self.frac_max
        alignmax = [[accmax[i][j] << (fm - self.frac[i][j]) for j in range(a)] for i in range(a)]
        la = var_l1(self.at_program)
        amax = max(max(r) for r in alignmax)
        a_l1 = [sum(abs(c) for c in row) for row in self.A]
        ycol = [[sum(abs(self.A[u][i]) * alignmax[i][j] for i in range(a)) for j in range(a)] for u in range(m)]
        ymax = max(sum(abs(self.A[v][j]) * ycol[u][j] for j in range(a)) for u in range(m) for v in range(m))
        return {
            "in": self.in_bits,
            "bt1": signed_bits(max(lb) * xb),
            "bt2": signed_bits(max(lb) * zmax),
            "v": signed_bits(max(max(r) for r in vmax)),
            "u": self.coef_bits,
            "acc": signed_bits(max(max(r) for r in accmax)),
            "m": signed_bits(amax),
            "at1": signed_bits(max(la) * amax),
            "at2": signed_bits(max(la) * max(a_l1) * amax),
            "y": signed_bits(ymax),
        }

    # -- the model -----------------------------------------------------------------------------------

    def quantize_input(self, x: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
        """Real activations → in_bits signed integers and the scale (x ≈ q · scale)."""
        x = np.asarray(x, dtype=np.float64)
        top = self.in_max - 1
        s = scale if scale is not None else (float(np.abs(x).max()) / top or 1.0)
        return np.clip(np.rint(x / s), -top - 1, top).astype(np.int64), s

    def transform_weights(self, w: np.ndarray) -> np.ndarray:
        """Û_q (K, C, α, α) as int64: round((G w Gᵀ)[i][j] / (d_i d_j e_i e_j) · 2^F_ij)."""
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 4 or w.shape[2:] != (self.alg.r, self.alg.r):
            raise InputError(f"weights must be (K, C, {self.alg.r}, {self.alg.r}), got {w.shape}")
        if np.abs(w).max(initial=0) > self.weight_max:
            raise InputError(f"a weight of magnitude {np.abs(w).max():.4g} exceeds weight_max {self.weight_max}: "
                             "scale the weights or design for a larger weight_max")
        _, G, _ = self.alg.matrices("float64")
        U = np.einsum("ia,kcab,jb->kcij", G, w, G)
        a = self.alg.alpha
        scale = np.array([[2.0 ** self.frac[i][j] / (self.d[i] * self.d[j] * self.e[i] * self.e[j])
                           for j in range(a)] for i in range(a)])
        q = np.rint(U * scale).astype(np.int64)
        top = 1 << (self.coef_bits - 1)
        assert np.abs(q).max(initial=0) < top, "coefficient overflow: the range analysis is wrong"
        return q

    def input_transform(self, tiles: np.ndarray) -> np.ndarray:
        """V̂ = B̂ d B̂ᵀ on integer tiles (..., α, α), exactly (Python integers where int64 could overflow)."""
        B = np.array(self.B, dtype=object)
        t = np.asarray(tiles).astype(object)
        return np.einsum("ia,...ab,jb->...ij", B, t, B)

    def output_transform(self, M: np.ndarray) -> np.ndarray:
        """Ŷ = Â M̃ Âᵀ on aligned integer accumulators (..., α, α), exactly."""
        A = np.array(self.A, dtype=object)
        return np.einsum("ua,...ab,vb->...uv", A, M, A)

    def run(self, x: np.ndarray, uq: np.ndarray, padding: Any = 1) -> tuple[np.ndarray, np.ndarray]:
        """The pipeline on integer x (N, C, H, W) and Û_q: (Ŷ as Python integers (N, K, OH, OW), tile origin
        grid discarded) and y = Ŷ / 2^F as float64.  Bit-accurate: what the HLS design computes."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != uq.shape[1]:
            raise InputError(f"x must be (N, C, H, W) with C = {uq.shape[1]}, got {x.shape}")
        if np.abs(x).max(initial=0) > self.in_max or x.min(initial=0) < -self.in_max or x.max(initial=0) >= self.in_max:
            raise InputError(f"inputs exceed {self.in_bits}-bit signed integers")
        if x.shape[1] > self.channels:
            raise InputError(f"{x.shape[1]} channels exceed the {self.channels} the accumulator was sized for")
        tiles, out = input_tiles(x.astype(np.int64), [self.alg, self.alg], padding)  # (N, C, TH, TW, α, α)
        V = self.input_transform(tiles)
        a = self.alg.alpha
        shift = np.array([[1 << (self.frac_max - self.frac[i][j]) for j in range(a)] for i in range(a)], dtype=object)
        M = np.einsum("nchwij,kcij->nkhwij", V, uq.astype(object)) * shift
        Y = self.output_transform(M)  # (N, K, TH, TW, m, m)
        n, k, th, tw, m, _ = Y.shape
        Yf = Y.transpose(0, 1, 2, 4, 3, 5).reshape(n, k, th * m, tw * m)[:, :, :out[0], :out[1]]
        return Yf, Yf.astype(np.float64) / 2.0 ** self.frac_max

    def error_bound(self, x: np.ndarray, padding: Any = 1) -> np.ndarray:
        """Per output: a rigorous bound of |y − y_exact| from the rounding of Û (half a unit of 2^−F_ij per tap),
        given the integer input x: Σ_ij |Â_ui||Â_vj| 2^−(F_ij+1) Σ_c |V̂_c,ij|."""
        tiles, out = input_tiles(np.asarray(x, dtype=np.float64), [self.alg, self.alg], padding)
        B = np.array(self.B, dtype=np.float64)
        V = np.abs(np.einsum("ia,...ab,jb->...ij", B, tiles, B)).sum(axis=1)  # (N, TH, TW, α, α)
        a = self.alg.alpha
        half = np.array([[2.0 ** -(self.frac[i][j] + 1) for j in range(a)] for i in range(a)])
        A = np.abs(np.array(self.A, dtype=np.float64))
        E = np.einsum("ua,nhwab,vb->nhwuv", A, V * half, A)
        n, th, tw, m, _ = E.shape
        Ef = E.transpose(0, 1, 3, 2, 4).reshape(n, th * m, tw * m)[:, :out[0], :out[1]]
        return Ef[:, None] * (1 + 1e-9) + 1e-12


def design(alg: Algorithm, bits: str | int | None = "auto", channels: int = 16, coef_bits: int = 16,
           weight_max: float = 1.0) -> FixedPointDesign:
    """A design for `bits` = "auto" (8-bit inputs) or the input width."""
    if bits is None or (isinstance(bits, str) and bits.strip().lower() == "auto"):
        in_bits = 8
    else:
        try:
            in_bits = int(bits)
        except (TypeError, ValueError):
            raise InputError(f"bits '{bits}' is not 'auto' or an input width such as 8") from None
    return FixedPointDesign(alg, in_bits=in_bits, coef_bits=coef_bits, channels=channels, weight_max=weight_max)


def layer_test_data(shape: tuple[int, ...], in_bits: int, r: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer activations (uniform over the signed in_bits range) and He-initialised weights (|w| ≤ 1)."""
    N, C, H, W, K = shape
    rng = np.random.default_rng(seed)
    top = 1 << (in_bits - 1)
    x = rng.integers(-top, top, size=(N, C, H, W), dtype=np.int64)
    w = np.clip(rng.standard_normal((K, C, r, r)) * np.sqrt(2.0 / (C * r * r)), -1, 1)
    return x, w


def measure(alg: Algorithm, shape: tuple[int, ...] = (1, 8, 24, 24, 8), in_bits: int = 8, coef_bits: int = 16,
            seed: int = 0, padding: Any = 1) -> dict[str, float]:
    """Relative L2 and max-abs error of the fixed-point model against the float64 direct correlation of the
    same integer inputs, and the largest ratio of the error to the predicted bound (≤ 1)."""
    from novagen.reference import correlate_direct

    resolve_padding(padding, (alg.r, alg.r))
    x, w = layer_test_data(shape, in_bits, alg.r, seed)
    des = FixedPointDesign(alg, in_bits=in_bits, coef_bits=coef_bits, channels=shape[1])
    _, y = des.run(x, des.transform_weights(w), padding)
    ref = correlate_direct(x.astype(np.float64), w, padding)
    err = np.abs(y - ref)
    bound = des.error_bound(x, padding)
    return {"rel_l2": float(np.linalg.norm(y - ref) / np.linalg.norm(ref)), "max_abs": float(err.max()),
            "bound_max": float(bound.max()), "bound_ratio": float((err / bound).max())}
