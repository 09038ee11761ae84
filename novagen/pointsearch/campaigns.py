"""Campaigns: one TOML file per catalog entry saying how it was found (spec, objective, constraints, seed);
re-running one reproduces the entry."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novagen.algebra import parse_spec
from novagen.catalog import split_name
from novagen.errors import InputError
from novagen.files import shorten
from novagen.limits import short
from novagen.pointsearch.optimizer import search
from novagen.pointsearch.results import SearchResult
from novagen.resources import data_dir
from novagen.version import __version__

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

    p = Path(path)
    if not p.exists():
        shipped = data_dir("search") / p.name
        if not shipped.exists():
            raise InputError(f"campaign file {shorten(path)} does not exist (the shipped campaigns: novagen search "
                             "--list)")
        p = shipped
    if not p.is_file():
        raise InputError(f"campaign {shorten(p)} is not a file")
    if p.stat().st_size > 1 << 20:
        raise InputError(f"campaign {shorten(p)} is {p.stat().st_size:,} bytes: a campaign is a short TOML file")
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read campaign {shorten(p)}: {short(exc, 200)}") from None
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


def shipped_campaigns() -> list[Campaign]:
    """The campaigns that ship with novagen (search/*.toml), by file name."""
    return [load_campaign(p) for p in sorted(data_dir("search").glob("*.toml"))]


def run_campaign(campaign: Campaign, on_progress: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    return search(campaign.spec, on_progress=on_progress, **campaign.settings)


def campaign_provenance(campaign: Campaign, result: SearchResult) -> dict[str, Any]:
    """How a catalog entry was found: enough to re-run it."""
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

