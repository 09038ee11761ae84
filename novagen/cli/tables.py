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


def learned_table(result: Any) -> Table:
    """A fine-tuning campaign's outcome (`lowprecision.Learned`): the learned points beside the start's, and
    the network's test top-1."""
    from novagen.catalog import algorithm

    table = Table(title=f"{result.best.label}: learned by fine-tuning the {result.network} network in "
                        f"{result.precision} from {result.start}, {result.seconds:.0f} s", title_justify="left")
    for col, just in (("", "left"), ("points", "left"), ("κ(V)", "right"), ("test top-1", "right")):
        table.add_column(col, justify=just, overflow="fold" if col == "points" else "ellipsis")
    start = algorithm(result.start)
    table.add_row("fp32 network", "", "", f"{100 * result.top1['fp32']:.1f} %")
    table.add_row(result.start, ",".join(format_point(p) for p in start.points),  # type: ignore[union-attr]
                  fmt(metrics(start)["vandermonde_cond"]), f"{100 * result.top1['start']:.1f} %")
    table.add_row(result.best.label + " [green](verified)[/green]",
                  ",".join(format_point(p) for p in result.best.points), fmt(metrics(result.best)["vandermonde_cond"]),
                  f"{100 * result.top1['finetuned']:.1f} %")
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


def lowprecision_table(doc: dict[str, Any]) -> Table:
    """A network's low-precision study: top-1 per recipe, time, learned points."""
    t = Table(title=f"{doc['network']}: test top-1 ({doc['dataset']['test']} images), calibration "
              f"{doc['calibration_images']} images ({doc['method']}), fine-tuning {doc['epochs']} epochs",
              title_justify="left")
    for col in ("recipe", "top-1", "vs fp32", "seconds", "learned points (verified)"):
        t.add_column(col, justify="left" if col in ("recipe", "learned points (verified)") else "right")
    base = doc["rows"][0]["top1"]
    for r in doc["rows"]:
        pts = "; ".join(f"{x['learned']}: {', '.join(x['points'])}" if x.get("verified", True) else
                        "free matrices (unverified)" for x in r.get("learned", []))
        delta = (r["top1"] - base) * 100
        t.add_row(r["row"], f"{r['top1']:.1%}", f"{delta:+.1f} pt" if r is not doc["rows"][0] else "",
                  f"{r['seconds']:.0f}", pts)
    return t


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


def sim_table(rep: Any, folder: Any, what: str) -> Table:
    """A C or RTL simulation: the testbench's verdict, bit mismatches against the model, error against the
    float64 convolution and its bound."""
    table = Table(title=f"{what} of {rep.label} ({folder}); reference {rep.reference}", title_justify="left")
    for col in ("outputs", "testbench", "bit mismatches vs model", "max |err|", "rel L2", "predicted bound",
                "within bound", "build s", "run s"):
        table.add_column(col, justify="right")
    table.add_row(str(rep.outputs), "pass" if rep.testbench_exit == 0 else "[red]FAIL[/red]", str(rep.mismatches),
                  f"{rep.max_abs_error:.4g}", f"{rep.rel_l2_error:.3e}", f"{rep.max_bound:.4g}",
                  "yes" if rep.within_bound else "[red]NO[/red]", f"{rep.compile_seconds:.1f}",
                  f"{rep.run_seconds:.2f}")
    return table


def hardware_table(rows: list[dict[str, Any]], input_bits: int, coef_bits: int, channels: int) -> Table:
    """The tile engine's cost per output for each algorithm: adders, DSPs, widths, error (exact and fixed)."""
    dp = rows[0]["datapath_bits"] if rows else 0
    t = Table(title=f"tile engine per output ({input_bits}-bit inputs, {coef_bits}-bit weights, {channels} channels; "
              f"adders = shared programs + CSD constants)", title_justify="left")
    for col in ("algorithm", "points", "κ(V)", "adders/out (in+out)", "DSP/out", "mult/out vs direct",
                "GOP/s/DSP @200MHz", "V bits", "acc bits", "y bits", "err exact", f"err {dp}-bit", "err/bound"):
        t.add_column(col, justify="left" if col in ("algorithm", "points") else "right", no_wrap=col != "points")
    for r in rows:
        po = r["per_output"]
        t.add_row(r["algorithm"] + (" (dyadic)" if r["dyadic"] else ""), ",".join(r["points"]),
                  fmt(r["vandermonde_cond"]),
                  f"{po['adders']:.1f} ({po['input_adders']:.1f}+{po['output_adders']:.1f})", f"{po['dsps']:.2f}",
                  f"{po['multiplies']:.2f} vs {po['direct_multiplies']}", f"{r['gops_per_dsp_200mhz']:.2f}",
                  str(r["widths"]["v"]), str(r["widths"]["acc"]), str(r["widths"]["y"]),
                  f"{r['error']['rel_l2']:.2e}", f"{r['error_fixed']['rel_l2']:.2e}",
                  f"{max(r['error']['bound_ratio'], r['error_fixed']['bound_ratio']):.2f}")
    return t


