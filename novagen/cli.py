"""The `novagen` command line: a thin layer over the Python API.

Tables by default, `--json` for machines.  Exit status: 0 success, 1 a check that ran and failed,
2 bad input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from novagen.algebra import Algorithm, AnyAlgorithm, Matrix, format_point, from_dict
from novagen.catalog import algorithm, catalog_entries
from novagen.errors import CatalogError, InputError, NovagenError, TransformFileError
from novagen.export import FORMATS, document, export, render, resolve_format
from novagen.metrics import metrics
from novagen.verify import Certificate, verify

app = typer.Typer(
    name="novagen",
    help="Well-conditioned Winograd convolution transforms: show, verify, export, catalog.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SPEC_HELP = 'a catalog name such as "F(6,3)/nova", or a spec such as "F(6,3)" or "F(4x4,3x3)"'
POINTS_HELP = 'points for a spec: "0,3/5,-3/5,1,-1,7/6,-7/6" (inf is added), or a family: integer, classic, nova'
SNAP_HELP = "round each point to the nearest rational with denominator <= N"


def _out() -> Console:
    """Stdout console; when piped, wide enough that tables are never wrapped mid-number."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 1e6:
        return f"{v:.3e}"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"


def _matrix_table(title: str, M: Matrix) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    for _ in M[0]:
        table.add_column(justify="right")
    for row in M:
        table.add_row(*(str(v) for v in row))
    return table


