"""Search for well-conditioned interpolation points: CMA-ES, snapping to rationals, proof.

The NOVA method as a pipeline of pure steps:

1. **Continuous search.**  CMA-ES (the `cma` package) minimizes the log of an objective over the
   finite points, R^(alpha-1) with the point at infinity (R^alpha without), or over the magnitudes of
   a symmetric set {0, ±a, ±b, ...}.  Restarts double the population each time (IPOP), each restart
   with its own seed, optionally in parallel processes; the result depends only on the seed.
2. **Snapping.**  Each restart's optimum is moved onto the lattice of rationals with denominator
   <= D (or dyadic rationals): every combination of the K nearest lattice values per coordinate is
   scored (K as large as a fixed enumeration budget allows), then the best combinations are improved
   by local search on the lattice (move one or two points to neighbouring simple rationals, keep
   what is better) until no move helps.  Distinctness and symmetry hold by construction.
3. **Proof.**  The best rational sets become exact algorithms and go through the verifier; a
   candidate that fails is dropped and counted, never shown.

Objectives are named functions of a point set (lower is better); see `OBJECTIVES`.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from novagen.algebra import Algorithm, Spec, parse_spec
from novagen.catalog import lookup
from novagen.errors import InputError, NovagenError, SpecError
from novagen.metrics import amplification_of, cond2, float_transforms, vandermonde
from novagen.verify import verify

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # cma warns when matplotlib is absent; plots are not used here
    import cma

PENALTY = 1e3
"""Log-objective given to degenerate point sets (coinciding points), far above any real value."""


# ---------------------------------------------------------------------------------------------
# Objectives


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
def _error_data(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed seeded operands (common random numbers: every candidate sees the same data) and the
    float64 direct reference."""
    from novagen.accuracy import layer_data
    from novagen.reference import correlate_direct

    n, c, _, _, k = ERROR_LAYER
    x, w = layer_data((n, c, 4 * m, 4 * m, k), seed=0, r=r)
    return x, w, correlate_direct(x, w, "same")


@lru_cache(maxsize=65536)
def exact_algorithm(m: int, r: int, points: tuple[Fraction, ...]) -> Algorithm:
    """The exact algorithm of a rational point set (cached: cost and measured objectives share it)."""
    return Algorithm.from_points(Spec.of(m, r), list(points))


@dataclass(frozen=True)
class _FloatAlgorithm:
    """Float transforms that quack like an Algorithm for the precision emulation (continuous phase)."""

    m: int
    r: int
    mats: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def alpha(self) -> int:
        return self.m + self.r - 1

    def matrices(self, dtype: Any = "float64") -> tuple[np.ndarray, ...]:
        return tuple(M.astype(dtype) for M in self.mats)