def yosys_table(rows: list[dict[str, Any]], families: tuple[str, ...]) -> Table:
    """yosys figures of each algorithm's tile engine (one output channel a cycle) per FPGA family."""
    y = Table(title="yosys: the tile engine (open toolchain; ice40 with -dsp): LUTs / carries / FFs / DSPs",
              title_justify="left")
    y.add_column("algorithm")
    for fam in families:
        y.add_column(fam, justify="right")
    y.add_column("expected DSPs (α² × per product)", justify="right")
    for r in rows:
        cells = [f"{s['luts']} / {s['carry']} / {s['ffs']} / {s['dsps']}"
                 for s in (r["yosys"][fam] for fam in families)]
        y.add_row(r["algorithm"], *cells, str(r["engine"]["dsps"]))
    return y


def ratio_cell(value: float | None) -> str:
    """A speed ratio, red below 1."""
    if value is None:
        return "n/a"
    text = f"{value:.2f}x"
    return text if value >= 1 else f"[red]{text}[/red]"


def _layer_names(names: list[str]) -> str:
    """The network layers of one shape, short enough that the numbers beside them fit (ResNet-50 has six)."""
    text = ",".join(names)
    return text if len(text) <= 32 else f"{names[0]} (+{len(names) - 1})"


def _cell(value: float | None, spec: str) -> str:
    """A number, or "-" where the row has none (the direct kernel has no GEMM stage)."""
    return "-" if value is None else format(value, spec)


def c_bench_table(result: dict[str, Any], layout: str) -> Table:
    """The C benchmark per layer: ours against torch, GFLOP/s, the GEMM stage against sgemm."""
    table = Table(title=f"novagen bench (c, {layout})", title_justify="left")
    for col in ("layers", "N,C,H,W,K", "algorithm", "ours ms", "torch ms", "ratio", "auto", "ours GF/s",
                "torch GF/s", "GEMM GF/s", "of sgemm", "of µkernel", "limit ms", "of limit"):
        table.add_column(col, justify="left" if col in ("layers", "algorithm", "auto") else "right", no_wrap=True)
    for r in result["layers"]:
        table.add_row(_layer_names(r["layers"]), ",".join(map(str, r["shape"])), r["algorithm"], f"{r['ours_ms']:.2f}",
                      f"{r['baseline_ms']:.2f}", ratio_cell(r["ratio"]), r["auto"], f"{r['ours_gflops']:.0f}",
                      f"{r['baseline_gflops']:.0f}", _cell(r.get("gemm_stage_gflops"), ".0f"),
                      _cell(r.get("gemm_fraction_of_sgemm"), ".0%"),
                      _cell(r.get("gemm_fraction_of_ukernel_peak"), ".0%"),
                      _cell(r.get("limit_ms"), ".2f"), _cell(r.get("fraction_of_limit"), ".0%"))
    return table


def torch_model_table(result: dict[str, Any]) -> Table:
    """Whole-model latency in PyTorch: eager against novagen's replaced model."""
    table = Table(title=f"whole-model latency: {result['model']}, batch {result['batch']}", title_justify="left")
    for col in ("model", "ms (median)", "min–max", "vs torch", "max rel. error"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in result["rows"]:
        table.add_row("torch eager" if r["name"] == "torch" else "novagen (auto, c)", f"{r['ms']:.2f}",
                      f"{r['min_ms']:.2f}–{r['max_ms']:.2f}", ratio_cell(r["speedup_vs_torch"]),
                      f"{r['max_rel_error']:.1e}")
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


def model_bench_table(result: dict[str, Any]) -> Table:
    """Whole-model latency: torch, TVM default, TVM tuned, novagen tuned, each with its error against torch."""
    names = {"torch": "torch eager", "tvm_default": "TVM, default pipeline", "tvm_tuned": "TVM, tuned (MetaSchedule)",
             "novagen_tuned": "novagen rewrite, tuned (MetaSchedule)"}
    table = Table(title=f"whole-model latency: {result['model']}, batch 1", title_justify="left")
    for col in ("pipeline", "ms (median)", "min–max", "vs torch", "max rel. error", "trials", "tuning s"):
        table.add_column(col, justify="left" if col == "pipeline" else "right", no_wrap=True)
    for r in result["rows"]:
        table.add_row(names.get(r["name"], r["name"]), f"{r['ms']:.2f}", f"{r['min_ms']:.2f}–{r['max_ms']:.2f}",
                      ratio_cell(r["speedup_vs_torch"]), f"{r['max_rel_error']:.1e}",
                      str(r.get("trials", "")), str(r.get("seconds", "")))
    return table
