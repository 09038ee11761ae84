"""The search: CMA-ES over the points (IPOP restarts, each with its own seed, optionally in parallel
processes), lattice refinement of the optima, and proof of the best rational sets; the result depends only
on the seed and the budget."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import get_context
from typing import Any

import numpy as np

from novagen.algebra import Algorithm, Spec, parse_spec
from novagen.balancing import balance
from novagen.errors import InputError, SpecError
from novagen.interrupts import ignore_interrupts
from novagen.limits import real, short, whole
from novagen.limits import seed as limits_seed
from novagen.pointsearch.objectives import PENALTY, Weighted, parse_objective
from novagen.pointsearch.results import Candidate, SearchResult
from novagen.pointsearch.space import MAX_ABS, Space, canonical_points, feasibility, lattice_size, refine
from novagen.verify import verify

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # cma warns when matplotlib is absent; plots are not used here
    import cma


@dataclass(frozen=True)
class Restart:
    space: Space
    objective: str
    index: int
    seed: int
    popsize: int
    max_evaluations: int
    deadline: float


def run_restart(job: Restart) -> tuple[float, list[float], int, list[tuple[int, float]]]:
    """One CMA-ES run from a seeded random start: (best score, best x, evaluations, history)."""
    obj = parse_objective(job.objective).continuous()
    space = job.space
    rng = np.random.default_rng(job.seed)
    lo = np.array([0.05 if space.lower(i) == 0 else -1.5 for i in range(space.dim)])
    x0 = rng.uniform(lo, 1.5)
    bounds = [[space.lower(i) for i in range(space.dim)], [space.max_abs] * space.dim]
    opts = {"seed": (job.seed + 1) % (2**32 - 1) or 1, "popsize": job.popsize, "maxfevals": job.max_evaluations,
            "verbose": -9,
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
    G and BT rows scaled by powers of two (`balancing.balance`): the same points, the normalization that
    keeps fp16 taps away from underflow (the measured-error objectives score it).
    """
    start = time.monotonic()
    seed = limits_seed(seed, "--seed")
    spec, obj, space, settings = setup(spec, objective, max_denominator, symmetric, dyadic, infinity, max_abs,
                                        restarts, max_evaluations, workers, top, budget_seconds)
    deadline = start + budget_seconds if budget_seconds else math.inf
    report = on_progress or (lambda event: None)
    continuous, history, evaluations = continuous_phase(space, obj, seed, restarts, max_evaluations, deadline,
                                                   workers, report)
    starts = [x for _, x in continuous] or [[]]
    scored, lattice_evals = refine(space, obj, starts, max_denominator, dyadic,
                                   enumeration=enumeration_budget(obj),
                                   on_step=lambda n: report({"phase": "lattice", "evaluations": evaluations + n}))
    evaluations += lattice_evals
    report({"phase": "verify", "evaluations": evaluations})
    ranked = sorted((sc, q) for q, sc in scored.items() if sc < PENALTY)
    verified, dropped = verified_sets(space, (q for _, q in ranked), top, balanced)
    candidates = [Candidate(alg, scored[q], obj.values(space.point_set(q)), True) for q, alg in verified]
    if not candidates:
        raise InputError(f"no verified candidate for {spec} under these constraints; widen --max-denominator")
    return SearchResult(spec, obj.name, seed, {**settings, "balanced": balanced}, candidates, continuous, history,
                        evaluations, dropped, time.monotonic() - start, truncated=time.monotonic() > deadline)


MAX_RESTARTS = 12
"""IPOP doubles the population each restart: 12 restarts already reach 2048 × the base population."""


def setup(spec: str | Spec, objective: str, max_denominator: int, symmetric: bool, dyadic: bool,
           infinity: bool, max_abs: float, restarts: int, max_evaluations: int, workers: int, top: int,
           budget_seconds: float | None) -> tuple[Spec, Weighted, Space, dict[str, Any]]:
    """Checked inputs of a search: the spec, the objective, the space and the settings a result records
    (InputError on bad values)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.ndim != 1:
        raise SpecError(f"search works on one axis: search F({spec.m[0]},{spec.r[0]}) and nest it for {spec}")
    obj = parse_objective(objective)
    bounds = (("--max-denominator", max_denominator, 10**6), ("--restarts", restarts, MAX_RESTARTS),
              ("--max-evaluations", max_evaluations, 10**7), ("--workers", workers, 256), ("--top", top, 1000))
    for name, value, top_value in bounds:
        v = whole(name, value, -(2**63), 2**63)
        if v < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
        if v > top_value:
            raise InputError(f"{name} must be at most {top_value:,}, got {short(value)}")
    if budget_seconds is not None and not (real("--budget-seconds", budget_seconds, -1e300, 1e300) > 0):
        raise InputError(f"--budget-seconds must be positive, got {budget_seconds}")
    max_abs = real("--max-abs", max_abs, 0, MAX_ABS, open_low=True)
    space = Space(spec, symmetric, infinity, max_abs)
    lattice_size(max_denominator, max_abs, dyadic)
    feasibility(space, max_denominator, dyadic)
    settings = {"max_denominator": max_denominator, "symmetric": symmetric, "dyadic": dyadic,
                "infinity": infinity, "max_abs": max_abs, "restarts": restarts,
                "max_evaluations": max_evaluations, "workers": workers}
    return spec, obj, space, settings


def enumeration_budget(obj: Weighted) -> int:
    """Lattice enumeration budget: measured errors and costs take milliseconds per set, not microseconds."""
    return 2000 if obj.expensive else 20000


def continuous_phase(space: Space, obj: Weighted, seed: int, restarts: int, max_evaluations: int, deadline: float,
                workers: int, report: Callable[[dict[str, Any]], None]
                ) -> tuple[list[tuple[float, list[float]]], list[tuple[int, float]], int]:
    """IPOP restarts (population doubling, evaluation share with it): ranked optima, history, evaluations."""
    base = 4 + int(3 * math.log(max(space.dim, 2)))
    shares = [2**i for i in range(restarts)]
    jobs = [Restart(space, obj.name, i, seed * 7919 + i, base * 2**i,
                     max(200, max_evaluations * s // sum(shares)), deadline) for i, s in enumerate(shares)]
    runs: list[tuple[float, list[float], int, list[tuple[int, float]]]] = []

    def done(job: Restart, res: tuple[float, list[float], int, list[tuple[int, float]]]) -> None:
        runs.append(res)
        report({"phase": "continuous", "restart": job.index + 1, "restarts": restarts,
                "evaluations": sum(r[2] for r in runs), "best": min(r[0] for r in runs)})

    if space.dim == 0:
        pass
    elif workers == 1:
        for job in jobs:
            done(job, run_restart(job))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=ignore_interrupts) as pool:
            for job, res in zip(jobs, pool.map(run_restart, jobs)):
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


def verified_sets(space: Space, sets: Iterable[tuple[Fraction, ...]], top: int, balanced: bool = False
              ) -> tuple[list[tuple[tuple[Fraction, ...], Algorithm]], int]:
    """The first `top` sets that the verifier proves exact, and how many failed (dropped, never shown).
    `balanced` returns `balancing.balance` of each algorithm: the normalization low precision needs."""
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