def _balanced(AT: np.ndarray, G: np.ndarray, BT: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """accuracy.balance on float matrices: rows of G and BT scaled by powers of two to max |entry| in
    [1/2, 1), the inverse folded into AT (exact in binary floating point)."""
    def powers(M: np.ndarray) -> np.ndarray:
        top = np.abs(M).max(axis=1)
        return np.where(top > 0, 2.0 ** -(np.floor(np.log2(np.where(top > 0, top, 1))) + 1), 1.0)

    g, b = powers(G), powers(BT)
    return AT / (g * b)[None, :], G * g[:, None], BT * b[:, None]


def measured_error(ps: PointSet, precision: str) -> float:
    """Relative L2 error of the 2D Winograd layer under a precision policy (novagen.accuracy, fp32 stages
    through BLAS), on the fixed data of `_error_data`, with balanced matrices; inf when any stage overflows.

    The matrices come from float64 transforms of the points, rounded once to the format: for rational
    points this differs from rounding the exact entries only in rare last-bit ties, and it is 10x faster.
    """
    from novagen.accuracy import policy, winograd_emulate

    x, w, ref = _error_data(ps.m, ps.r)
    alg = _FloatAlgorithm(ps.m, ps.r, _balanced(*ps.transforms()))
    y, counts = winograd_emulate(x, w, [alg, alg], policy(precision), "same", blas=True)
    if any(counts.values()):
        return math.inf
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def _measured(precision: str) -> Callable[[PointSet], float]:
    def fn(ps: PointSet) -> float:
        return measured_error(ps, precision)
    return fn


def _cost(ps: PointSet) -> float:
    from novagen.program import transform_cost

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
        p, f"measured relative L2 error of a 2D layer in the {p} precision policy (novagen.accuracy) on fixed "
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


def parse_objective(text: str) -> Weighted:
    """ "vandermonde", "transforms", or a weighted sum such as "transforms + 0.5*vandermonde"."""
    terms = []
    for part in (text or "").replace("-", "+-").split("+"):
        part = part.strip()
        if not part:
            continue
        weight, _, name = part.rpartition("*")
        name = name.strip().lower()
        if name not in OBJECTIVES:
            raise InputError(f"unknown objective '{name}': choose from {', '.join(OBJECTIVES)}, or a weighted sum "
                             "such as 'transforms + 0.5*vandermonde'")
        try:
            w = float(weight) if weight.strip() not in ("", "-") else (-1.0 if weight.strip() == "-" else 1.0)
        except ValueError:
            raise InputError(f"'{part}': a weight must be a number, as in 0.5*vandermonde") from None
        terms.append((w, OBJECTIVES[name]))
    if not terms:
        raise InputError(f"no objective in '{text}': choose from {', '.join(OBJECTIVES)}")
    return Weighted(tuple(terms))


# ---------------------------------------------------------------------------------------------
# The search space


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


def lattice(max_denominator: int, max_abs: float, dyadic: bool = False, positive: bool = False) -> list[Fraction]:
    """Sorted rationals p/q with q <= max_denominator (powers of two only when dyadic), |p/q| <= max_abs."""
    dens = [2**k for k in range(max_denominator.bit_length()) if 2**k <= max_denominator] if dyadic \
        else range(1, max_denominator + 1)
    values = {Fraction(p, q) for q in dens for p in range(-int(max_abs * q), int(max_abs * q) + 1)}
    if positive:
        values = {v for v in values if v > 0}
    return sorted(values)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Candidate:
    """A verified rational point set with its objective values."""

    algorithm: Algorithm
    score: float
    values: dict[str, float]
    verified: bool

    def to_dict(self) -> dict[str, Any]:
        from novagen.export import document

        doc = document(self.algorithm)
        doc["verified"] = self.verified
        doc["objective_values"] = self.values
        doc["score"] = self.score
        return doc


@dataclass
class SearchResult:
    spec: Spec
    objective: str
    seed: int
    settings: dict[str, Any]
    candidates: list[Candidate]
    continuous: list[tuple[float, list[float]]]
    history: list[tuple[int, float]]
    evaluations: int
    dropped: int
    seconds: float
    truncated: bool = False

    @property
    def best(self) -> Algorithm:
        return self.candidates[0].algorithm

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": str(self.spec),
            "objective": self.objective,
            "seed": self.seed,
            "settings": self.settings,
            "seconds": round(self.seconds, 3),
            "best": self.candidates[0].to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "continuous_best": [{"score": s, "points": p} for s, p in self.continuous[:5]],
            "evaluations": self.evaluations,
            "dropped_by_verification": self.dropped,
            "truncated_by_time": self.truncated,
        }


# ---------------------------------------------------------------------------------------------
# Continuous phase


@dataclass(frozen=True)
class _Restart:
    space: Space
    objective: str
    index: int
    seed: int
    popsize: int
    max_evaluations: int
    deadline: float


def _run_restart(job: _Restart) -> tuple[float, list[float], int, list[tuple[int, float]]]:
    """One CMA-ES run from a seeded random start: (best score, best x, evaluations, history)."""
    obj = parse_objective(job.objective).continuous()
    space = job.space
    rng = np.random.default_rng(job.seed)
    lo = np.array([0.05 if space.lower(i) == 0 else -1.5 for i in range(space.dim)])
    x0 = rng.uniform(lo, 1.5)
    bounds = [[space.lower(i) for i in range(space.dim)], [space.max_abs] * space.dim]
    opts = {"seed": job.seed + 1, "popsize": job.popsize, "maxfevals": job.max_evaluations, "verbose": -9,
            "bounds": bounds, "tolfun": 1e-12, "tolx": 1e-12}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if space.dim == 1:
            x0 = np.append(x0, 0.0)  # cma needs two dimensions: pad with an unused coordinate
            opts["bounds"] = [bounds[0] + [-1.0], bounds[1] + [1.0]]
        es = cma.CMAEvolutionStrategy(x0, 0.3, opts)
        history = []
        evals = 0
        while not es.stop() and time.monotonic() < job.deadline:
            xs = es.ask()
            with np.errstate(all="ignore"):
                scores = [obj.score(space.point_set(np.asarray(x)[: space.dim])) for x in xs]
            es.tell(xs, scores)
            evals += len(xs)
            history.append((evals, float(es.result.fbest)))
    best = np.asarray(es.result.xbest)[: space.dim]
    return float(es.result.fbest), [float(v) for v in best], evals, history


