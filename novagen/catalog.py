"""The catalog: verified algorithms shipped with novagen, looked up by name ("F(6,3)/nova").

Each entry is one JSON file in `verify/` holding its certificate (the exact matrices, their hash,
what was proven) and its provenance (a named point family, or the search campaign that found it).
Entries load without re-proving: the recorded hash must match the matrices, and a test re-runs the
proofs.  Multi-dimensional names such as "F(6x6,3x3)/nova" nest the 1D entries of each axis.

`python -m novagen.catalog` rewrites the reference entries (the named point families).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from novagen.algebra import Algorithm, AnyAlgorithm, Nested, Spec, build, from_dict, parse_spec
from novagen.errors import CatalogError, InputError, PointsError
from novagen.files import atomic_write
from novagen.limits import short
from novagen.points import FAMILIES, FAMILY_ALIASES
from novagen.resources import PACKAGE_DIR, data_dir

# Reference entries: (spec, family) pairs shipped with their certificates.
REFERENCE_ENTRIES: tuple[tuple[str, str], ...] = (
    ("F(2,3)", "integer"),
    ("F(2,3)", "classic"),
    *((f"F({m},3)", fam) for m in (4, 6, 8) for fam in ("integer", "classic", "nova")),
)

PROVENANCE = {
    "integer": {"source": "point family", "family": "integer",
                "reference": "standard integer points 0, ±1, ±2, ... (the NOVA paper's baseline)"},
    "classic": {"source": "point family", "family": "classic",
                "reference": "Barabasz et al., arXiv 1803.10986; the table in TVM topi/nn/winograd_util.py"},
    "nova": {"source": "point family", "family": "nova",
             "reference": "NOVA, arXiv 2512.18453: CMA-ES on the Vandermonde condition number, "
                          "snapped to denominators <= 6"},
}


def slug(name: str) -> str:
    """File stem of a catalog name: "F(6,3)/nova" -> "f6_3-nova"."""
    spec, family = split_name(name)
    return f"f{'x'.join(map(str, spec.m))}_{'x'.join(map(str, spec.r))}-{family}"


def split_name(name: str) -> tuple[Spec, str]:
    """("F(6,3)", "nova") from "F(6, 3)/NOVA", resolving family aliases such as "standard"."""
    if "/" not in name:
        raise CatalogError(f"'{name}' is not a catalog name: write spec/family such as F(6,3)/nova")
    left, family = name.rsplit("/", 1)
    family = family.strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", family):
        raise CatalogError(f"'{name}': the part after '/' must be a name such as nova, classic or best")
    return parse_spec(left), FAMILY_ALIASES.get(family, family)


@dataclass(frozen=True)
class Entry:
    """One verified catalog algorithm."""

    name: str
    algorithm: Algorithm
    provenance: dict[str, Any]
    certificate: dict[str, Any]
    path: Path


def _read_entry(path: Path) -> Entry:
    try:
        data = json.loads(path.read_text())
        name = data["name"]
        cert = data["certificate"]
        alg = from_dict(cert["algorithm"])
    except (OSError, ValueError, KeyError, TypeError, InputError) as exc:
        raise CatalogError(f"catalog file {path.name} is damaged ({exc}): reinstall novagen") from None
    if not isinstance(alg, Algorithm):
        raise CatalogError(f"catalog file {path.name} must hold a 1D algorithm")
    if alg.content_hash != cert.get("hash") or not cert.get("verified"):
        raise CatalogError(f"catalog file {path.name} does not match its certificate hash: reinstall novagen")
    alg = Algorithm(alg.m, alg.r, alg.AT, alg.G, alg.BT, alg.points, name)
    return Entry(name, alg, data.get("provenance", {}), cert, path)


@lru_cache(maxsize=1)
def _entries() -> dict[str, Entry]:
    found = [_read_entry(p) for p in sorted(data_dir("verify").glob("*.json"))]
    return {e.name: e for e in found}


def _family_rank(family: str) -> tuple[int, str]:
    order = [*FAMILIES, "kappa", "transforms", "best", "best-dyadic"]
    return (order.index(family) if family in order else len(order), family)


def catalog_entries(spec: str | Spec | None = None) -> list[Entry]:
    """Every shipped entry (optionally only those of one spec), ordered by spec then family."""
    entries = list(_entries().values())
    if spec is not None:
        want = parse_spec(spec) if isinstance(spec, str) else spec
        entries = [e for e in entries if e.algorithm.spec == want]

    def key(e: Entry) -> tuple[Any, ...]:
        sp, fam = split_name(e.name)
        return (sp.r, sp.m, _family_rank(fam))

    return sorted(entries, key=key)


def lookup(name: str) -> AnyAlgorithm:
    """The catalog algorithm of a name; nD names nest the 1D entries of each axis."""
    spec, family = split_name(name)
    entries = _entries()
    axes = []
    for i in range(spec.ndim):
        key = f"{spec.axis(i)}/{family}"
        if key not in entries:
            same = sorted(n for n in entries if n.startswith(f"{spec.axis(i)}/"))
            hint = f"entries for {spec.axis(i)}: {', '.join(same)}" if same else "run 'novagen catalog' to list entries"
            raise CatalogError(f"'{name}' is not in the catalog ({hint})")
        axes.append(entries[key].algorithm)
    if spec.ndim == 1:
        return axes[0]
    return Nested(tuple(axes), f"{spec}/{family}")


def algorithm(spec_or_name: str, points: Any = None, *, snap: int | None = None) -> AnyAlgorithm:
    """An algorithm by catalog name ("F(6,3)/nova") or by spec and points.

    `points` is a list, a string such as "0,3/5,-3/5,1,-1,7/6,-7/6", or a family name (integer,
    classic, nova); without points a spec gets the classic family.
    """
    if not isinstance(spec_or_name, str):
        raise InputError(f"expected a spec or catalog name as a string, got {type(spec_or_name).__name__}")
    if snap is not None and points is None:
        raise PointsError(f"snap {short(snap)} rounds the points you give (--points); a catalog name or a bare spec "
                          "has exact points already")
    if "/" in spec_or_name:
        if points is not None:
            raise PointsError(f"'{spec_or_name}' is a catalog name and has its own points; pass a spec such "
                              "as F(6,3) to give points")
        return lookup(spec_or_name)
    return build(spec_or_name, "classic" if points is None else points, snap=snap)


def entry_document(alg: Algorithm, name: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of a catalog entry: the algorithm proven exact, with provenance."""
    from novagen.verify import verify

    named = Algorithm(alg.m, alg.r, alg.AT, alg.G, alg.BT, alg.points, name)
    cert = verify(named)
    return {"name": name, "provenance": provenance, "certificate": cert.to_dict()}


