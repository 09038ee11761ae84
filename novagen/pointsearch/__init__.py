"""Search for well-conditioned interpolation points: CMA-ES, snapping to rationals, proof.

The NOVA method as a pipeline of pure steps, one module each:

1. `objectives`: named functions of a point set (lower is better) and weighted sums of them.
2. `space`: how a real vector maps to points, the lattice of rationals, and lattice refinement.
3. `optimizer`: CMA-ES (the `cma` package) minimizes the log of the objective over the finite points,
   IPOP restarts each with its own seed, optionally in parallel processes; each optimum is moved onto
   the lattice of rationals with denominator <= D (or dyadic rationals); the best rational sets become
   exact algorithms and go through the verifier, and a candidate that fails is dropped and counted.
4. `pareto`: the front of two objectives.
5. `campaigns`: one TOML file per catalog entry saying how it was found.

`novagen.search(...)` and `novagen.pareto(...)` are `search` and `pareto` here.
"""

from __future__ import annotations

from novagen.pointsearch.campaigns import (
    Campaign,
    campaign_provenance,
    load_campaign,
    run_campaign,
    shipped_campaigns,
)
from novagen.pointsearch.objectives import (
    ERROR_LAYER,
    OBJECTIVES,
    PENALTY,
    Objective,
    PointSet,
    Weighted,
    error_data,
    exact_algorithm,
    measured_error,
    parse_objective,
    register_objective,
)
from novagen.pointsearch.optimizer import search
from novagen.pointsearch.pareto import nondominated, pareto
from novagen.pointsearch.results import Candidate, FrontPoint, ParetoResult, SearchResult
from novagen.pointsearch.space import Space, canonical_points, feasibility, lattice, refine

__all__ = [
    "ERROR_LAYER", "OBJECTIVES", "PENALTY", "Campaign", "Candidate", "FrontPoint", "Objective", "ParetoResult",
    "PointSet", "SearchResult", "Space", "Weighted", "campaign_provenance", "canonical_points", "error_data",
    "exact_algorithm", "feasibility", "lattice", "load_campaign", "measured_error", "nondominated", "pareto",
    "parse_objective", "refine", "register_objective", "run_campaign", "search", "shipped_campaigns",
]