# ---------------------------------------------------------------------------------------------
# Lattice phase


@lru_cache(maxsize=8)
def _lattice_for(space: Space, max_denominator: int, dyadic: bool) -> tuple[tuple[Fraction, ...], ...]:
    """The lattice values each coordinate may take."""
    full = tuple(lattice(max_denominator, space.max_abs, dyadic))
    positive = tuple(v for v in full if v > 0)
    return tuple(positive if space.lower(i) == 0 else full for i in range(space.dim))


def feasibility(space: Space, max_denominator: int, dyadic: bool) -> None:
    """Raise InputError when no distinct point set exists on the lattice."""
    values = _lattice_for(space, max_denominator, dyadic)
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


def _distinct(space: Space, q: tuple[Fraction, ...]) -> bool:
    pts = space.expand(q)
    return len(set(pts)) == len(pts)


def _nearest(values: Sequence[Fraction], x: float, k: int) -> list[Fraction]:
    i = int(np.searchsorted(np.array([float(v) for v in values]), x))
    window = values[max(0, i - k): i + k]
    return sorted(window, key=lambda v: abs(float(v) - x))[:k]


def refine(space: Space, objective: Weighted, starts: Sequence[Sequence[float]], max_denominator: int,
           dyadic: bool = False, enumeration: int = 20000, keep: int = 8,
           on_step: Callable[[int], None] | None = None) -> tuple[dict[tuple[Fraction, ...], float], int]:
    """Scores of rational sets near each start: exhaustive near the start, then lattice descent."""
    values = _lattice_for(space, max_denominator, dyadic)
    index = [{v: i for i, v in enumerate(vals)} for vals in values]
    scored: dict[tuple[Fraction, ...], float] = {}

    def score(q: tuple[Fraction, ...]) -> float:
        q = space.canonical(q)
        if q not in scored:
            scored[q] = objective.score(space.point_set(q)) if _distinct(space, q) else PENALTY
            if on_step and len(scored) % 500 == 0:
                on_step(len(scored))
        return scored[q]

    k = max(2, int(enumeration ** (1 / max(space.dim, 1))))
    seeds: list[tuple[Fraction, ...]] = []
    for x in starts:
        options = [_nearest(values[i], x[i], k) for i in range(space.dim)]
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


# ---------------------------------------------------------------------------------------------
# The search


def canonical_points(space: Space, q: Sequence[Fraction]) -> list[Fraction]:
    """Points in the paper's order: 0 first, then by magnitude, + before -."""
    return sorted(space.expand(q), key=lambda p: (abs(p), p < 0))


