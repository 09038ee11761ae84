"""Interpolation points: the point at infinity, parsing and formatting points, and the named point
families (integer, classic, nova) that the catalog's reference entries are built from.

Points are exact: `Fraction` for finite points and `INF` for the point at infinity.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from novagen.errors import PointsError
from novagen.limits import MAX_POINT, MAX_SNAP, rational, short, whole


class _Infinity:
    """The point at infinity: evaluates the leading coefficients of the two polynomials."""

    _instance: _Infinity | None = None

    def __new__(cls) -> _Infinity:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "INF"

    def __str__(self) -> str:
        return "inf"

    def __reduce__(self) -> str:
        return "INF"


INF = _Infinity()
Point = Fraction | _Infinity


_INF_WORDS = {"inf", "+inf", "infinity", "+infinity", "∞", "oo"}
MAX_POINTS = 64
"""Most points a list may hold (a tile has at most 32 per axis)."""


def parse_point(value: Any) -> Point:
    """One point from a string ("-5/6", "0.6", "inf"), an integer, a Fraction or a float.

    Decimal strings are taken exactly (0.6 is 3/5); floats are taken as their exact binary value.
    """
    if value is INF:
        return INF
    if isinstance(value, str) and value.strip().lower() in _INF_WORDS:
        return INF
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Rational)) \
            and math.isinf(float(value)) and float(value) > 0:
        return INF
    p = rational(value, "point", PointsError, "a point", ", or inf")
    if abs(p) > MAX_POINT:
        raise PointsError(f"point {short(value)} is too large: points lie within ±{MAX_POINT:,} "
                          "(write inf for the point at infinity)")
    return p


def parse_points(points: str | Iterable[Any], snap: int | None = None) -> tuple[Point, ...]:
    """A point list from "0,3/5,-3/5,inf" or a sequence; `snap` rounds each finite point to the
    nearest rational with denominator <= snap (only when asked)."""
    if isinstance(points, str):
        if not points.strip():
            raise PointsError("no points given: write them as a comma-separated list such as 0,1,-1,inf")
        items: list[Any] = points.replace(";", ",").split(",")
    else:
        try:
            items = list(points)
        except TypeError:
            raise PointsError(f"{short(repr(points))} is not a list of points such as [0, 1, -1]") from None
    if len(items) > MAX_POINTS:
        raise PointsError(f"{len(items)} points given: an algorithm has at most {MAX_POINTS}")
    parsed = tuple(parse_point(t) for t in items)
    if snap is not None:
        den = whole("snap denominator", snap, 1, MAX_SNAP)
        parsed = tuple(p if p is INF else p.limit_denominator(den) for p in parsed)
    return parsed


def format_point(p: Point) -> str:
    return "inf" if p is INF else str(p)



# Point families.  Sets are indexed by the number n of finite points (alpha - 1 with infinity).


def _f(text: str) -> tuple[Fraction, ...]:
    return tuple(Fraction(t) for t in text.split())


# Barabasz, Anderson, Soodhalter, Gregg, "Error analysis and improving the accuracy of Winograd
# convolution for deep neural networks" (arXiv 1803.10986): the table TVM ships in
# topi/nn/winograd_util.py.  Sets for 1 and 2 points (not in the table) are its prefixes.
_CLASSIC: dict[int, tuple[Fraction, ...]] = {
    1: _f("0"),
    2: _f("0 -1"),
    3: _f("0 -1 1"),
    4: _f("0 -1 1 1/2"),
    5: _f("0 -1 1 1/2 -2"),
    6: _f("0 -1 1 1/2 -2 -1/2"),
    7: _f("0 -1 1 1/2 -1/2 2 -2"),
    8: _f("0 -1 1 1/2 -1/2 2 -2 -1/4"),
    9: _f("0 -1 1 1/2 -1/2 2 -2 -1/4 4"),
    10: _f("0 -1 1 1/2 -1/2 2 -2 -1/4 3/4 -4/3"),
    11: _f("0 -1 1 1/2 -1/2 2 -2 -1/4 4 3/4 -4/3"),
    12: _f("0 -1 1 1/2 -1/2 2 -2 -1/4 4 3/4 -4/3 1/4"),
    13: _f("0 -1 1 1/2 -1/2 2 -2 -1/4 4 1/4 -3/4 4/3 -4"),
    14: _f("0 -1 1 1/2 -1/2 2 -2 -1/4 4 1/4 -3/4 4/3 3/4 -4/3"),
    15: _f("0 -1 1 1/2 -1/2 2 -2 -1/4 4 1/4 -3/4 4/3 -4 3/4 -4/3"),
    16: _f("0 -1 1 1/2 -1/2 2 -2 -1/4 4 1/4 -3/4 4/3 -4 2/3 -3/2 3/2"),
    17: _f("0 -1 1 1/2 -1/2 2 -2 -1/4 4 1/4 -3/4 4/3 -4 2/3 -3/2 -2/3 3/2"),
}

# The NOVA paper (arXiv 2512.18453): CMA-ES on the Vandermonde condition number, snapped to
# denominators <= 6, for F(4,3), F(6,3), F(8,3).
_NOVA: dict[int, tuple[Fraction, ...]] = {
    5: _f("0 5/6 -5/6 7/6 -7/6"),
    7: _f("0 3/5 -3/5 1 -1 7/6 -7/6"),
    9: _f("0 2/5 -2/5 5/6 -5/6 1 -1 7/6 -7/6"),
}


def _integer(n: int) -> tuple[Fraction, ...]:
    """0, 1, -1, 2, -2, ...: the baseline of the NOVA paper."""
    seq = [Fraction(0)]
    k = 1
    while len(seq) < n:
        seq += [Fraction(k), Fraction(-k)]
        k += 1
    return tuple(seq[:n])


FAMILIES: dict[str, str] = {
    "integer": "0, ±1, ±2, ...: the standard integer points (the NOVA paper's baseline)",
    "classic": "Barabasz et al. 2018, the table TVM ships (e.g. F(6,3): 0, ±1, ±2, ±1/2)",
    "nova": "the NOVA paper's points for F(4,3), F(6,3), F(8,3) (7 and 9 points and 5)",
}
FAMILY_ALIASES = {"standard": "integer", "tvm": "classic", "barabasz": "classic", "paper": "nova"}


def family_points(family: str, n: int) -> tuple[Fraction, ...]:
    """The n finite points of a named family."""
    name = FAMILY_ALIASES.get(family.lower(), family.lower())
    if name == "integer":
        return _integer(n)
    table = {"classic": _CLASSIC, "nova": _NOVA}.get(name)
    if table is None:
        raise PointsError(f"unknown point family '{family}': choose one of {', '.join(FAMILIES)}")
    if n not in table:
        have = ", ".join(str(k) for k in sorted(table))
        raise PointsError(f"the {name} family has no set of {n} finite points (it has {have})")
    return table[n]


def is_family(text: str) -> bool:
    return text.strip().lower() in FAMILIES or text.strip().lower() in FAMILY_ALIASES
