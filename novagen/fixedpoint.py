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

from dataclasses import dataclass, replace
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


def rounded_bound(bound: int, s: int) -> int:
    """The largest magnitude `rnd(v, s)` takes for |v| ≤ bound."""
    return (bound + (1 << (s - 1))) >> s if s > 0 else bound


def rnd(v: Any, s: int) -> Any:
    """Round to nearest, ties up, dropping s low bits: (v + 2^(s−1)) >> s (arithmetic shift); the error is at
    most half a unit of 2^s.  Works on Python ints and on object arrays alike; the RTL and HLS do the same."""
    return (v + (1 << (s - 1))) >> s if s > 0 else v


def _half(s: int) -> float:
    return 2.0 ** (s - 1) if s > 0 else 0.0


ROUNDED_STAGES = ("z", "v", "m", "t", "y")
"""Where a fixed-width datapath rounds: after the row pass of B̂ (z), after its column pass (V̂), the aligned
accumulators (M̃), after the column pass of Â (t) and after its row pass (Ŷ)."""


@dataclass(frozen=True)
class FixedPointDesign:
    """Integer-scaled transforms and every word width of the pipeline for one algorithm and layer.

    With `datapath_bits` = N, every stage of ROUNDED_STAGES is rounded to N bits (`shifts`: the low bits
    dropped there), as an accelerator with an N-bit datapath does; the accumulators stay exact (a DSP's
    wide accumulator).  Without it, every word is exactly as wide as its range (no rounding but the
    weights').  Ranges hold for any weights with |w| ≤ weight_max, or, with `weight_sums` (per tap, the
    largest Σ_c |Û_q| over output channels: `for_weights`), for those weights: far tighter, which is what
    a fixed-width datapath needs to keep its precision."""

    alg: Algorithm
    in_bits: int = 8
    coef_bits: int = 16
    channels: int = 16
    weight_max: float = 1.0
    datapath_bits: int | None = None
    weight_sums: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.alg, Algorithm):
            raise InputError(f"fixed point takes a 1D algorithm such as F(4,3)/classic, got {self.alg!r}")
        for name, v, lo, hi in (("input bits", self.in_bits, 2, 32), ("coefficient bits", self.coef_bits, 2, 32)):
            if not (isinstance(v, int) and lo <= v <= hi):
                raise InputError(f"{name} {v!r} must be an integer from {lo} to {hi}")
        whole("channels", self.channels, 1, 1 << 24)
        if not self.weight_max > 0:
            raise InputError(f"weight_max {self.weight_max} must be positive")
        if self.datapath_bits is not None and not (isinstance(self.datapath_bits, int)
                                                   and self.in_bits <= self.datapath_bits <= 64):
            raise InputError(f"datapath bits {self.datapath_bits!r} must be an integer from the input width "
                             f"({self.in_bits}) to 64")

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
    def _ranges(self) -> tuple[dict[str, int], dict[str, int], dict[str, Any]]:
        """(widths, shifts, per-tap bounds), stage by stage: each stage's bound from the rounded bound of
        the one before; with datapath_bits, the shift of a stage is the least that fits its word in N bits."""
        a, m, n_bits = self.alg.alpha, self.alg.m, self.datapath_bits
        shifts: dict[str, int] = {}

        def fit(stage: str, bounds: list[list[int]]) -> list[list[int]]:
            s = 0
            if n_bits is not None:
                top = max(max(r) for r in bounds)
                while signed_bits(rounded_bound(top, s)) > n_bits:
                    s += 1
            shifts[stage] = s
            return [[rounded_bound(v, s) for v in r] for r in bounds]

        def biggest(bounds: list[list[int]]) -> int:
            return max(max(r) for r in bounds)

        lb, la = max(var_l1(self.bt_program)), max(var_l1(self.at_program))
        bl1 = [sum(abs(c) for c in row) for row in self.B]
        xb = self.in_max
        z = fit("z", [[bl1[j] * xb for j in range(a)]])[0]  # the same bound for every row of the tile
        v = fit("v", [[bl1[i] * z[j] for j in range(a)] for i in range(a)])
        sums = self.weight_sums or [[((1 << (self.coef_bits - 1)) - 1) * self.channels] * a] * a
        acc = [[v[i][j] * sums[i][j] for j in range(a)] for i in range(a)]
        fm = self.frac_max
        mm = fit("m", [[acc[i][j] << (fm - self.frac[i][j]) for j in range(a)] for i in range(a)])
        t = fit("t", [[sum(abs(self.A[u][i]) * mm[i][j] for i in range(a)) for j in range(a)] for u in range(m)])
        y = fit("y", [[sum(abs(self.A[q][j]) * t[u][j] for j in range(a)) for q in range(m)] for u in range(m)])
        widths = {
            "in": self.in_bits,
            "bt1": signed_bits(lb * xb),
            "z": signed_bits(max(z)),
            "bt2": signed_bits(lb * max(z)),
            "v": signed_bits(biggest(v)),
            "u": self.coef_bits,
            "acc": signed_bits(biggest(acc)),
            "m": signed_bits(biggest(mm)),
            "at1": signed_bits(la * biggest(mm)),
            "t": signed_bits(biggest(t)),
            "at2": signed_bits(la * biggest(t)),
            "y": signed_bits(biggest(y)),
        }
        return widths, shifts, {"v": v, "acc": acc}

    @property
    def widths(self) -> dict[str, int]:
        """Word widths: input; the row pass of B̂ (its words, bt1; its rounded outputs, z); the column pass
        (bt2; V̂, v); Û_q; the accumulators M̂; the aligned, rounded M̃ (m); the column pass of Â (at1; t);
        its row pass (at2; Ŷ, y)."""
        return self._ranges[0]

    @property
    def shifts(self) -> dict[str, int]:
        """Low bits dropped (rounded) at each of ROUNDED_STAGES: all 0 without datapath_bits."""
        return self._ranges[1]

    @property
    def y_exponent(self) -> int:
        """y = Ŷ · 2^y_exponent: the shifts dropped along the way, less the weights' fraction bits."""
        return sum(self.shifts.values()) - self.frac_max

    def for_weights(self, uq: np.ndarray) -> FixedPointDesign:
        """The same design with its ranges taken for these transformed weights (K, C, α, α)."""
        sums = np.abs(np.asarray(uq, dtype=object)).sum(axis=1).max(axis=0)
        return replace(self, weight_sums=tuple(tuple(int(v) for v in row) for row in sums))

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

    @property
    def int_type(self) -> Any:
        """int64 where every word of the pipeline (and each product before the sum) fits 62 bits, else Python
        integers (object arrays): exact either way, int64 far faster."""
        w = self.widths
        a = self.alg.alpha
        widest = max(max(w.values()), w["acc"] + max(self.frac_max - f for r in self.frac for f in r) + 1,
                     w["v"] + w["u"], max(len(bin(max(abs(c) for r in M for c in r))) for M in (self.A, self.B))
                     + max(w["m"], w["t"], w["z"], w["in"]) + a.bit_length())
        return np.int64 if widest <= 62 else object

    def input_transform(self, tiles: np.ndarray) -> np.ndarray:
        """V̂ of integer tiles (..., α, α): the row pass (each row times B̂ᵀ), rounded at z, then the column
        pass (B̂ times each column), rounded at v; exact integers (`int_type`)."""
        B = np.array(self.B, dtype=self.int_type)
        t = np.asarray(tiles).astype(self.int_type)
        z = rnd(np.einsum("...ib,jb->...ij", t, B), self.shifts["z"])
        return rnd(np.einsum("ia,...aj->...ij", B, z), self.shifts["v"])

    def output_transform(self, M: np.ndarray) -> np.ndarray:
        """Ŷ of the aligned accumulators (..., α, α): rounded at m, the column pass of Â, rounded at t, the
        row pass, rounded at y; exact."""
        A = np.array(self.A, dtype=self.int_type)
        t = rnd(np.einsum("ui,...ij->...uj", A, rnd(M, self.shifts["m"])), self.shifts["t"])
        return rnd(np.einsum("...uj,vj->...uv", t, A), self.shifts["y"])

    def run(self, x: np.ndarray, uq: np.ndarray, padding: Any = 1) -> tuple[np.ndarray, np.ndarray]:
        """The pipeline on integer x (N, C, H, W) and Û_q: (Ŷ as Python integers (N, K, OH, OW), tile origin
        grid discarded) and y = Ŷ · 2^y_exponent as float64.  Bit-accurate: what the HLS and RTL compute."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != uq.shape[1]:
            raise InputError(f"x must be (N, C, H, W) with C = {uq.shape[1]}, got {x.shape}")
        if x.min(initial=0) < -self.in_max or x.max(initial=0) >= self.in_max:
            raise InputError(f"inputs exceed {self.in_bits}-bit signed integers")
        if x.shape[1] > self.channels:
            raise InputError(f"{x.shape[1]} channels exceed the {self.channels} the accumulator was sized for")
        if self.weight_sums is not None:
            sums = np.abs(np.asarray(uq, dtype=object)).sum(axis=1).max(axis=0)
            if (sums > np.array(self.weight_sums, dtype=object)).any():
                raise InputError("these weights exceed the ranges the design was sized for (weight_sums): "
                                 "size it for them with for_weights")
        tiles, out = input_tiles(x.astype(np.int64), [self.alg, self.alg], padding)  # (N, C, TH, TW, α, α)
        V = self.input_transform(tiles)
        a = self.alg.alpha
        it = self.int_type
        shift = np.array([[1 << (self.frac_max - self.frac[i][j]) for j in range(a)] for i in range(a)], dtype=it)
        M = np.einsum("nchwij,kcij->nkhwij", V, np.asarray(uq).astype(it)) * shift
        Y = self.output_transform(M)  # (N, K, TH, TW, m, m)
        n, k, th, tw, m, _ = Y.shape
        Yf = Y.transpose(0, 1, 2, 4, 3, 5).reshape(n, k, th * m, tw * m)[:, :, :out[0], :out[1]]
        return Yf, Yf.astype(np.float64) * 2.0 ** self.y_exponent

    def error_bound(self, x: np.ndarray, padding: Any = 1, uq: np.ndarray | None = None) -> np.ndarray:
        """Per output (N, K or 1, OH, OW): a rigorous bound of |y − y_exact| given the integer input x, from
        the rounding of Û (half a unit of 2^−F_ij per tap) and, with a fixed-width datapath, of every rounded
        stage, each carried through the linear stages after it in absolute value.  `uq` (the weights) is
        needed only when V̂ is rounded; without it the worst-case |Û_q| is used."""
        sh, fm = self.shifts, self.frac_max
        tiles, out = input_tiles(np.asarray(x, dtype=np.int64), [self.alg, self.alg], padding)
        Vr = np.abs(self.input_transform(tiles).astype(np.float64)) * 2.0 ** (sh["z"] + sh["v"])  # (N,C,TH,TW,α,α)
        bl1 = np.abs(np.array(self.B, dtype=np.float64)).sum(axis=1)
        dv = (bl1 * _half(sh["z"]) + _half(sh["v"]) * 2.0 ** sh["z"])[:, None]  # (α, 1): per row of V̂
        a = self.alg.alpha
        ulp = np.array([[2.0 ** -self.frac[i][j] for j in range(a)] for i in range(a)])
        dM = np.einsum("nchwij->nhwij", Vr + dv)[:, None] * (ulp / 2)  # weight rounding, (N,1,TH,TW,α,α)
        if dv.any():
            absu = (np.abs(uq.astype(np.float64)) if uq is not None
                    else np.full((1, Vr.shape[1], a, a), float((1 << (self.coef_bits - 1)) - 1)))
            dM = dM + np.einsum("kcij->kij", absu * ulp)[None, :, None, None] * dv  # (N,K,TH,TW,α,α)
        unit = 2.0 ** (sh["z"] + sh["v"] - fm)
        dM = dM + _half(sh["m"]) * unit
        A = np.abs(np.array(self.A, dtype=np.float64))
        E = np.einsum("ua,nkhwab,vb->nkhwuv", A, dM, A)
        E = E + A.sum(axis=1)[None, None, None, None, None, :] * _half(sh["t"]) * unit * 2.0 ** sh["m"]
        E = E + _half(sh["y"]) * unit * 2.0 ** (sh["m"] + sh["t"])
        n, k, th, tw, m, _ = E.shape
        Ef = E.transpose(0, 1, 2, 4, 3, 5).reshape(n, k, th * m, tw * m)[:, :, :out[0], :out[1]]
        Ef = Ef * (1 + 1e-9) + 1e-12
        return np.broadcast_to(Ef, (n, uq.shape[0], *Ef.shape[2:])) if uq is not None else Ef


def design(alg: Algorithm, bits: str | int | None = "auto", channels: int = 16, coef_bits: int = 16,
           weight_max: float = 1.0, datapath_bits: int | None = None) -> FixedPointDesign:
    """A design for `bits` = "auto" (8-bit inputs) or the input width."""
    if bits is None or (isinstance(bits, str) and bits.strip().lower() == "auto"):
        in_bits = 8
    else:
        try:
            in_bits = int(bits)
        except (TypeError, ValueError):
            raise InputError(f"bits '{bits}' is not 'auto' or an input width such as 8") from None
    return FixedPointDesign(alg, in_bits=in_bits, coef_bits=coef_bits, channels=channels, weight_max=weight_max,
                            datapath_bits=datapath_bits)


def layer_test_data(shape: tuple[int, ...], in_bits: int, r: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer activations (uniform over the signed in_bits range) and He-initialised weights (|w| ≤ 1)."""
    N, C, H, W, K = shape
    rng = np.random.default_rng(seed)
    top = 1 << (in_bits - 1)
    x = rng.integers(-top, top, size=(N, C, H, W), dtype=np.int64)
    w = np.clip(rng.standard_normal((K, C, r, r)) * np.sqrt(2.0 / (C * r * r)), -1, 1)
    return x, w


