"""What every command shares: option help texts, the consoles, JSON output, resolving an algorithm."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from novagen.algebra import AnyAlgorithm
from novagen.catalog import algorithm

SPEC_HELP = 'a catalog name such as "F(6,3)/nova", or a spec such as "F(6,3)" or "F(4x4,3x3)"'
POINTS_HELP = 'points for a spec: "0,3/5,-3/5,1,-1,7/6,-7/6" (inf is added), or a family: integer, classic, nova'
SNAP_HELP = "round each point to the nearest rational with denominator <= N"


def out() -> Console:
    """Stdout console; when piped, wide enough that tables are never wrapped mid-number."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console


def err() -> Console:
    """Stderr console: progress bars and notes, so stdout stays the result."""
    return Console(stderr=True)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def resolve(spec: str, points: str | None = None, snap: int | None = None) -> AnyAlgorithm:
    """The algorithm a command's SPEC (and --points, --snap) names."""
    return algorithm(spec, points, snap=snap)
