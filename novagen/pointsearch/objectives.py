"""Search objectives: named functions of a point set (lower is better), a registry other modules can add
to, and a parser for weighted sums such as "fp16 + 0.5*cost" (hyphenated names like int8-tap included).
A weighted sum is minimised as sum_i w_i · ln(objective_i)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from novagen.accuracy import layer_data
from novagen.algebra import Algorithm, Spec
from novagen.errors import InputError
from novagen.metrics import amplification_of, cond2, float_transforms, vandermonde
from novagen.precision import FloatTransforms, winograd_emulate
from novagen.program import transform_cost
from novagen.reference import correlate_direct

PENALTY = 1e3
"""Log-objective given to degenerate point sets (coinciding points), far above any real value."""


@dataclass(frozen=True)
class PointSet:
    """A candidate in float form: what every objective reads."""

    m: int
    r: int
    points: np.ndarray
    infinity: bool
    exact: tuple[Fraction, ...] | None = None

    def transforms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return float_transforms(self.m, self.r, self.points, self.infinity)


@dataclass(frozen=True)
class Objective:
    """A named objective: `fn` maps a point set to a positive value, lower is better."""

    name: str
    description: str
    fn: Callable[[PointSet], float]
    needs_exact: bool = False
    expensive: bool = False


def _vandermonde(ps: PointSet) -> float:
    return cond2(vandermonde(ps.points))


def _transforms(ps: PointSet) -> float:
    return amplification_of(*ps.transforms()) ** 2


ERROR_LAYER = (1, 16, 0, 0, 8)
"""Measured-error objectives run one layer N=1, C=16, K=8 of H = W = 4m (16 tiles per channel)."""


@lru_cache(maxsize=64)
def error_data(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed seeded operands (common random numbers: every candidate sees the same data) and the
    float64 direct reference."""
    n, c, _, _, k = ERROR_LAYER
    x, w = layer_data((n, c, 4 * m, 4 * m, k), seed=0, r=r)
    return x, w, correlate_direct(x, w, "same")


@lru_cache(maxsize=65536)
def exact_algorithm(m: int, r: int, points: tuple[Fraction, ...]) -> Algorithm:
    """The exact algorithm of a rational point set (cached: cost and measured objectives share it)."""
    return Algorithm.from_points(Spec.of(m, r), list(points))


