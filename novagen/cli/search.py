"""The search command: CMA-ES over the points, snapping, proof; Pareto fronts; campaigns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from novagen.catalog import algorithm, source_catalog, write_entry
from novagen.cli import tables
from novagen.cli.common import err, out, print_json
from novagen.errors import InputError, NovagenError


def search_cmd(
    spec: str | None = typer.Argument(None, help='a 1D spec such as "F(8,3)"'),
    objective: str = typer.Option("vandermonde", "--objective",
                                  help="vandermonde, transforms, fp16, bf16, int8, int8-tap, fp8-e4m3, cost, "
                                       "or a weighted sum such as 'fp16 + 0.5*cost'"),
    max_denominator: int = typer.Option(12, "--max-denominator", "-d", help="largest denominator of a point"),
    symmetric: bool = typer.Option(True, "--symmetric/--no-symmetric", help="search sets {0, ±a, ±b, ...}"),
    dyadic: bool = typer.Option(False, "--dyadic", help="denominators powers of two only (shift-add transforms)"),
    infinity: bool = typer.Option(True, "--infinity/--no-infinity", help="include the point at infinity"),
    max_abs: float = typer.Option(3.0, "--max-abs", help="largest |point|"),
    seed: int = typer.Option(0, "--seed"),
    restarts: int = typer.Option(4, "--restarts", help="CMA-ES restarts, population doubling each time (IPOP)"),
    max_evaluations: int = typer.Option(20000, "--max-evaluations", help="evaluations of the continuous phase"),
    budget_seconds: float | None = typer.Option(None, "--budget-seconds", help="wall-clock cap"),
    workers: int = typer.Option(1, "--workers", help="processes running restarts in parallel"),
    top: int = typer.Option(10, "--top", help="verified candidates to show"),
    balanced: bool = typer.Option(False, "--balanced", help="return matrices with G/BT rows scaled by powers of 2"),
    pareto: str | None = typer.Option(None, "--pareto", metavar="OBJECTIVE",
                                      help="front of --objective against this, e.g. --objective fp16 --pareto cost"),
    campaign: Path | None = typer.Option(None, "--campaign", help="re-run a campaign file (search/*.toml)"),
    write: bool = typer.Option(False, "--write", help="with --campaign: write the catalog entry into verify/"),
    list_campaigns: bool = typer.Option(False, "--list", help="list the shipped campaigns and exit"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Find well-conditioned points with CMA-ES, snap them to rationals and prove them exact."""
    from novagen import pointsearch as S

    if list_campaigns:
        rows = [{"file": c.path.name, "name": c.name, "kind": c.kind,
                 "objective": (c.settings.get("objective", "vandermonde") if c.kind == "search" else
                               f"{c.settings['network']} network in {c.settings['precision']}"),
                 "description": c.description} for c in S.shipped_campaigns()]
        if as_json:
            print_json(rows)
        else:
            out().print(tables.campaigns_table(rows))
        return
    if (spec is None) == (campaign is None):
        raise InputError("give a spec such as F(8,3), or --campaign FILE")
    camp = S.load_campaign(campaign) if campaign is not None else None
    if write:
        if camp is None:
            raise InputError("--write records a campaign's result in the catalog: give --campaign FILE")
        source_catalog()
    if pareto is not None and camp is not None:
        raise InputError("--pareto runs a new search: give a spec, not --campaign")
    console = err()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)
    finetuning = camp is not None and camp.kind == "finetune"
    task = progress.add_task("fine-tuning" if finetuning else "continuous (CMA-ES)",
                             total=None if finetuning else (camp.settings.get("restarts", 4) if camp else restarts),
                             info="")

    try:
        def on_progress(ev: dict[str, Any]) -> None:
            progress.start()  # only once the settings passed their checks: an error stays one line
            if ev["phase"] == "continuous":
                progress.update(task, completed=ev["restart"],
                                info=f"restart {ev['restart']}/{ev['restarts']}  {ev['evaluations']:,} evals  "
                                     f"best log-score {ev['best']:.4f}")
            elif ev["phase"] == "finetune":
                progress.update(task, description=ev["message"])
            elif ev["phase"] == "pareto":
                progress.update(task, description="pareto (lattice)", completed=ev["step"], total=ev["steps"],
                                info=f"weight {ev['weight']:g}  {ev['evaluations']:,} evals")
            else:
                progress.update(task, description=f"{ev['phase']}", info=f"{ev['evaluations']:,} evals")

        if pareto is not None:
            front = S.pareto(spec or "", objective, pareto, max_denominator=max_denominator, symmetric=symmetric,
                             dyadic=dyadic, infinity=infinity, max_abs=max_abs, seed=seed, restarts=restarts,
                             max_evaluations=min(max_evaluations, 4000), budget_seconds=budget_seconds,
                             workers=workers, on_progress=on_progress)
        elif camp is not None:
            result = S.run_campaign(camp, on_progress)
        else:
            result = S.search(spec or "", objective, max_denominator=max_denominator, symmetric=symmetric,
                              dyadic=dyadic, infinity=infinity, max_abs=max_abs, seed=seed, restarts=restarts,
                              max_evaluations=max_evaluations, budget_seconds=budget_seconds, workers=workers,
                              top=top, balanced=balanced, on_progress=on_progress)
    finally:
        progress.stop()
    if pareto is not None:
        if as_json:
            print_json(front.to_dict())
        else:
            out().print(tables.pareto_table(front))
            if front.dropped:
                out().print(f"[yellow]{front.dropped} candidate(s) failed verification and were dropped[/yellow]")
        return
    doc = result.to_dict()
    status = 0
    if camp is not None:
        doc["campaign"] = {"name": camp.name, "file": str(camp.path)}
        try:
            shipped = algorithm(camp.name)
            doc["campaign"]["reproduces_catalog"] = shipped.content_hash == result.best.content_hash
        except NovagenError:
            doc["campaign"]["reproduces_catalog"] = None
        if write:
            doc["campaign"]["written"] = str(write_entry(result.best, camp.name,
                                                         S.campaign_provenance(camp, result)))
        elif doc["campaign"]["reproduces_catalog"] is False:
            status = 1
    if as_json:
        print_json(doc)
    else:
        console = out()
        if finetuning:
            console.print(tables.learned_table(result))
        else:
            console.print(tables.search_table(result))
            if result.dropped:
                console.print(f"[yellow]{result.dropped} candidate(s) failed verification and were dropped[/yellow]")
            if result.truncated:
                console.print("[yellow]stopped by --budget-seconds before the evaluation budget was spent[/yellow]")
        if camp is not None:
            c = doc["campaign"]
            verdict = {True: "[green]reproduces[/green]", False: "[red]does NOT reproduce[/red]",
                       None: "is not in the catalog yet:"}[c["reproduces_catalog"]]
            found = "the learned algorithm" if finetuning else "the best set"
            console.print(f"campaign {camp.path.name}: {found} {verdict} {camp.name}")
            if "written" in c:
                console.print(f"wrote {c['written']}")
    if status:
        raise typer.Exit(status)