def source_catalog() -> Path:
    """The verify/ folder of a source checkout, the one the catalog reads; CatalogError for an installed
    package, whose catalog is read-only (writing into site-packages would change nothing the catalog
    reads, or the package itself)."""
    folder = PACKAGE_DIR.parent / "verify"
    if not folder.is_dir() or data_dir("verify") != folder:
        raise CatalogError("this novagen is an installed package, whose catalog is read-only: write catalog "
                           "entries from a source checkout (pip install -e .), or pass a directory")
    return folder


def write_entry(alg: Algorithm, name: str, provenance: dict[str, Any], directory: Path | None = None) -> Path:
    """Prove and write (or rewrite) one entry into `directory` (default: the source checkout's catalog)."""
    doc = entry_document(alg, name, provenance)
    path = (directory or source_catalog()) / f"{slug(name)}.json"
    atomic_write(path, json.dumps(doc, indent=1) + "\n", overwrite=True)
    _entries.cache_clear()
    return path


def rebuild_reference(directory: Path | None = None) -> list[Path]:
    """Re-prove and rewrite every reference entry."""
    paths = []
    for spec, family in REFERENCE_ENTRIES:
        alg = Algorithm.from_points(spec, family)
        paths.append(write_entry(alg, f"{spec}/{family}", PROVENANCE[family], directory))
    return paths


if __name__ == "__main__":
    for p in rebuild_reference(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(p)
