"""Figures of command results (matplotlib, from the torch extra), written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from novagen.algebra import parse_spec
from novagen.errors import InputError
from novagen.files import atomic_write, check_target


def check_plot_path(path: Path, overwrite: bool = False) -> str:
    """The figure format of `path` (png, pdf or svg), after checking it may be written."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("png", "pdf", "svg"):
        raise InputError(f"--plot {path}: use a .png, .pdf or .svg file")
    check_target(path, overwrite)
    return suffix


def accuracy_plot(rows: list[dict[str, Any]], path: Path, overwrite: bool = False) -> None:
    """Layer error against tile size per point family; network agreement/accuracy per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suffix = check_plot_path(path, overwrite)
    layer = [r for r in rows if r["target"].startswith("layer")]
    nets = [r for r in rows if not r["target"].startswith("layer")]
    panels = [p for p in (layer, nets) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    ax_i = 0
    if layer:
        ax = axes[0][ax_i]
        ax_i += 1
        series: dict[str, list[tuple[int, float | None]]] = {}
        for r in layer:
            if "/" not in r["algorithm"]:
                continue
            spec, family = r["algorithm"].split("/", 1)
            series.setdefault(f"{family} {r['precision']}", []).append((parse_spec(spec).m[0], r["rel_l2"]))
        top = max([v for pts in series.values() for _, v in pts if v is not None] or [1.0]) * 10
        for label, pts in sorted(series.items()):
            pts.sort()
            ms = [m for m, _ in pts]
            ax.plot(ms, [top if v is None else v for _, v in pts], marker="o", label=label)
            for m, v in pts:
                if v is None:
                    ax.plot([m], [top], marker="x", color="red", markersize=10)
        for r in layer:
            if r["algorithm"] == "direct" and r["rel_l2"] is not None:
                ax.axhline(r["rel_l2"], linestyle=":", color="grey")
        ax.set_yscale("log")
        ax.set_xlabel("output tile m of F(m,3)")
        ax.set_ylabel("relative L2 error (red x: overflow)")
        ax.set_title(layer[0]["target"])
        ax.legend(fontsize=7)
    if nets:
        ax = axes[0][ax_i]
        key = "accuracy" if all("accuracy" in r for r in nets) else "top1_agreement"
        labels = [f"{r['algorithm']}\n{r['precision']}" for r in nets]
        ax.bar(range(len(nets)), [r.get(key, 0.0) for r in nets],
               color=["red" if r["overflow_count"] else "tab:blue" for r in nets])
        ax.set_xticks(range(len(nets)), labels, rotation=90, fontsize=6)
        ax.set_ylabel(key.replace("_", " "))
        ax.set_ylim(0, 1)
        ax.set_title(", ".join(sorted({r["target"] for r in nets})))
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=suffix)
    finally:
        plt.close(fig)
    atomic_write(path, buf.getvalue(), overwrite)