def _balanced(AT: np.ndarray, G: np.ndarray, BT: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`balancing.balance` on float matrices: rows of G and BT scaled by powers of two to max |entry| in
    [1/2, 1), the inverse folded into AT (exact in binary floating point)."""
    def powers(M: np.ndarray) -> np.ndarray:
        top = np.abs(M).max(axis=1)
        return np.where(top > 0, 2.0 ** -(np.floor(np.log2(np.where(top > 0, top, 1))) + 1), 1.0)

    g, b = powers(G), powers(BT)
    return AT / (g * b)[None, :], G * g[:, None], BT * b[:, None]


def measured_error(ps: PointSet, precision: str) -> float:
    """Relative L2 error of the 2D Winograd layer under a precision policy (`novagen.precision`, fp32 stages
    through BLAS), on the fixed data of `error_data`, with balanced matrices; inf when any stage overflows.

    The matrices come from float64 transforms of the points, rounded once to the format: for rational
    points this differs from rounding the exact entries only in rare last-bit ties, and it is 10x faster.
    """
    x, w, ref = error_data(ps.m, ps.r)
    alg = FloatTransforms(ps.m, ps.r, _balanced(*ps.transforms()))
    y, counts = winograd_emulate(x, w, [alg, alg], precision, "same", blas=True)
    if any(counts.values()):
        return math.inf
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def _measured(precision: str) -> Callable[[PointSet], float]:
    def fn(ps: PointSet) -> float:
        return measured_error(ps, precision)
    return fn


def _cost(ps: PointSet) -> float:
    assert ps.exact is not None
    return float(transform_cost(exact_algorithm(ps.m, ps.r, ps.exact))["total"])


OBJECTIVES: dict[str, Objective] = {
    "vandermonde": Objective(
        "vandermonde", "κ of the Vandermonde matrix of the finite points (the NOVA paper's objective)",
        _vandermonde),
    "transforms": Objective(
        "transforms",
        "2D error amplification of the transforms: sum over the Winograd grid of |AT col|²·|G row|²·|BT row|² "
        "(each term bounds how far rounding at one point reaches the output; it ranks measured fp16 error "
        "far better than κ, and unlike products of κ(AT), κ(G), κ(BT) it is invariant to the free row scaling "
        "between G and BT)",
        _transforms),
    **{p: Objective(
        p, f"measured relative L2 error of a 2D layer in the {p} precision policy (novagen.precision) on fixed "
           "seeded post-ReLU data, balanced matrices; overflow makes it infinite",
        _measured(p), expensive=True) for p in ("fp16", "bf16", "int8", "int8-tap", "fp8-e4m3")},
    "cost": Objective(
        "cost", "operations of the runtime transforms per 2D tile (adds + multiplications + shifts of the "
                "transform programs, common subexpressions shared); exact points only, so the continuous "
                "phase is guided by the other terms or by vandermonde",
        _cost, needs_exact=True, expensive=True),
}


def register_objective(obj: Objective) -> None:
    """Add an objective (used by modules that provide measured-error and cost objectives)."""
    OBJECTIVES[obj.name] = obj


@dataclass(frozen=True)
class Weighted:
    """sum_i w_i · ln(objective_i): a single objective is the case of one term with weight 1."""

    terms: tuple[tuple[float, Objective], ...]

    @property
    def name(self) -> str:
        return " + ".join(o.name if w == 1 else f"{w:g}*{o.name}" for w, o in self.terms)

    @property
    def needs_exact(self) -> bool:
        return any(o.needs_exact for _, o in self.terms)

    @property
    def expensive(self) -> bool:
        return any(o.expensive for _, o in self.terms)

    def values(self, ps: PointSet) -> dict[str, float]:
        return {o.name: o.fn(ps) for _, o in self.terms}

    def continuous(self) -> Weighted:
        """The terms a float point set can be scored on; vandermonde when none can."""
        terms = tuple(t for t in self.terms if not t[1].needs_exact)
        return Weighted(terms or ((1.0, OBJECTIVES["vandermonde"]),))

    def score(self, ps: PointSet) -> float:
        total = 0.0
        for w, o in self.terms:
            v = o.fn(ps)
            if not (v > 0 and math.isfinite(v)):
                return PENALTY
            total += w * math.log(v)
        return total


_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
                    r"|(?P<name>[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*)|(?P<op>[-+*]))")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InputError(f"objective '{text}': cannot read '{text[pos:].strip()}' (write a weighted sum such as "
                             "'fp16 + 0.5*cost')")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _objective(name: str, text: str) -> Objective:
    key = name.lower()
    if key in OBJECTIVES:
        return OBJECTIVES[key]
    parts = key.split("-")
    hint = ""
    if len(parts) > 1 and all(p in OBJECTIVES for p in parts):
        hint = "; objectives are added with '+', and weights must be positive"
    raise InputError(f"unknown objective '{name}' in '{text}': choose from {', '.join(OBJECTIVES)}, or a weighted "
                     f"sum such as 'transforms + 0.5*vandermonde'{hint}")


def parse_objective(text: str) -> Weighted:
    """An objective expression: a name ("vandermonde", "int8-tap"), or a weighted sum of names such as
    "fp16 + 0.5*cost" or "transforms + vandermonde*2".  Weights are positive numbers."""
    tokens = _tokens(text or "")
    if not tokens:
        raise InputError(f"no objective in '{text}': choose from {', '.join(OBJECTIVES)}")
    terms: list[tuple[float, Objective]] = []
    i = 0

    def peek(k: int = 0) -> tuple[str, str]:
        return tokens[i + k] if i + k < len(tokens) else ("end", "")

    def weight(tok: str) -> float:
        w = float(tok)
        if not (math.isfinite(w) and w > 0):
            raise InputError(f"objective '{text}': weight {tok} must be a positive number")
        return w

    while True:
        w = 1.0
        if peek()[0] == "num":
            if peek(1) != ("op", "*"):
                raise InputError(f"objective '{text}': a weight must be a number, written as 0.5*name")
            w, i = weight(peek()[1]), i + 2
        if peek()[0] != "name":
            raise InputError(f"objective '{text}': expected an objective name at term {len(terms) + 1}")
        name, i = peek()[1], i + 1
        if peek() == ("op", "*"):
            if peek(1)[0] != "num":
                raise InputError(f"objective '{text}': '*' must be followed by a weight")
            w, i = w * weight(peek(1)[1]), i + 2
        terms.append((w, _objective(name, text)))
        if peek()[0] == "end":
            return Weighted(tuple(terms))
        if peek() == ("op", "-"):
            raise InputError(f"objective '{text}': weights must be positive (lower is better for every objective), "
                             "so terms are only added with '+'")
        if peek() != ("op", "+"):
            raise InputError(f"objective '{text}': expected '+' between terms, got '{peek()[1]}'")
        i += 1
