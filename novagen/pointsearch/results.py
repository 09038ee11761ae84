"""What a search returns: verified candidates with their objective values, and Pareto fronts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from novagen.algebra import Algorithm, Spec
from novagen.export import document


@dataclass(frozen=True)
class Candidate:
    """A verified rational point set with its objective values."""

    algorithm: Algorithm
    score: float
    values: dict[str, float]
    verified: bool

    def to_dict(self) -> dict[str, Any]:
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



@dataclass(frozen=True)
class FrontPoint:
    """A point of a two-objective front: an algorithm and its two objective values."""

    algorithm: Algorithm
    values: tuple[float, float]
    verified: bool
    reference: str | None = None

    def to_dict(self, names: tuple[str, str]) -> dict[str, Any]:
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

