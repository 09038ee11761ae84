"""novagen: well-conditioned Winograd convolution transforms, proven exact."""

__version__ = "0.1.0"

from novagen.algebra import (  # noqa: E402
    INF,
    Algorithm,
    Nested,
    Spec,
    build,
    family_points,
    from_dict,
    parse_points,
    parse_spec,
)
from novagen.catalog import algorithm, catalog_entries  # noqa: E402
from novagen.codegen import compile, generate  # noqa: E402
from novagen.errors import (  # noqa: E402
    CatalogError,
    CheckFailed,
    InputError,
    NovagenError,
    PointsError,
    SpecError,
    TransformFileError,
    VerificationFailed,
)
from novagen.metrics import metrics  # noqa: E402
from novagen.verify import Certificate, verify  # noqa: E402

__all__ = [
    "INF", "Algorithm", "CatalogError", "Certificate", "CheckFailed", "InputError", "Nested",
    "NovagenError", "PointsError", "Spec", "SpecError", "TransformFileError", "VerificationFailed",
    "__version__", "algorithm", "build", "catalog_entries", "compile", "family_points", "from_dict", "generate",
    "metrics",
    "parse_points", "parse_spec", "verify",
]


def __getattr__(name: str) -> object:
    """Submodules loaded on first use: `novagen.accuracy`, `novagen.search` (callable:
    `novagen.search("F(8,3)")`), `novagen.networks` and `novagen.torch` (the last two need the torch extra)."""
    if name in ("accuracy", "search", "networks", "torch"):
        import importlib

        return importlib.import_module(f"novagen.{name}")
    raise AttributeError(f"module 'novagen' has no attribute '{name}'")
