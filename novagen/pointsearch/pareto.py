"""Pareto mode: the front of two objectives over verified rational point sets."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from novagen.algebra import Spec
from novagen.catalog import lookup
from novagen.errors import InputError, NovagenError
from novagen.limits import seed as limits_seed
from novagen.pointsearch.objectives import PENALTY, PointSet, Weighted, parse_objective
from novagen.pointsearch.optimizer import continuous_phase, enumeration_budget, setup, verified_sets
from novagen.pointsearch.results import FrontPoint, ParetoResult
from novagen.pointsearch.space import refine


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
    seed = limits_seed(seed, "--seed")
    spec, obj_a, space, settings = setup(spec, objective, max_denominator, symmetric, dyadic, infinity, max_abs,
                                          restarts, max_evaluations, workers, 1, budget_seconds)
    obj_b = parse_objective(against)
    if len(obj_a.terms) != 1 or len(obj_b.terms) != 1:
        raise InputError("--pareto compares two single objectives, such as --objective fp16 --pareto cost")
    if obj_a.name == obj_b.name:
        raise InputError(f"--pareto needs a second objective, not {obj_b.name} again")
    deadline = start + budget_seconds if budget_seconds else math.inf
    report = on_progress or (lambda event: None)
    continuous, _, evaluations = continuous_phase(space, obj_a, seed, restarts, max_evaluations, deadline, workers,
                                             report)
    starts = [x for _, x in continuous] or [[]]
    a, b = obj_a.terms[0][1], obj_b.terms[0][1]
    pool: set[tuple[Fraction, ...]] = set()
    for i, w in enumerate(weights):
        scal = Weighted(((1.0, a), (float(w), b))) if w else obj_a
        scored, n = refine(space, scal, starts, max_denominator, dyadic, enumeration=enumeration_budget(scal))
        evaluations += n
        pool.update(q for _, q in sorted((sc, q) for q, sc in scored.items() if sc < PENALTY)[:keep])
        report({"phase": "pareto", "weight": float(w), "step": i + 1, "steps": len(weights),
                "evaluations": evaluations})
    sets = sorted(pool)
    values = [(a.fn(space.point_set(q)), b.fn(space.point_set(q))) for q in sets]
    finite = [i for i, v in enumerate(values) if all(math.isfinite(x) for x in v)]
    order = [finite[j] for j in nondominated([values[i] for i in finite])]
    verified, dropped = verified_sets(space, (sets[i] for i in order), len(order))
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