def search(
    spec: str | Spec,
    objective: str = "vandermonde",
    *,
    max_denominator: int = 12,
    symmetric: bool = True,
    dyadic: bool = False,
    infinity: bool = True,
    max_abs: float = 3.0,
    seed: int = 0,
    restarts: int = 4,
    max_evaluations: int = 20000,
    budget_seconds: float | None = None,
    workers: int = 1,
    top: int = 10,
    balanced: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Find, snap and verify point sets for a 1D spec; deterministic for a given seed and budget.

    `max_evaluations` bounds the continuous phase over all restarts; `budget_seconds` is a wall-clock
    cap on top (the result says whether it cut the search short). `balanced` returns the candidates with
    G and BT rows scaled by powers of two (`accuracy.balance`): the same points, the normalization that
    keeps fp16 taps away from underflow (the measured-error objectives score it).
    """
    start = time.monotonic()
    spec, obj, space, settings = _setup(spec, objective, max_denominator, symmetric, dyadic, infinity, max_abs,
                                        restarts, max_evaluations, workers, top, budget_seconds)
    deadline = start + budget_seconds if budget_seconds else math.inf
    report = on_progress or (lambda event: None)
    continuous, history, evaluations = _continuous(space, obj, seed, restarts, max_evaluations, deadline,
                                                   workers, report)
    starts = [x for _, x in continuous] or [[]]
    scored, lattice_evals = refine(space, obj, starts, max_denominator, dyadic,
                                   enumeration=_enumeration(obj),
                                   on_step=lambda n: report({"phase": "lattice", "evaluations": evaluations + n}))
    evaluations += lattice_evals
    report({"phase": "verify", "evaluations": evaluations})
    ranked = sorted((sc, q) for q, sc in scored.items() if sc < PENALTY)
    verified, dropped = _verified(space, (q for _, q in ranked), top, balanced)
    candidates = [Candidate(alg, scored[q], obj.values(space.point_set(q)), True) for q, alg in verified]
    if not candidates:
        raise InputError(f"no verified candidate for {spec} under these constraints; widen --max-denominator")
    return SearchResult(spec, obj.name, seed, {**settings, "balanced": balanced}, candidates, continuous, history,
                        evaluations, dropped, time.monotonic() - start, truncated=time.monotonic() > deadline)


def _setup(spec: str | Spec, objective: str, max_denominator: int, symmetric: bool, dyadic: bool,
           infinity: bool, max_abs: float, restarts: int, max_evaluations: int, workers: int, top: int,
           budget_seconds: float | None) -> tuple[Spec, Weighted, Space, dict[str, Any]]:
    """Checked inputs of a search: the spec, the objective, the space and the settings a result records
    (InputError on bad values)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.ndim != 1:
        raise SpecError(f"search works on one axis: search F({spec.m[0]},{spec.r[0]}) and nest it for {spec}")
    obj = parse_objective(objective)
    for name, value in (("--max-denominator", max_denominator), ("--restarts", restarts),
                        ("--max-evaluations", max_evaluations), ("--workers", workers), ("--top", top)):
        if int(value) < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if budget_seconds is not None and not budget_seconds > 0:
        raise InputError(f"--budget-seconds must be positive, got {budget_seconds}")
    if not max_abs > 0:
        raise InputError(f"--max-abs must be positive, got {max_abs}")
    space = Space(spec, symmetric, infinity, float(max_abs))
    feasibility(space, max_denominator, dyadic)
    settings = {"max_denominator": max_denominator, "symmetric": symmetric, "dyadic": dyadic,
                "infinity": infinity, "max_abs": max_abs, "restarts": restarts,
                "max_evaluations": max_evaluations, "workers": workers}
    return spec, obj, space, settings


def _enumeration(obj: Weighted) -> int:
    """Lattice enumeration budget: measured errors and costs take milliseconds per set, not microseconds."""
    return 2000 if obj.expensive else 20000


def _continuous(space: Space, obj: Weighted, seed: int, restarts: int, max_evaluations: int, deadline: float,
                workers: int, report: Callable[[dict[str, Any]], None]
                ) -> tuple[list[tuple[float, list[float]]], list[tuple[int, float]], int]:
    """IPOP restarts (population doubling, evaluation share with it): ranked optima, history, evaluations."""
    base = 4 + int(3 * math.log(max(space.dim, 2)))
    shares = [2**i for i in range(restarts)]
    jobs = [_Restart(space, obj.name, i, seed * 7919 + i, base * 2**i,
                     max(200, max_evaluations * s // sum(shares)), deadline) for i, s in enumerate(shares)]
    runs: list[tuple[float, list[float], int, list[tuple[int, float]]]] = []

    def done(job: _Restart, res: tuple[float, list[float], int, list[tuple[int, float]]]) -> None:
        runs.append(res)
        report({"phase": "continuous", "restart": job.index + 1, "restarts": restarts,
                "evaluations": sum(r[2] for r in runs), "best": min(r[0] for r in runs)})

    if space.dim == 0:
        pass
    elif workers == 1:
        for job in jobs:
            done(job, _run_restart(job))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for job, res in zip(jobs, pool.map(_run_restart, jobs)):
                done(job, res)
    history: list[tuple[int, float]] = []
    offset, best_so_far = 0, math.inf
    for _, _, n, hist in runs:
        for e, f in hist:
            best_so_far = min(best_so_far, f)
            history.append((offset + e, best_so_far))
        offset += n
    continuous = sorted(((r[0], r[1]) for r in runs), key=lambda t: t[0])
    return continuous, history, offset


def _verified(space: Space, sets: Iterable[tuple[Fraction, ...]], top: int, balanced: bool = False
              ) -> tuple[list[tuple[tuple[Fraction, ...], Algorithm]], int]:
    """The first `top` sets that the verifier proves exact, and how many failed (dropped, never shown).
    `balanced` returns `accuracy.balance` of each algorithm: the normalization low precision needs."""
    from novagen.accuracy import balance

    out: list[tuple[tuple[Fraction, ...], Algorithm]] = []
    dropped = 0
    for q in sets:
        if len(out) >= top:
            break
        alg = Algorithm.from_points(space.spec, canonical_points(space, q))
        if balanced:
            alg = balance(alg)
        if not verify(alg, symbolic_2d=False, strict=False).verified:
            dropped += 1
            continue
        out.append((q, alg))
    return out, dropped


# ---------------------------------------------------------------------------------------------
# Pareto mode: two objectives, the front of non-dominated verified sets


@dataclass(frozen=True)
class FrontPoint:
    """A point of a two-objective front: an algorithm and its two objective values."""

    algorithm: Algorithm
    values: tuple[float, float]
    verified: bool
    reference: str | None = None

    def to_dict(self, names: tuple[str, str]) -> dict[str, Any]:
        from novagen.export import document

        doc = document(self.algorithm)
        doc["verified"] = self.verified
        doc["objective_values"] = dict(zip(names, self.values))
        if self.reference:
            doc["reference"] = self.reference
        return doc


@dataclass
class ParetoResult:
    spec: Spec
    objectives: tuple[str, str]
    seed: int
    settings: dict[str, Any]
    front: list[FrontPoint]
    references: list[FrontPoint]
    evaluations: int
    dropped: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": str(self.spec), "objectives": list(self.objectives), "seed": self.seed,
            "settings": self.settings, "seconds": round(self.seconds, 3),
            "front": [p.to_dict(self.objectives) for p in self.front],
            "references": [p.to_dict(self.objectives) for p in self.references],
            "evaluations": self.evaluations, "dropped_by_verification": self.dropped,
        }


def nondominated(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both values <=, one <), sorted by the first value."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_second = [], math.inf
    for i in order:
        if points[i][1] < best_second:
            front.append(i)
            best_second = points[i][1]
    return front


def pareto(
    spec: str | Spec,
    objective: str = "fp16",
    against: str = "cost",
    *,
    weights: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    max_denominator: int = 12,
    symmetric: bool = True,
    dyadic: bool = False,
    infinity: bool = True,
    max_abs: float = 3.0,
    seed: int = 0,
    restarts: int = 4,
    max_evaluations: int = 4000,
    budget_seconds: float | None = None,
    workers: int = 1,
    keep: int = 12,
    references: Sequence[str] = ("classic", "nova", "kappa"),
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> ParetoResult:
    """The front of `objective` against `against` (lower is better for both).

    One continuous phase on `objective` (its float-scorable part); then, from the same optima, a lattice
    refinement for each scalarization ln(objective) + w·ln(against), w in `weights`; every set any of them
    ranks in its best `keep` is a candidate; the non-dominated ones are verified and returned. The catalog
    entries of `references` (families such as classic and nova) are scored the same way for comparison.
    """
    start = time.monotonic()
    spec, obj_a, space, settings = _setup(spec, objective, max_denominator, symmetric, dyadic, infinity, max_abs,
                                          restarts, max_evaluations, workers, 1, budget_seconds)
    obj_b = parse_objective(against)
    if len(obj_a.terms) != 1 or len(obj_b.terms) != 1:
        raise InputError("--pareto compares two single objectives, such as --objective fp16 --pareto cost")
    if obj_a.name == obj_b.name:
        raise InputError(f"--pareto needs a second objective, not {obj_b.name} again")
    deadline = start + budget_seconds if budget_seconds else math.inf
    report = on_progress or (lambda event: None)
    continuous, _, evaluations = _continuous(space, obj_a, seed, restarts, max_evaluations, deadline, workers,
                                             report)
    starts = [x for _, x in continuous] or [[]]
    a, b = obj_a.terms[0][1], obj_b.terms[0][1]
    pool: set[tuple[Fraction, ...]] = set()
    for i, w in enumerate(weights):
        scal = Weighted(((1.0, a), (float(w), b))) if w else obj_a
        scored, n = refine(space, scal, starts, max_denominator, dyadic, enumeration=_enumeration(scal))
        evaluations += n
        pool.update(q for _, q in sorted((sc, q) for q, sc in scored.items() if sc < PENALTY)[:keep])
        report({"phase": "pareto", "weight": float(w), "step": i + 1, "steps": len(weights),
                "evaluations": evaluations})
    sets = sorted(pool)
    values = [(a.fn(space.point_set(q)), b.fn(space.point_set(q))) for q in sets]
    finite = [i for i, v in enumerate(values) if all(math.isfinite(x) for x in v)]
    order = [finite[j] for j in nondominated([values[i] for i in finite])]
    verified, dropped = _verified(space, (sets[i] for i in order), len(order))
    ok = {q: alg for q, alg in verified}
    front = [FrontPoint(ok[sets[i]], values[i], True) for i in order if sets[i] in ok]
    refs = []
    for family in references:
        try:
            alg = lookup(f"{spec}/{family}")
        except NovagenError:  # a reference missing from the catalog is simply not shown
            continue
        finite_pts = getattr(alg, "finite_points", None)
        if not finite_pts:
            continue
        ps = PointSet(spec.m[0], spec.r[0], np.array([float(p) for p in finite_pts]),
                      len(finite_pts) < spec.alpha[0], tuple(finite_pts))
        refs.append(FrontPoint(alg, (a.fn(ps), b.fn(ps)), True, family))
    settings = {**settings, "weights": list(weights), "keep": keep}
    return ParetoResult(spec, (a.name, b.name), seed, settings, front, refs, evaluations, dropped,
                        time.monotonic() - start)


# ---------------------------------------------------------------------------------------------
# Campaigns: one TOML file per catalog entry saying how it was found

CAMPAIGN_KEYS = {"name", "spec", "objective", "max_denominator", "symmetric", "dyadic", "infinity", "max_abs",
                 "seed", "restarts", "max_evaluations", "balanced", "description"}


@dataclass(frozen=True)
class Campaign:
    name: str
    spec: str
    settings: dict[str, Any]
    description: str
    path: Path


def load_campaign(path: str | Path) -> Campaign:
    """Read a campaign file (a path, or the file name of a campaign shipped in search/)."""

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from novagen.catalog import data_dir, split_name

    p = Path(path)
    if not p.exists():
        shipped = data_dir("search") / p.name
        if not shipped.exists():
            raise InputError(f"campaign file {path} does not exist (shipped campaigns: novagen search --list)")
        p = shipped
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read campaign {p}: {exc}") from None
    unknown = set(data) - CAMPAIGN_KEYS
    if unknown:
        raise InputError(f"campaign {p.name}: unknown keys {', '.join(sorted(unknown))} "
                         f"(allowed: {', '.join(sorted(CAMPAIGN_KEYS))})")
    for key in ("name", "spec"):
        if key not in data:
            raise InputError(f"campaign {p.name} lacks '{key}'")
    spec, _ = split_name(data["name"])
    if spec != parse_spec(data["spec"]):
        raise InputError(f"campaign {p.name}: name {data['name']} does not match spec {data['spec']}")
    settings = {k: v for k, v in data.items() if k not in ("name", "spec", "description")}
    return Campaign(data["name"], data["spec"], settings, data.get("description", ""), p)


def run_campaign(campaign: Campaign, on_progress: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    return search(campaign.spec, on_progress=on_progress, **campaign.settings)


def campaign_provenance(campaign: Campaign, result: SearchResult) -> dict[str, Any]:
    """How a catalog entry was found: enough to re-run it."""
    from novagen import __version__

    return {
        "source": "search",
        "campaign": f"search/{campaign.path.name}",
        "description": campaign.description,
        "objective": result.objective,
        "objective_values": result.candidates[0].values,
        "seed": result.seed,
        "settings": result.settings,
        "evaluations": result.evaluations,
        "continuous_best_score": result.continuous[0][0] if result.continuous else None,
        "novagen": __version__,
    }


class _CallableModule(types.ModuleType):
    """`novagen.search("F(8,3)", ...)` runs `search`; the module's other names (pareto, campaigns,
    objectives) stay reachable as `novagen.search.pareto` and so on."""

    def __call__(self, *args: Any, **kwargs: Any) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