def _metrics_table(values: dict[str, Any]) -> Table:
    table = Table(title="metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in values.items():
        table.add_row(k, _fmt(v))
    return table


def _points_text(alg: Algorithm) -> str:
    return ", ".join(format_point(p) for p in alg.points) if alg.points else "(matrices only)"


def _resolve(spec: str, points: str | None, snap: int | None) -> AnyAlgorithm:
    return algorithm(spec, points, snap=snap)


@app.command()
def show(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP),
    snap: int | None = typer.Option(None, "--snap", metavar="N", help=SNAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Matrices and metrics of an algorithm."""
    alg = _resolve(spec, points, snap)
    if as_json:
        _print_json(document(alg))
        return
    out = _out()
    axes = alg.axes
    out.print(f"[bold]{alg.label}[/bold]  {alg.spec}  sha256 {alg.content_hash[:16]}")
    for i, a in enumerate(axes):
        if len(axes) > 1:
            out.print(f"\n[bold]axis {i}[/bold]: {a.spec}")
        out.print(f"points: {_points_text(a)}")
        for label, M in (("AT", a.AT), ("G", a.G), ("BT", a.BT)):
            out.print()
            out.print(_matrix_table(f"{label} ({len(M)}×{len(M[0])})", M))
    out.print()
    out.print(_metrics_table(metrics(alg)))
    if isinstance(alg, Algorithm):
        out.print()
        out.print(_program_table(alg))


def _program_table(alg: Algorithm) -> Table:
    """Operation counts of the transform programs (shared subexpressions) against dense products."""
    from novagen.program import program_report, transform_cost

    table = Table(title="transform programs (adds/muls/shifts = total)", title_justify="left")
    for col in ("matrix", "shared", "row by row", "dense product"):
        table.add_column(col, justify="left" if col == "matrix" else "right")

    def cell(c: dict[str, int]) -> str:
        return f"{c['adds']}/{c['muls']}/{c['shifts']} = {c['total']}"

    for name, rep in program_report(alg).items():
        table.add_row(name, cell(rep["shared"]), cell(rep["rowwise"]), cell(rep["naive"]))
    cost = transform_cost(alg)
    table.add_row("2D tile (BT in, AT out)", cell(cost), "", cell(cost["naive"]))
    return table


def _read_transform(path: Path) -> AnyAlgorithm:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TransformFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TransformFileError(f"{path} is not JSON (line {exc.lineno}: {exc.msg})") from None
    return from_dict(data)


def _certificate_table(cert: Certificate) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("algorithm", cert.algorithm.get("name") or cert.algorithm["spec"])
    table.add_row("sha256", cert.hash)
    table.add_row("result", "[green]exact[/green]" if cert.verified else "[red]NOT exact[/red]")
    table.add_row("proven", "; ".join(cert.proven) or "-")
    if cert.counterexample:
        table.add_row("counterexample", cert.counterexample)
    table.add_row("seconds", f"{cert.seconds:.3f}")
    return table


@app.command("verify")
def verify_cmd(
    spec: str | None = typer.Argument(None, help=SPEC_HELP),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP),
    file: Path | None = typer.Option(None, "--file", "-f", help="a JSON file with AT, G, BT (as show --json writes)"),
    symbolic_2d: bool | None = typer.Option(
        None, "--symbolic-2d/--no-symbolic-2d", help="also prove the 2D nesting (default: when alpha <= 8)"),
    as_json: bool = typer.Option(False, "--json", help="print the certificate as JSON"),
) -> None:
    """Prove symbolically that an algorithm computes the correlation; exit 1 if it does not."""
    if (spec is None) == (file is None):
        raise InputError("give either a spec or catalog name, or --file FILE (not both)")
    alg = _read_transform(file) if file is not None else _resolve(spec or "", points, None)
    console = Console(stderr=True)
    if console.is_terminal and not as_json:
        with console.status(f"proving {alg.label} ..."):
            cert = verify(alg, symbolic_2d=symbolic_2d, strict=False)
    else:
        cert = verify(alg, symbolic_2d=symbolic_2d, strict=False)
    if as_json:
        _print_json(cert.to_dict())
    else:
        _out().print(_certificate_table(cert))
    if not cert.verified:
        raise typer.Exit(1)


def _search_table(result: Any) -> Table:
    names = [n for n in result.candidates[0].values]
    table = Table(title=f"{result.spec}: {result.objective}, seed {result.seed}, {result.evaluations:,} evaluations, "
                        f"{result.seconds:.1f} s", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("points", overflow="fold")
    for n in names:
        table.add_column(n, justify="right", no_wrap=True)
    for col in ("κ(V)", "amplif. 2D", "max |entry|", "max denom.", "verified"):
        table.add_column(col, justify="right", no_wrap=True)
    for i, c in enumerate(result.candidates, 1):
        m = metrics(c.algorithm)
        den = max(p.denominator for p in c.algorithm.finite_points)
        table.add_row(str(i), ",".join(format_point(p) for p in c.algorithm.points),
                      *(_fmt(c.values[n]) for n in names), _fmt(m["vandermonde_cond"]), _fmt(m["amplification_2d"]),
                      _fmt(m["max_entry"]), str(den), "[green]yes[/green]" if c.verified else "[red]no[/red]")
    return table


def _pareto_table(result: Any) -> Table:
    a, b = result.objectives
    table = Table(title=f"{result.spec}: Pareto front of {a} against {b}, seed {result.seed}, "
                        f"{result.evaluations:,} evaluations, {result.seconds:.1f} s", title_justify="left")
    for col, just in (("", "left"), ("points", "left"), (a, "right"), (b, "right"), ("κ(V)", "right"),
                      ("verified", "right")):
        table.add_column(col, justify=just, overflow="fold" if col == "points" else "ellipsis")
    rows = [(f"front {i}", p) for i, p in enumerate(result.front, 1)] + [(p.reference, p) for p in result.references]
    for label, p in rows:
        table.add_row(label, ",".join(format_point(x) for x in p.algorithm.points), _fmt(p.values[0]),
                      _fmt(p.values[1]), _fmt(metrics(p.algorithm)["vandermonde_cond"]),
                      "[green]yes[/green]" if p.verified else "[red]no[/red]")
    return table


@app.command("search")
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
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Find well-conditioned points with CMA-ES, snap them to rationals and prove them exact."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from novagen import search as S

    if (spec is None) == (campaign is None):
        raise InputError("give a spec such as F(8,3), or --campaign FILE")
    camp = S.load_campaign(campaign) if campaign is not None else None
    if pareto is not None and camp is not None:
        raise InputError("--pareto runs a new search: give a spec, not --campaign")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    with progress:
        task = progress.add_task("continuous (CMA-ES)", total=(camp.settings.get("restarts", 4) if camp else restarts),
                                 info="")

        def on_progress(ev: dict[str, Any]) -> None:
            if ev["phase"] == "continuous":
                progress.update(task, completed=ev["restart"],
                                info=f"restart {ev['restart']}/{ev['restarts']}  {ev['evaluations']:,} evals  "
                                     f"best log-score {ev['best']:.4f}")
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
    if pareto is not None:
        if as_json:
            _print_json(front.to_dict())
        else:
            _out().print(_pareto_table(front))
            if front.dropped:
                _out().print(f"[yellow]{front.dropped} candidate(s) failed verification and were dropped[/yellow]")
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
            from novagen.catalog import write_entry

            doc["campaign"]["written"] = str(write_entry(result.best, camp.name,
                                                         S.campaign_provenance(camp, result)))
        elif doc["campaign"]["reproduces_catalog"] is False:
            status = 1
    if as_json:
        _print_json(doc)
    else:
        out = _out()
        out.print(_search_table(result))
        if result.dropped:
            out.print(f"[yellow]{result.dropped} candidate(s) failed verification and were dropped[/yellow]")
        if result.truncated:
            out.print("[yellow]stopped by --budget-seconds before the evaluation budget was spent[/yellow]")
        if camp is not None:
            c = doc["campaign"]
            verdict = {True: "[green]reproduces[/green]", False: "[red]does NOT reproduce[/red]",
                       None: "is not in the catalog yet:"}[c["reproduces_catalog"]]
            out.print(f"campaign {camp.path.name}: the best set {verdict} {camp.name}")
            if "written" in c:
                out.print(f"wrote {c['written']}")
    if status:
        raise typer.Exit(status)


@app.command("export")
def export_cmd(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    fmt: str | None = typer.Option(None, "--format", "-f", help=f"one of {', '.join(FORMATS)} (default: from -o)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="file to write (default: stdout)"),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP),
    snap: int | None = typer.Option(None, "--snap", metavar="N", help=SNAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="with -o: report what was written as JSON"),
) -> None:
    """Write an algorithm as JSON, a C header, NumPy .npz, LaTeX or Markdown."""
    name = resolve_format(fmt, output)
    alg = _resolve(spec, points, snap)
    if output is None:
        if name == "npz":
            raise InputError("npz is binary: give -o FILE.npz")
        data = render(alg, name)
        sys.stdout.write(data if isinstance(data, str) else data.decode())
        return
    path = export(alg, name, output)
    if as_json:
        _print_json({"path": str(path), "format": name, "algorithm": alg.label, "hash": alg.content_hash,
                     "bytes": path.stat().st_size})
    else:
        Console(stderr=True).print(f"wrote {path} ({name})")


@app.command("catalog")
def catalog_cmd(
    spec: str | None = typer.Argument(None, help='only entries of this spec, e.g. "F(6,3)"'),
    as_json: bool = typer.Option(False, "--json", help="print a JSON list"),
) -> None:
    """The verified algorithms that ship with novagen, with their metrics."""
    entries = catalog_entries(spec)
    rows = []
    for e in entries:
        rows.append({
            "name": e.name,
            "spec": str(e.algorithm.spec),
            "points": [format_point(p) for p in e.algorithm.points or ()],
            "hash": e.algorithm.content_hash,
            "proven": e.certificate.get("proven", []),
            "provenance": e.provenance,
            "metrics": metrics(e.algorithm),
        })
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"novagen catalog{' ' + spec if spec else ''}", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("points", overflow="fold")
    for col, just in ( ("κ(V)", "right"), ("κ(AT)", "right"),
                      ("κ(G)", "right"), ("κ(BT)", "right"), ("amplif. 2D", "right"), ("max |entry|", "right"),
                      ("proven", "left")):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        m = row["metrics"]
        proven = ", ".join(p.split()[0].replace("-symbolic", "") for p in row["proven"] if "symbolic" in p)
        table.add_row(row["name"], ",".join(row["points"]), _fmt(m["vandermonde_cond"]), _fmt(m["cond_AT"]),
                      _fmt(m["cond_G"]), _fmt(m["cond_BT"]), _fmt(m["amplification_2d"]), _fmt(m["max_entry"]),
                      proven)
    _out().print(table)

@app.command()
def generate(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    target: str = typer.Option("c", "--target", "-t",
                               help="code generation target: c, cuda, hls, verilog, tvm-llvm, tvm-cuda"),
    layer: str | None = typer.Option(None, "--layer", help="N,C,H,W,K the kernel is meant for, e.g. 1,64,56,56,64"),
    padding: int = typer.Option(1, "--padding", help="zero padding on each side"),
    output: Path = typer.Option(Path("build"), "--output", "-o", help="folder to write into"),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP),
    dtype: str | None = typer.Option(None, "--dtype", help="cuda: fp16 (default) or fp32 for x and y; "
                                     "TVM targets: float32 (default) or float16"),
    arch: str | None = typer.Option(None, "--arch", help="cuda: GPU architecture, e.g. sm_80 (default), sm_90"),
    bits: str | None = typer.Option(None, "--bits", help="hls: 'auto' or the input word width; verilog: input "
                                    "width (default 8)"),
    layout: str | None = typer.Option(None, "--layout", help="TVM targets: NCHW (default) or NHWC"),
    tuned: Path | None = typer.Option(None, "--tuned", help="tvm-llvm: the schedule from this tuning database"),
    as_json: bool = typer.Option(False, "--json", help="report the written files as JSON"),
) -> None:
    """Kernel source and build files for an algorithm: C (.c, .h), CUDA (.cu), HLS C++, Verilog, or for
    tvm-llvm and tvm-cuda TVMScript (.py), the built module (.so) and a README."""
    from novagen.codegen import GENERATE_TARGETS, TVM_TARGETS, _target
    from novagen.codegen import generate as gen

    _target(target, GENERATE_TARGETS)
    options = {k: v for k, v in (("layout", layout), ("tuned", tuned)) if v is not None}
    if options and target not in TVM_TARGETS:
        raise InputError(f"--{next(iter(options))} applies to the TVM targets (tvm-llvm, tvm-cuda), not {target}")
    alg = _resolve(spec, points, None)
    paths = gen(alg, output, target=target, layer=layer, padding=padding, dtype=dtype, bits=bits, arch=arch,
                **options)
    if as_json:
        _print_json({"algorithm": alg.label, "target": target, "files": [str(p) for p in paths]})
    else:
        Console(stderr=True).print("\n".join(f"wrote {p}" for p in paths))


@app.command("hls-sim")
def hls_sim(
    folder: Path = typer.Argument(..., help="a folder written by `novagen generate --target hls`"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """C-simulate a generated HLS design with g++: bit for bit against novagen's fixed-point model, and
    against the float64 reference within the model's predicted bound. Exit 1 when either fails."""
    from novagen.backends.hls import simulate

    rep = simulate(folder)
    if as_json:
        _print_json({**vars(rep), "passed": rep.passed})
    else:
        table = Table(title=f"HLS C simulation of {rep.label} ({folder})", title_justify="left")
        for col in ("outputs", "bit mismatches vs model", "max |err| vs float64", "rel L2", "predicted bound",
                    "within bound", "g++ s", "run s"):
            table.add_column(col, justify="right")
        table.add_row(str(rep.outputs), str(rep.mismatches), f"{rep.max_abs_error:.4g}", f"{rep.rel_l2_error:.3e}",
                      f"{rep.max_bound:.4g}", "yes" if rep.within_bound else "[red]NO[/red]",
                      f"{rep.compile_seconds:.1f}", f"{rep.run_seconds:.2f}")
        _out().print(table)
        _out().print("passed" if rep.passed else "[red]FAILED[/red]")
    if not rep.passed:
        raise typer.Exit(1)


@app.command("hardware")
def hardware_cmd(
    algorithms: list[str] = typer.Argument(..., help=f"{SPEC_HELP}; F(m,r)/best-dyadic is searched for when "
                                           "the catalog lacks it"),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP + " (for a bare spec)"),
    input_bits: int = typer.Option(8, "--input-bits", help="signed input word width"),
    coef_bits: int = typer.Option(16, "--coef-bits", help="transformed-weight word width"),
    channels: int = typer.Option(16, "--channels", help="input channels the accumulators are sized for"),
    family: str = typer.Option("ice40,xilinx", "--family", help="yosys targets: ice40, xilinx or both"),
    no_yosys: bool = typer.Option(False, "--no-yosys", help="skip synthesis (yosys is slow on wide words)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Fixed-point hardware cost of the runtime transforms: adders, shifts and constant multipliers after
    sharing (CSD shift-add), word widths, yosys LUT/carry/DSP estimates, and measured error."""
    from rich.progress import Progress

    from novagen.backends.verilog import tool
    from novagen.hardware import FAMILIES, report, resolve

    fams = tuple(f.strip() for f in family.split(",") if f.strip())
    bad = [f for f in fams if f not in FAMILIES]
    if bad or not fams:
        raise InputError(f"--family {family}: use ice40, xilinx or ice40,xilinx")
    if not 2 <= input_bits <= 32:
        raise InputError(f"--input-bits {input_bits} must be from 2 to 32")
    algs = [resolve(a, points) for a in algorithms]
    err = Console(stderr=True)
    use_yosys = not no_yosys and tool("yosys") is not None
    if not no_yosys and not use_yosys:
        err.print("yosys is not installed: LUT/carry/DSP columns are left out (apt-get install yosys)")
    rows = []
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("hardware", total=len(algs))
        for alg in algs:
            rows.append(report(alg, input_bits, channels, coef_bits, fams, use_yosys,
                               progress=lambda msg: bar.update(task, description=msg)))
            bar.update(task, advance=1)
    dyadic = [r for r in rows if r["dyadic"]]
    cheapest = min(dyadic, key=lambda r: r["tile_adders"]) if dyadic else None
    notes = []
    if cheapest:
        for r in rows:
            if not r["dyadic"]:
                ratio = r["tile_adders"] / cheapest["tile_adders"]
                notes.append(f"{r['algorithm']} (non-dyadic points) costs {ratio:.1f}x "
                             f"the adders per tile of {cheapest['algorithm']} ({r['tile_adders']} vs "
                             f"{cheapest['tile_adders']}), inputs to the output transform "
                             f"{r['widths']['m']} vs {cheapest['widths']['m']} bits")
    if as_json:
        _print_json({"input_bits": input_bits, "coef_bits": coef_bits, "channels": channels, "rows": rows,
                     "notes": notes})
        return
    out = _out()
    t = Table(title=f"transform cost in fixed point ({input_bits}-bit inputs, {coef_bits}-bit weights, "
              f"{channels} channels): adders = shared program + CSD constant multipliers", title_justify="left")
    for col in ("algorithm", "points", "κ(V)", "BT adders", "BT mults", "BT shifts", "BT bits", "AT adders",
                "AT mults", "AT bits in→max", "adders/output", "V bits", "acc bits", "y bits", "rel err", "err/bound"):
        t.add_column(col, justify="left" if col in ("algorithm", "points") else "right", no_wrap=col != "points")
    for r in rows:
        bt, at = r["transforms"]["bt"], r["transforms"]["at"]
        t.add_row(r["algorithm"] + (" (dyadic)" if r["dyadic"] else ""), ",".join(r["points"]),
                  _fmt(r["vandermonde_cond"]), f"{bt['adders']} ({bt['program_adds']}+{bt['csd_adds']})",
                  str(bt["const_mults"]), str(bt["shifts"]), f"{bt['in_width']}→{bt['max_width']}",
                  f"{at['adders']} ({at['program_adds']}+{at['csd_adds']})", str(at["const_mults"]),
                  f"{at['in_width']}→{at['max_width']}", f"{r['tile_adders_per_output']:.1f}",
                  str(r["widths"]["v"]), str(r["widths"]["acc"]), str(r["widths"]["y"]),
                  f"{r['error']['rel_l2']:.2e}", f"{r['error']['bound_ratio']:.2f}")
    out.print(t)
    if use_yosys:
        y = Table(title="yosys estimates (open toolchain): LUTs / carry cells / DSPs", title_justify="left")
        y.add_column("algorithm")
        for fam in fams:
            y.add_column(f"{fam} BT", justify="right")
            y.add_column(f"{fam} AT", justify="right")
        for r in rows:
            cells = []
            for fam in fams:
                for key in ("bt", "at"):
                    s = r["transforms"][key]["yosys"][fam]
                    cells.append(f"{s['luts']} / {s['carry']} / {s['dsps']}")
            y.add_row(r["algorithm"], *cells)
        out.print(y)
    for n in notes:
        out.print(n)


@app.command()
def bench(
    target: str = typer.Option("c", "--target", "-t", help="code generation target: c or tvm-llvm"),
    network: str | None = typer.Option(None, "--network", help="a network's 3x3 conv layers: vgg16 or resnet18"),
    batch: int = typer.Option(1, "--batch", help="batch size for --network"),
    layer: str | None = typer.Option(None, "--layer", help="one layer N,C,H,W,K (3x3, padding 1)"),
    algorithms: list[str] | None = typer.Option(
        None, "--algorithm", "-a", help="algorithm(s) to try; the fastest per layer is reported "
        "(default: F(2,3)/classic, F(4,3)/nova, F(6,3)/nova)"),
    repeats: int = typer.Option(5, "--repeats", help="timed runs of each kernel (median reported)"),
    threads: int | None = typer.Option(None, "--threads", help="threads for ours and the baseline (default: all)"),
    layout: str = typer.Option("NCHW", "--layout", help="NCHW, or NHWC (torch then runs channels_last)"),
    tuned: Path | None = typer.Option(None, "--tuned", help="tvm-llvm: use the schedules of this tuning database"),
    direct: bool = typer.Option(False, "--tvm-direct", help="tvm-llvm: also time TVM's own direct conv2d, "
                                "unscheduled and (with --tuned) tuned"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Time generated kernels against torch.nn.functional.conv2d (oneDNN), median of repeats."""
    from rich.progress import Progress

    from novagen.bench import DEFAULT_ALGORITHMS, Layer, bench_layers, network_layers
    from novagen.codegen import _target, parse_layer

    _target(target)
    if (network is None) == (layer is None):
        raise InputError("give either --network NAME or --layer N,C,H,W,K")
    if repeats < 1:
        raise InputError(f"--repeats {repeats} must be at least 1")
    if layout.upper() not in ("NCHW", "NHWC"):
        raise InputError(f"--layout {layout} is not supported: use NCHW or NHWC")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError("bench compares with torch.nn.functional.conv2d: pip install torch") from None
    layers = network_layers(network, batch) if network else [Layer(("layer",), parse_layer(layer))]  # type: ignore[arg-type]
    algs = [_resolve(a, None, None) for a in (algorithms or DEFAULT_ALGORITHMS)]
    err = Console(stderr=True)
    if target != "c":
        if target != "tvm-llvm":
            raise InputError(f"bench runs here: use --target c or tvm-llvm, not {target}")
        _bench_tvm(layers, algs, repeats, threads, layout.upper(), tuned, direct, as_json)
        return
    if tuned is not None or direct:
        raise InputError("--tuned and --tvm-direct apply to --target tvm-llvm")
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("benchmarking", total=len(layers))
        result = bench_layers(layers, algs, repeats=repeats, threads=threads, layout=layout,  # type: ignore[arg-type]
                              progress=lambda msg: bar.update(task, advance=1, description=msg))
    if as_json:
        _print_json(result)
        return
    m = result["machine"]
    out = _out()
    out.print(f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads, {m['compiler']}; "
              f"baseline {result['baseline']['name']} {result['baseline']['version']} "
              f"({result['baseline']['backend']}); load {m['load_1min']:.2f} → {m['load_1min_end']:.2f}")
    table = Table(title=f"novagen bench ({target}, {layout.upper()})", title_justify="left")
    for col in ("layers", "N,C,H,W,K", "algorithm", "ours ms", "torch ms", "ratio", "ours GF/s", "torch GF/s",
                "GEMM GF/s", "of sgemm", "of µkernel"):
        table.add_column(col, justify="left" if col in ("layers", "algorithm") else "right", no_wrap=True)
    for r in result["layers"]:
        ratio = f"{r['ratio']:.2f}x"
        table.add_row(",".join(r["layers"]), ",".join(map(str, r["shape"])), r["algorithm"], f"{r['ours_ms']:.2f}",
                      f"{r['baseline_ms']:.2f}", ratio if r["ratio"] >= 1 else f"[red]{ratio}[/red]",
                      f"{r['ours_gflops']:.0f}", f"{r['baseline_gflops']:.0f}", f"{r['gemm_stage_gflops']:.0f}",
                      f"{r['gemm_fraction_of_sgemm']:.0%}", f"{r['gemm_fraction_of_ukernel_peak']:.0%}")
    out.print(table)
    out.print(f"geomean ratio {result['geomean_ratio']:.2f}x over {sum(len(r['layers']) for r in result['layers'])} "
              f"layers; best sgemm (MKL, OpenBLAS) {m['sgemm_gflops']:.0f} GFLOP/s, "
              f"micro-kernel in cache {m['ukernel_peak_gflops']:.0f} GFLOP/s")


def _bench_tvm(layers: list[Any], algs: list[Any], repeats: int, threads: int | None, layout: str,
               tuned: Path | None, direct: bool, as_json: bool) -> None:
    from rich.progress import Progress

    from novagen import tvm as nt

    if tuned is not None and not tuned.is_dir():
        raise InputError(f"tuning database '{tuned}' is not a folder: run novagen tune first")
    err = Console(stderr=True)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("benchmarking (tvm-llvm)", total=len(layers))
        result = nt.bench_layers(layers, algs, repeats=repeats, threads=threads, layout=layout, tuned=tuned,
                                 direct=direct, progress=lambda msg: bar.update(task, advance=1, description=msg))
    if as_json:
        _print_json(result)
        return
    m = result["machine"]
    out = _out()
    out.print(f"{m['cpu']}, {m['threads']} threads, TVM {m['tvm']} ({m['target']}); baseline "
              f"{result['baseline']['name']} {result['baseline']['version']}; ratio = torch ms / ms")
    table = Table(title=f"novagen bench (tvm-llvm, {layout})", title_justify="left")
    def ms(key: str) -> Any:
        return lambda r: f"{r[key]:.2f}" if key in r else "n/a"

    def ratio(key: str) -> Any:
        def cell(r: dict[str, Any]) -> str:
            if key not in r:
                return "n/a"
            text = f"{r[key]:.2f}x"
            return text if r[key] >= 1 else f"[red]{text}[/red]"
        return cell

    def label(key: str) -> Any:
        return lambda r: r.get(key, "n/a")

    cols = [("layers", lambda r: ",".join(r["layers"])), ("N,C,H,W,K", lambda r: ",".join(map(str, r["shape"]))),
            ("torch ms", ms("baseline_ms")), ("untuned", label("algorithm")), ("ms", ms("ours_ms")),
            ("ratio", ratio("ratio"))]
    if tuned:
        cols += [("tuned", label("tuned_algorithm")), ("ms", ms("tuned_ms")), ("ratio", ratio("tuned_ratio"))]
    if direct:
        cols += [("TVM direct ms", ms("tvm_default_ms")), ("ratio", ratio("tvm_default_ratio"))]
        if tuned:
            cols += [("TVM direct tuned ms", ms("tvm_tuned_ms")), ("ratio", ratio("tvm_tuned_ratio")),
                     ("tuned/TVM tuned", ratio("tuned_vs_tvm_tuned"))]
    for col, _ in cols:
        table.add_column(col, justify="left" if col in ("layers", "untuned", "tuned") else "right", no_wrap=True)
    for r in result["layers"]:
        table.add_row(*(cell(r) for _, cell in cols))
    out.print(table)
    count = sum(len(r["layers"]) for r in result["layers"])
    parts = [f"untuned {result['geomean_ratio']:.2f}x"]
    for key, name in (("geomean_tuned_ratio", "tuned"), ("geomean_tvm_default_ratio", "TVM direct"),
                      ("geomean_tvm_tuned_ratio", "TVM direct tuned"),
                      ("geomean_tuned_vs_tvm_tuned", "tuned over TVM direct tuned")):
        if key in result:
            parts.append(f"{name} {result[key]:.2f}x")
    out.print(f"geomean over {count} layers (vs torch unless named): " + ", ".join(parts))


@app.command("tune")
def tune_cmd(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    target: str = typer.Option("llvm", "--target", "-t", help="TVM target: llvm (this CPU)"),
    layer: str = typer.Option(..., "--layer", help="N,C,H,W,K, e.g. 1,128,28,28,128"),
    trials: int = typer.Option(64, "--trials", help="measured trials in all (those already in --db count)"),
    db: Path = typer.Option(Path("tune_db"), "--db", help="JSON tuning database folder (created, resumed)"),
    padding: int = typer.Option(1, "--padding", help="zero padding on each side"),
    layout: str = typer.Option("NCHW", "--layout", help="NCHW or NHWC"),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP),
    measure: str = typer.Option("in-process", "--measure",
                                help="in-process (fast: build and time here) or workers (MetaSchedule's "
                                     "isolated builder and runner processes)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Tune the TVM Winograd conv2d of a layer with MetaSchedule into a JSON database (resumable).
    SPEC "direct" tunes TVM's own direct conv2d instead: the baseline for bench --tvm-direct."""
    from novagen import tvm as nt

    if target not in ("llvm", "cpu"):
        raise InputError(f"tune measures on this machine: use --target llvm, not {target}")
    if measure not in ("in-process", "workers"):
        raise InputError(f"--measure {measure} is not known: use in-process or workers")
    alg = "direct" if nt._is_direct(spec) else _resolve(spec, points, None)
    how = "in-process" if measure == "in-process" else None
    result = nt.tune(alg, layer, db, trials=trials, padding=padding, layout=layout, target=target,
                     builder=how, runner=how)
    if as_json:
        _print_json(result.__dict__)
        return
    best = "n/a" if result.best_ms is None else f"{result.best_ms:.3f} ms"
    _out().print(f"{result.workload}: {result.trials_after} trials in {result.db} "
                 f"({result.trials_after - result.trials_before} new); best {best}")


@app.command("accuracy")
def accuracy_cmd(
    algorithms: list[str] | None = typer.Argument(None, help=f"{SPEC_HELP}, or 'direct'"),
    algorithm_opt: list[str] | None = typer.Option(None, "--algorithm", "-a", help="an algorithm (repeatable)"),
    precision: list[str] = typer.Option(["fp16"], "--precision", "-P",
                                        help="fp32, fp16, fp16-pure, bf16, fp8-e4m3, int8, int8-tap, ... "
                                             "(repeatable or comma-separated)"),
    layer: str | None = typer.Option(None, "--layer", help="layer shape N,C,H,W,K (default 1,64,56,56,64)"),
    network: list[str] | None = typer.Option(None, "--network", "-n",
                                             help="vgg16, resnet18 or digits (repeatable or comma-separated)"),
    seed: int = typer.Option(0, "--seed", help="seed of data, weights and inputs"),
    inputs: int = typer.Option(128, "--inputs", help="inputs per network study"),
    width: float = typer.Option(0.5, "--width", help="channel width factor of vgg16/resnet18"),
    balanced: bool = typer.Option(False, "--balanced", help="rescale G and BT rows by powers of two first"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="add the direct convolution rows"),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="skip catalog names that do not exist"),
    plot: Path | None = typer.Option(None, "--plot", help="write a matplotlib figure (png, pdf, svg)"),
    as_json: bool = typer.Option(False, "--json", help="print {\"rows\": [...]} as JSON"),
) -> None:
    """Measured error of algorithms under low-precision policies, per layer and per network."""
    from novagen import accuracy as acc

    names = [*(algorithms or []), *(algorithm_opt or [])]
    if not names:
        raise InputError("give at least one algorithm, e.g. novagen accuracy \"F(6,3)/nova\" --precision fp16")
    precisions = [acc.policy(p).name for item in precision for p in item.split(",") if p.strip()]
    networks = [n.strip().lower() for item in network or [] for n in item.split(",") if n.strip()]
    known = ("vgg16", "resnet18", "digits")
    for n in networks:
        if n not in known:
            raise InputError(f"network '{n}' is not known: use one of {', '.join(known)}")
    shape = acc.parse_shape(layer) if layer else (1, 64, 56, 56, 64)
    if inputs < 1:
        raise InputError(f"--inputs {inputs} must be at least 1")
    if width <= 0:
        raise InputError(f"--width {width} must be positive")
    algs: list[str] = []
    for name in names:
        try:
            acc.resolve_algorithm(name)
        except CatalogError as exc:
            if not skip_missing:
                raise
            Console(stderr=True).print(f"skipped: {exc}")
            continue
        if name not in algs:
            algs.append(name)
    if baseline and acc.DIRECT not in [a.lower() for a in algs]:
        algs.insert(0, acc.DIRECT)
    rows = _accuracy_rows(algs, precisions, shape if (layer or not networks) else None, networks, seed, inputs,
                          width, balanced)
    if plot is not None:
        _accuracy_plot(rows, plot)
    if as_json:
        _print_json({"rows": rows, "seed": seed, "balanced": balanced})
        return
    _out().print(_accuracy_table(rows))


def _accuracy_rows(algs: list[str], precisions: list[str], shape: tuple[int, ...] | None, networks: list[str],
                   seed: int, inputs: int, width: float, balanced: bool) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from novagen import accuracy as acc

    jobs = [("layer", a, p) for a in algs for p in precisions] if shape else []
    jobs += [(n, a, p) for n in networks for a in algs for p in precisions]
    rows: list[dict[str, Any]] = []
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("accuracy", total=len(jobs))
        models: dict[str, Any] = {}
        for target, alg, prec in jobs:
            bar.update(task, description=f"{target} {alg} {prec}")
            if target == "layer":
                assert shape is not None
                report = acc.layer_error(alg, prec, shape, seed, balanced=balanced)
            else:
                report = _network_row(models, target, alg, prec, seed, inputs, width, balanced)
            rows.append(report.row())
            bar.advance(task)
    return rows


def _network_row(models: dict[str, Any], target: str, alg: str, prec: str, seed: int, inputs: int, width: float,
                 balanced: bool) -> Any:
    from novagen import networks as nets

    if target == "digits":
        if target not in models:
            data = nets.digits_data(seed=seed)
            models[target] = (nets.digits_cnn(data, seed=seed), data)
        model, data = models[target]
        return nets.digits_accuracy(model, data, alg, prec, balanced=balanced)
    if target not in models:
        models[target] = nets.seeded_network(target, seed, width)
    report = nets.network_error(models[target], alg, prec, inputs=inputs, width=width, seed=seed, balanced=balanced)
    return type(report)(**{**report.__dict__, "target": f"{target} ({inputs} inputs, width {width:g})"})


def _sci(v: Any) -> str:
    if v is None:
        return "[red]inf[/red]"
    return f"{v:.2e}" if isinstance(v, float) else str(v)


def _accuracy_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="novagen accuracy (error against fp64 direct; networks against the fp32 model)",
                  title_justify="left")
    has_net = any("top1_agreement" in r for r in rows)
    has_acc = any("accuracy" in r for r in rows)
    for col in ("target", "algorithm", "precision"):
        table.add_column(col, no_wrap=True)
    for col in ("rel_l2", "max_abs", "snr_db", "overflow"):
        table.add_column(col, justify="right", no_wrap=True)
    if has_net:
        table.add_column("top-1 agree", justify="right")
    if has_acc:
        table.add_column("accuracy", justify="right")
    for r in rows:
        snr = "[red]-inf[/red]" if r["snr_db"] is None else f"{r['snr_db']:.1f}"
        cells = [r["target"], r["algorithm"], r["precision"], _sci(r["rel_l2"]), _sci(r["max_abs"]), snr,
                 f"[red]{r['overflow_count']}[/red]" if r["overflow_count"] else "0"]
        if has_net:
            cells.append(f"{r['top1_agreement']:.1%}" if "top1_agreement" in r else "")
        if has_acc:
            cells.append(f"{r['accuracy']:.1%}" if "accuracy" in r else "")
        table.add_row(*cells)
    return table


def _accuracy_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Layer error against tile size per point family; network agreement/accuracy per algorithm."""
    import os
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from novagen.algebra import parse_spec

    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("png", "pdf", "svg"):
        raise InputError(f"--plot {path}: use a .png, .pdf or .svg file")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status (novagen's errors become one line on stderr)."""
    try:
        app(args=argv, prog_name="novagen")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except NovagenError as exc:
        sys.stderr.write(f"novagen: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("novagen: interrupted\n")
        return 130
    return 0


def main() -> None:
    sys.exit(run())
