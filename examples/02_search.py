"""The search, measured: the NOVA paper's bounds, beyond them, and the fp16 error/cost front of F(6,3).

Runs the searches the search issue asks for with a fixed seed, times each one, and prints what was
found next to the paper's values; then the Pareto front of measured fp16 error against transform
cost for F(6,3), with the classic, paper and κ-optimal sets as reference points. About 3 minutes on
2 cores.

    python examples/02_search.py [--quick]
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

import novagen
from novagen import pointsearch as S
from novagen.points import format_point

RUNS = [  # spec, max denominator, the bound the issue sets (the paper's value where it has one)
    ("F(4,3)", 6, 14.6),
    ("F(6,3)", 6, 76.7),
    ("F(8,3)", 12, 426.0),
    ("F(8,3)", 16, 420.0),
]


def main(quick: bool) -> int:
    console = Console(width=max(Console().width, 140))
    table = Table(title="min κ(V), symmetric sets, seed 0 (paper: F(4,3) 14.6, F(6,3) 76.7, F(8,3) 474.1)",
                  title_justify="left")
    for col in ("spec", "max denom.", "points", "κ(V)", "bound", "continuous optimum", "seconds"):
        table.add_column(col, justify="left" if col == "points" else "right", overflow="fold")
    failures = 0
    for spec, den, bound in RUNS[:2] if quick else RUNS:
        t = time.perf_counter()
        res = novagen.search(spec, "vandermonde", max_denominator=den, seed=0)
        seconds = time.perf_counter() - t
        kappa = res.candidates[0].values["vandermonde"]
        failures += kappa > bound
        table.add_row(spec, str(den), ",".join(format_point(p) for p in res.best.points), f"{kappa:.2f}",
                      f"{bound:g}", f"{2.718281828459045 ** res.continuous[0][0]:.2f}", f"{seconds:.1f}")
    console.print(table)

    t = time.perf_counter()
    front = S.pareto("F(6,3)", "fp16", "cost", max_denominator=8, seed=0,
                     max_evaluations=1000 if quick else 3000)
    table = Table(title=f"F(6,3): measured fp16 error against transform cost (ops per 2D tile), "
                        f"{time.perf_counter() - t:.0f} s", title_justify="left")
    for col in ("", "points", "fp16 rel. L2", "cost", "κ(V)"):
        table.add_column(col, justify="left" if col in ("", "points") else "right")
    for label, p in [(f"front {i}", p) for i, p in enumerate(front.front, 1)] + \
                    [(p.reference, p) for p in front.references]:
        table.add_row(label, ",".join(format_point(x) for x in p.algorithm.points), f"{p.values[0]:.3g}",
                      f"{p.values[1]:.0f}", f"{novagen.metrics(p.algorithm)['vandermonde_cond']:.1f}")
    console.print(table)
    if failures:
        console.print(f"[red]{failures} search(es) missed their bound[/red]")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main("--quick" in sys.argv[1:]))
