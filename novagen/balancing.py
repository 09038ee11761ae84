"""Power-of-two row scalings of an algorithm: G's rows by 2**g, BT's by 2**b, AT's columns by the inverse of
both.  The same function, exactly, and the same rounding away from a format's range limits (powers of two
scale floats exactly); what moves is where each Winograd-domain tap sits in that range."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from novagen.algebra import Algorithm, Matrix


def balance(alg: Algorithm) -> Algorithm:
    """The same algorithm with each row of G and of BT scaled by a power of two to max |entry| in
    [1/2, 1), the inverse folded into the matching column of AT.

    Exactly the same function and the same rounding error away from the range limits (powers of two
    scale floats exactly), but no Winograd-domain tap sits near fp16's underflow or overflow because of
    how the matrices happen to be normalised (the wincnn convention puts all fractions in G).
    """
    def power(row: Sequence[Any]) -> int:
        top = max(abs(v) for v in row)
        return -(math.floor(math.log2(top)) + 1) if top else 0

    scaled = scale_taps(alg, [power(row) for row in alg.G], [power(row) for row in alg.BT])
    return Algorithm(alg.m, alg.r, scaled.AT, scaled.G, scaled.BT, alg.points, f"{alg.label}+balanced")


def tap_exponents(alg: Algorithm) -> tuple[list[int], list[int]] | None:
    """(log2_g, log2_b) such that `alg` is `scale_taps` of the plain Cook–Toom construction of its points
    (all zeros for an unbalanced one); None when it is not such a scaling, or has no points."""
    if alg.points is None:
        return None
    plain = Algorithm.from_points(alg.spec, list(alg.points))

    def exponents(rows: Matrix, base: Matrix) -> list[int] | None:
        out = []
        for row, ref in zip(rows, base):
            j = next((j for j, v in enumerate(ref) if v), None)
            ratio = Fraction(row[j]) / ref[j] if j is not None else Fraction(1)
            num, den = ratio.numerator, ratio.denominator
            if num <= 0 or num & (num - 1) or den & (den - 1):
                return None
            out.append(num.bit_length() - den.bit_length())
        return out

    g, b = exponents(alg.G, plain.G), exponents(alg.BT, plain.BT)
    if g is None or b is None:
        return None
    scaled = scale_taps(plain, g, b)
    return (g, b) if (scaled.AT, scaled.G, scaled.BT) == (alg.AT, alg.G, alg.BT) else None


def scale_taps(alg: Algorithm, log2_g: Sequence[int], log2_b: Sequence[int]) -> Algorithm:
    """The same function with row i of G scaled by 2**log2_g[i], row i of BT by 2**log2_b[i], and column i of
    AT by the inverse of both: exact, and exactly the same rounding away from the range limits."""
    two = Fraction(2)
    G = tuple(tuple(v * two ** e for v in row) for row, e in zip(alg.G, log2_g, strict=True))
    BT = tuple(tuple(v * two ** e for v in row) for row, e in zip(alg.BT, log2_b, strict=True))
    AT = tuple(tuple(v / two ** (log2_g[j] + log2_b[j]) for j, v in enumerate(row)) for row in alg.AT)
    return Algorithm(alg.m, alg.r, AT, G, BT, alg.points, alg.name)
