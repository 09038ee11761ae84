"""Rendering results as rich tables: one function per kind of result, no computation."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from novagen.algebra import Algorithm, Matrix
from novagen.metrics import metrics
from novagen.points import format_point
from novagen.program import program_report, transform_cost
from novagen.verify import Certificate


def fmt(v: Any) -> str:
    """A metric value for a table: ints as they are, large floats in scientific notation."""
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 1e6:
        return f"{v:.3e}"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"


def matrix_table(title: str, M: Matrix) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    for _ in M[0]:
        table.add_column(justify="right")
    for row in M:
        table.add_row(*(str(v) for v in row))
    return table


def metrics_table(values: dict[str, Any]) -> Table:
    table = Table(title="metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in values.items():
        table.add_row(k, fmt(v))
    return table


def points_text(alg: Algorithm) -> str:
    return ", ".join(format_point(p) for p in alg.points) if alg.points else "(matrices only)"


def program_table(alg: Algorithm) -> Table:
    """Operation counts of the transform programs (shared subexpressions) against dense products."""
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


def certificate_table(cert: Certificate) -> Table:
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


def search_table(result: Any) -> Table:
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
                      *(fmt(c.values[n]) for n in names), fmt(m["vandermonde_cond"]), fmt(m["amplification_2d"]),
                      fmt(m["max_entry"]), str(den), "[green]yes[/green]" if c.verified else "[red]no[/red]")
    return table


def pareto_table(result: Any) -> Table:
    a, b = result.objectives
    table = Table(title=f"{result.spec}: Pareto front of {a} against {b}, seed {result.seed}, "
                        f"{result.evaluations:,} evaluations, {result.seconds:.1f} s", title_justify="left")
    for col, just in (("", "left"), ("points", "left"), (a, "right"), (b, "right"), ("κ(V)", "right"),
                      ("verified", "right")):
        table.add_column(col, justify=just, overflow="fold" if col == "points" else "ellipsis")
    rows = [(f"front {i}", p) for i, p in enumerate(result.front, 1)] + [(p.reference, p) for p in result.references]
    for label, p in rows:
        table.add_row(label, ",".join(format_point(x) for x in p.algorithm.points), fmt(p.values[0]),
                      fmt(p.values[1]), fmt(metrics(p.algorithm)["vandermonde_cond"]),
                      "[green]yes[/green]" if p.verified else "[red]no[/red]")
    return table


def sci(v: Any) -> str:
    """An error value: scientific notation, red inf for None (an overflow)."""
    if v is None:
        return "[red]inf[/red]"
    return f"{v:.2e}" if isinstance(v, float) else str(v)


def accuracy_table(rows: list[dict[str, Any]]) -> Table:
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
        cells = [r["target"], r["algorithm"], r["precision"], sci(r["rel_l2"]), sci(r["max_abs"]), snr,
                 f"[red]{r['overflow_count']}[/red]" if r["overflow_count"] else "0"]
        if has_net:
            cells.append(f"{r['top1_agreement']:.1%}" if "top1_agreement" in r else "")
        if has_acc:
            cells.append(f"{r['accuracy']:.1%}" if "accuracy" in r else "")
        table.add_row(*cells)
    return table


def catalog_table(rows: list[dict[str, Any]], spec: str | None) -> Table:
    """The catalog listing: points, κ of V and of each matrix, amplification, what was proven."""
    table = Table(title=f"novagen catalog{' ' + spec if spec else ''}", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("points", overflow="fold")
    for col in ("κ(V)", "κ(AT)", "κ(G)", "κ(BT)", "amplif. 2D", "max |entry|", "proven"):
        table.add_column(col, justify="left" if col == "proven" else "right", no_wrap=True)
    for row in rows:
        m = row["metrics"]
        proven = ", ".join(p.split()[0].replace("-symbolic", "") for p in row["proven"] if "symbolic" in p)
        table.add_row(row["name"], ",".join(row["points"]), fmt(m["vandermonde_cond"]), fmt(m["cond_AT"]),
                      fmt(m["cond_G"]), fmt(m["cond_BT"]), fmt(m["amplification_2d"]), fmt(m["max_entry"]), proven)
    return table


def hls_sim_table(rep: Any, folder: Any) -> Table:
    """An HLS C simulation: bit mismatches against the model, error against float64 and its bound."""
    table = Table(title=f"HLS C simulation of {rep.label} ({folder})", title_justify="left")
    for col in ("outputs", "bit mismatches vs model", "max |err| vs float64", "rel L2", "predicted bound",
                "within bound", "g++ s", "run s"):
        table.add_column(col, justify="right")
    table.add_row(str(rep.outputs), str(rep.mismatches), f"{rep.max_abs_error:.4g}", f"{rep.rel_l2_error:.3e}",
                  f"{rep.max_bound:.4g}", "yes" if rep.within_bound else "[red]NO[/red]",
                  f"{rep.compile_seconds:.1f}", f"{rep.run_seconds:.2f}")
    return table


def hardware_table(rows: list[dict[str, Any]], input_bits: int, coef_bits: int, channels: int) -> Table:
    """Fixed-point transform cost per algorithm: adders, multipliers, widths, measured error."""
    t = Table(title=f"transform cost in fixed point ({input_bits}-bit inputs, {coef_bits}-bit weights, "
              f"{channels} channels): adders = shared program + CSD constant multipliers", title_justify="left")
    for col in ("algorithm", "points", "κ(V)", "BT adders", "BT mults", "BT shifts", "BT bits", "AT adders",
                "AT mults", "AT bits in→max", "adders/output", "V bits", "acc bits", "y bits", "rel err", "err/bound"):
        t.add_column(col, justify="left" if col in ("algorithm", "points") else "right", no_wrap=col != "points")
    for r in rows:
        bt, at = r["transforms"]["bt"], r["transforms"]["at"]
        t.add_row(r["algorithm"] + (" (dyadic)" if r["dyadic"] else ""), ",".join(r["points"]),
                  fmt(r["vandermonde_cond"]), f"{bt['adders']} ({bt['program_adds']}+{bt['csd_adds']})",
                  str(bt["const_mults"]), str(bt["shifts"]), f"{bt['in_width']}→{bt['max_width']}",
                  f"{at['adders']} ({at['program_adds']}+{at['csd_adds']})", str(at["const_mults"]),
                  f"{at['in_width']}→{at['max_width']}", f"{r['tile_adders_per_output']:.1f}",
                  str(r["widths"]["v"]), str(r["widths"]["acc"]), str(r["widths"]["y"]),
                  f"{r['error']['rel_l2']:.2e}", f"{r['error']['bound_ratio']:.2f}")
    return t


def yosys_table(rows: list[dict[str, Any]], families: tuple[str, ...]) -> Table:
    """yosys LUT / carry / DSP counts of each transform per FPGA family."""
    y = Table(title="yosys estimates (open toolchain): LUTs / carry cells / DSPs", title_justify="left")
    y.add_column("algorithm")
    for fam in families:
        y.add_column(f"{fam} BT", justify="right")
        y.add_column(f"{fam} AT", justify="right")
    for r in rows:
        cells = []
        for fam in families:
            for key in ("bt", "at"):
                s = r["transforms"][key]["yosys"][fam]
                cells.append(f"{s['luts']} / {s['carry']} / {s['dsps']}")
        y.add_row(r["algorithm"], *cells)
    return y


def ratio_cell(value: float | None) -> str:
    """A speed ratio, red below 1."""
    if value is None:
        return "n/a"
    text = f"{value:.2f}x"
    return text if value >= 1 else f"[red]{text}[/red]"


def c_bench_table(result: dict[str, Any], layout: str) -> Table:
    """The C benchmark per layer: ours against torch, GFLOP/s, the GEMM stage against sgemm."""
    table = Table(title=f"novagen bench (c, {layout})", title_justify="left")
    for col in ("layers", "N,C,H,W,K", "algorithm", "ours ms", "torch ms", "ratio", "ours GF/s", "torch GF/s",
                "GEMM GF/s", "of sgemm", "of µkernel"):
        table.add_column(col, justify="left" if col in ("layers", "algorithm") else "right", no_wrap=True)
    for r in result["layers"]:
        table.add_row(",".join(r["layers"]), ",".join(map(str, r["shape"])), r["algorithm"], f"{r['ours_ms']:.2f}",
                      f"{r['baseline_ms']:.2f}", ratio_cell(r["ratio"]), f"{r['ours_gflops']:.0f}",
                      f"{r['baseline_gflops']:.0f}", f"{r['gemm_stage_gflops']:.0f}",
                      f"{r['gemm_fraction_of_sgemm']:.0%}", f"{r['gemm_fraction_of_ukernel_peak']:.0%}")
    return table


def tvm_bench_table(result: dict[str, Any], layout: str, tuned: bool, direct: bool) -> Table:
    """The TVM benchmark per layer: untuned and tuned ours, TVM's direct conv2d, all against torch."""
    def ms(key: str) -> Any:
        return lambda r: f"{r[key]:.2f}" if key in r else "n/a"

    def ratio(key: str) -> Any:
        return lambda r: ratio_cell(r.get(key))

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
    table = Table(title=f"novagen bench (tvm-llvm, {layout})", title_justify="left")
    for col, _ in cols:
        table.add_column(col, justify="left" if col in ("layers", "untuned", "tuned") else "right", no_wrap=True)
    for r in result["layers"]:
        table.add_row(*(cell(r) for _, cell in cols))
    return table


def campaigns_table(rows: list[dict[str, Any]]) -> Table:
    """The shipped search campaigns: file, catalog entry, objective, what it is for."""
    table = Table(title="shipped search campaigns (novagen search --campaign FILE)", title_justify="left")
    for col in ("file", "entry", "objective", "description"):
        table.add_column(col, no_wrap=col != "description", overflow="fold")
    for r in rows:
        table.add_row(r["file"], r["name"], r["objective"], r["description"])
    return table