def measure(alg: Algorithm, shape: tuple[int, ...] = (1, 8, 24, 24, 8), in_bits: int = 8, coef_bits: int = 16,
            seed: int = 0, padding: Any = 1, datapath_bits: int | None = None) -> dict[str, float]:
    """Relative L2 and max-abs error of the fixed-point model against the float64 direct correlation of the
    same integer inputs, the largest predicted bound, and the largest ratio of the error to it (≤ 1)."""
    from novagen.reference import correlate_direct

    resolve_padding(padding, (alg.r, alg.r))
    x, w = layer_test_data(shape, in_bits, alg.r, seed)
    des = FixedPointDesign(alg, in_bits=in_bits, coef_bits=coef_bits, channels=shape[1], datapath_bits=datapath_bits)
    uq = des.transform_weights(w)
    if datapath_bits is not None:
        des = des.for_weights(uq)
    _, y = des.run(x, uq, padding)
    ref = correlate_direct(x.astype(np.float64), w, padding)
    err = np.abs(y - ref)
    bound = des.error_bound(x, padding, uq)
    return {"rel_l2": float(np.linalg.norm(y - ref) / np.linalg.norm(ref)), "max_abs": float(err.max()),
            "bound_max": float(bound.max()), "bound_ratio": float((err / bound).max())}
