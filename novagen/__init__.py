"""novagen: well-conditioned Winograd convolution transforms, proven exact, and the kernels that run them.

The light core is imported here; the stages that pull in heavy dependencies load on first use:
`novagen.accuracy`, `novagen.precision`, `novagen.pointsearch` (with `novagen.search(...)` and
`novagen.pareto(...)`), and, with their extras, `novagen.networks`, `novagen.torch` and `novagen.tvm`.
"""

from typing import Any

from novagen.algebra import Algorithm, AnyAlgorithm, Nested, Spec, build, from_dict, parse_spec
from novagen.balancing import balance
from novagen.catalog import algorithm, catalog_entries
from novagen.codegen import compile, generate
from novagen.errors import (
    CatalogError,
    CheckFailed,
    InputError,
    NovagenError,
    PointsError,
    SpecError,
    TransformFileError,
    VerificationFailed,
)
from novagen.metrics import metrics
from novagen.points import INF, family_points, parse_points
from novagen.verify import Certificate
from novagen.verify import verify as verify_algorithm
from novagen.version import __version__

__all__ = [
    "INF", "Algorithm", "CatalogError", "Certificate", "CheckFailed", "InputError", "Nested",
    "NovagenError", "PointsError", "Spec", "SpecError", "TransformFileError", "VerificationFailed",
    "__version__", "algorithm", "balance", "build", "catalog_entries", "compile", "family_points", "from_dict",
    "generate", "metrics", "pareto", "parse_points", "parse_spec", "search", "verify",
]

def verify(alg: AnyAlgorithm | str, **options: Any) -> Certificate:
    """Prove an algorithm, or the catalog entry a name such as "F(6,3)/nova" names, exact (see
    `novagen.verify.verify` for the options): a Certificate, or VerificationFailed."""
    return verify_algorithm(algorithm(alg) if isinstance(alg, str) else alg, **options)


_LAZY_MODULES = ("accuracy", "precision", "pointsearch", "networks", "torch", "tvm")
_LAZY_FUNCTIONS = {"search": "novagen.pointsearch", "pareto": "novagen.pointsearch"}


def __getattr__(name: str) -> object:
    """Stages loaded on first use (see the module docstring)."""
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f"novagen.{name}")
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(_LAZY_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'novagen' has no attribute '{name}'")
