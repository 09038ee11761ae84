"""Campaigns: one TOML file per catalog entry saying how it was found; re-running one reproduces the entry.

Two kinds.  A search campaign (the default) gives the point search's spec, objective, constraints and seed.
A fine-tuning campaign (`kind = "finetune"`) gives a network trained here, the algorithm it starts from,
the precision and the training recipe: the entry is the algorithm Winograd-aware fine-tuning learns
(`novagen.lowprecision.learn`; needs the torch extra), reproducible on the same machine, torch version and
thread count (training in float32 is not bit-reproducible across CPUs or thread counts)."""

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
from novagen.resources import data_dir
from novagen.version import __version__

SEARCH_KEYS = {"objective", "max_denominator", "symmetric", "dyadic", "infinity", "max_abs", "seed", "restarts",
               "max_evaluations", "balanced"}
FINETUNE_KEYS = {"network", "start", "precision", "epochs", "calibration", "method", "seed", "max_denominator",
                 "lr", "lr_points", "schedule", "threads"}
SCHEDULES = ("constant", "cosine")
"""The learning-rate schedules of `novagen.torch.finetune`."""
KINDS = {"search": (SEARCH_KEYS, set()), "finetune": (FINETUNE_KEYS, {"network", "start", "precision"})}
"""Per kind: the settings a campaign may give, and those it must."""


@dataclass(frozen=True)
class Campaign:
    name: str
    spec: str
    settings: dict[str, Any]
    description: str
    path: Path
    kind: str = "search"


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
    kind = data.get("kind", "search")
    if kind not in KINDS:
        raise InputError(f"campaign {p.name}: kind '{kind}' is not one of {', '.join(KINDS)}")
    allowed, required = KINDS[kind]
    unknown = set(data) - {"name", "spec", "kind", "description"} - allowed
    if unknown:
        raise InputError(f"campaign {p.name}: unknown keys {', '.join(sorted(unknown))} for a {kind} campaign "
                         f"(allowed: {', '.join(sorted(allowed | {'name', 'spec', 'kind', 'description'}))})")
    for key in ("name", "spec", *sorted(required)):
        if key not in data:
            raise InputError(f"campaign {p.name} lacks '{key}'")
    spec, _ = split_name(data["name"])
    if spec != parse_spec(data["spec"]):
        raise InputError(f"campaign {p.name}: name {data['name']} does not match spec {data['spec']}")
    if kind == "finetune":
        for key, low in (("epochs", 0), ("calibration", 1), ("seed", 0), ("max_denominator", 1), ("threads", 1)):
            if key in data and (type(data[key]) is not int or data[key] < low):
                raise InputError(f"campaign {p.name}: {key} = {data[key]!r} must be a whole number >= {low}")
        for key in ("lr", "lr_points"):
            if key in data and (type(data[key]) not in (int, float) or not 0 < data[key] < 1):
                raise InputError(f"campaign {p.name}: {key} = {data[key]!r} must be a number between 0 and 1")
        for key in ("network", "start", "precision", "method", "schedule"):
            if key in data and not isinstance(data[key], str):
                raise InputError(f"campaign {p.name}: {key} = {data[key]!r} must be a string")
        if data.get("schedule", "constant") not in SCHEDULES:
            raise InputError(f"campaign {p.name}: schedule = {data['schedule']!r} is not one of {', '.join(SCHEDULES)}")
        if split_name(data["start"])[0] != spec:
            raise InputError(f"campaign {p.name}: start {data['start']} is not an {data['spec']} algorithm")
    settings = {k: v for k, v in data.items() if k not in ("name", "spec", "kind", "description")}
    return Campaign(data["name"], data["spec"], settings, data.get("description", ""), p, kind)


def shipped_campaigns() -> list[Campaign]:
    """The campaigns that ship with novagen (search/*.toml), by file name."""
    return [load_campaign(p) for p in sorted(data_dir("search").glob("*.toml"))]


def run_campaign(campaign: Campaign, on_progress: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """Re-run a campaign: a SearchResult, or for a fine-tuning campaign a `lowprecision.Learned`."""
    if campaign.kind == "finetune":
        from novagen.lowprecision import learn

        def say(message: str) -> None:
            if on_progress:
                on_progress({"phase": "finetune", "message": message})

        return learn(campaign.name, progress=say, **campaign.settings)
    return search(campaign.spec, on_progress=on_progress, **campaign.settings)


def campaign_provenance(campaign: Campaign, result: Any) -> dict[str, Any]:
    """How a catalog entry was found: enough to re-run it."""
    if campaign.kind == "finetune":
        import torch

        from novagen.timing import machine_info

        m = machine_info()
        return {"source": "finetune", "campaign": f"search/{campaign.path.name}",
                "description": campaign.description, "settings": campaign.settings,
                "balancing": {"log2_g": result.balancing[0], "log2_b": result.balancing[1]},
                "top1": result.top1, "losses": result.losses, "seconds": round(result.seconds, 1),
                "machine": {"cpu": m["cpu"], "vector": m["vector"], "torch": torch.__version__,
                            "threads": torch.get_num_threads()},  # float32 sums, so the training, differ with it
                "novagen": __version__}
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

