"""The search space: how a real vector maps to interpolation points (free, or a symmetric set
{0, ±a, ±b, ...}), the lattice of simple rationals the points are snapped to, and the lattice refinement
that snaps the continuous optima (exhaustive near each start, then descent to neighbouring rationals)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from novagen.algebra import Spec
from novagen.errors import InputError
from novagen.pointsearch.objectives import PENALTY, PointSet, Weighted


@dataclass(frozen=True)
class Space:
    """How a real vector x maps to finite points: free points, or a symmetric set {0, ±x_i} (+1 free
    point when the count is even)."""

    spec: Spec
    symmetric: bool
    infinity: bool = True
    max_abs: float = 3.0

    @property
    def m(self) -> int:
        return self.spec.m[0]

    @property
    def r(self) -> int:
        return self.spec.r[0]

    @property
    def n(self) -> int:
        return self.spec.alpha[0] - (1 if self.infinity else 0)

    @property
    def pairs(self) -> int:
        return (self.n - 1) // 2 if self.symmetric else 0

    @property
    def dim(self) -> int:
        if not self.symmetric:
            return self.n
        return self.pairs + (1 if self.n % 2 == 0 else 0)

    def expand(self, x: Sequence[Any]) -> list[Any]:
        """The finite points of a parameter vector (floats or Fractions)."""
        if not self.symmetric:
            return list(x)
        zero = x[0] * 0 if len(x) else 0
        pts = [zero]
        for a in x[: self.pairs]:
            pts += [a, -a]
        pts += list(x[self.pairs:])
        return pts

    def point_set(self, x: Sequence[Any]) -> PointSet:
        pts = self.expand(x)
        exact = tuple(pts) if pts and isinstance(pts[0], Fraction) else None
        return PointSet(self.m, self.r, np.array([float(p) for p in pts]), self.infinity, exact)

    def canonical(self, x: tuple[Any, ...]) -> tuple[Any, ...]:
        """One representative per point set: sorted magnitudes (pairs) or sorted points."""
        if not self.symmetric:
            return tuple(sorted(x))
        return (*sorted(x[: self.pairs]), *x[self.pairs:])

    def lower(self, i: int) -> float:
        return 0.0 if (self.symmetric and i < self.pairs) else -self.max_abs


MAX_ABS = 100.0
"""Largest |point| the search considers."""
MAX_LATTICE = 400_000
"""Most rationals the lattice may hold: building and scanning it stays within seconds."""


def lattice_size(max_denominator: int, max_abs: float, dyadic: bool = False) -> int:
    """How many rationals p/q with q <= max_denominator and |p/q| <= max_abs there are (an upper bound,
    counted without building them); InputError beyond MAX_LATTICE."""
    dens = [2**k for k in range(max_denominator.bit_length()) if 2**k <= max_denominator] if dyadic \
        else range(1, max_denominator + 1)
    size = sum(2 * int(max_abs * q) + 1 for q in dens) if dyadic or max_denominator <= 10**4 \
        else int(max_abs * max_denominator * (max_denominator + 1))
    if size > MAX_LATTICE:
        raise InputError(f"--max-denominator {max_denominator} with --max-abs {max_abs:g} gives about {size:,} "
                         f"candidate rationals per point, more than {MAX_LATTICE:,}: lower either")
    return size


def lattice(max_denominator: int, max_abs: float, dyadic: bool = False, positive: bool = False) -> list[Fraction]:
    """Sorted rationals p/q with q <= max_denominator (powers of two only when dyadic), |p/q| <= max_abs."""
    dens = [2**k for k in range(max_denominator.bit_length()) if 2**k <= max_denominator] if dyadic \
        else range(1, max_denominator + 1)
    values = {Fraction(p, q) for q in dens for p in range(-int(max_abs * q), int(max_abs * q) + 1)}
    if positive:
        values = {v for v in values if v > 0}
    return sorted(values)



@lru_cache(maxsize=8)
def lattice_values(space: Space, max_denominator: int, dyadic: bool) -> tuple[tuple[Fraction, ...], ...]:
    """The lattice values each coordinate may take."""
    full = tuple(lattice(max_denominator, space.max_abs, dyadic))
    positive = tuple(v for v in full if v > 0)
    return tuple(positive if space.lower(i) == 0 else full for i in range(space.dim))


def feasibility(space: Space, max_denominator: int, dyadic: bool) -> None:
    """Raise InputError when no distinct point set exists on the lattice."""
    values = lattice_values(space, max_denominator, dyadic)
    if not space.symmetric:
        need, have = space.n, len(values[0]) if values else 0
    else:
        need = space.pairs
        have = len(values[0]) if space.pairs else 0
    if need > have:
        kind = "dyadic rationals" if dyadic else "rationals"
        raise InputError(
            f"{space.spec} {'symmetric ' if space.symmetric else ''}needs {need} distinct "
            f"{'magnitudes' if space.symmetric else 'points'} in (0, {space.max_abs:g}], but only {have} "
            f"{kind} with denominator <= {max_denominator} exist there: raise --max-denominator or --max-abs"
            if space.symmetric else
            f"{space.spec} needs {need} distinct points in [-{space.max_abs:g}, {space.max_abs:g}], but only "
            f"{have} {kind} with denominator <= {max_denominator} exist there: raise --max-denominator or --max-abs"
        )


def distinct(space: Space, q: tuple[Fraction, ...]) -> bool:
    pts = space.expand(q)
    return len(set(pts)) == len(pts)


def nearest(values: Sequence[Fraction], x: float, k: int) -> list[Fraction]:
    i = int(np.searchsorted(np.array([float(v) for v in values]), x))
    window = values[max(0, i - k): i + k]
    return sorted(window, key=lambda v: abs(float(v) - x))[:k]


def refine(space: Space, objective: Weighted, starts: Sequence[Sequence[float]], max_denominator: int,
           dyadic: bool = False, enumeration: int = 20000, keep: int = 8,
           on_step: Callable[[int], None] | None = None) -> tuple[dict[tuple[Fraction, ...], float], int]:
    """Scores of rational sets near each start: exhaustive near the start, then lattice descent."""
    values = lattice_values(space, max_denominator, dyadic)
    index = [{v: i for i, v in enumerate(vals)} for vals in values]
    scored: dict[tuple[Fraction, ...], float] = {}

    def score(q: tuple[Fraction, ...]) -> float:
        q = space.canonical(q)
        if q not in scored:
            scored[q] = objective.score(space.point_set(q)) if distinct(space, q) else PENALTY
            if on_step and len(scored) % 500 == 0:
                on_step(len(scored))
        return scored[q]

    k = max(2, int(enumeration ** (1 / max(space.dim, 1))))
    seeds: list[tuple[Fraction, ...]] = []
    for x in starts:
        options = [nearest(values[i], x[i], k) for i in range(space.dim)]
        local = sorted({space.canonical(q) for q in itertools.product(*options)}, key=score)
        seeds += [q for q in local[:keep] if scored[q] < PENALTY]

    def neighbours(q: tuple[Fraction, ...]) -> list[tuple[Fraction, ...]]:
        out = []
        for i in range(space.dim):
            for step in (-3, -2, -1, 1, 2, 3):
                j = index[i][q[i]] + step
                if 0 <= j < len(values[i]):
                    out.append(q[:i] + (values[i][j],) + q[i + 1:])
        for i, j in itertools.combinations(range(space.dim), 2):
            for si, sj in itertools.product((-1, 1), repeat=2):
                a, b = index[i][q[i]] + si, index[j][q[j]] + sj
                if 0 <= a < len(values[i]) and 0 <= b < len(values[j]):
                    new = list(q)
                    new[i], new[j] = values[i][a], values[j][b]
                    out.append(tuple(new))
        return out

    for q in dict.fromkeys(seeds):
        while True:
            best = min(neighbours(q), key=score, default=q)
            if score(best) >= score(q):
                break
            q = space.canonical(best)
    return scored, len(scored)



def canonical_points(space: Space, q: Sequence[Fraction]) -> list[Fraction]:
    """Points in the paper's order: 0 first, then by magnitude, + before -."""
    return sorted(space.expand(q), key=lambda p: (abs(p), p < 0))

