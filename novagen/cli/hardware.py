"""The hardware command: fixed-point cost of the runtime transforms (adders, widths, yosys figures)."""

from __future__ import annotations

import typer
from rich.progress import Progress

from novagen.backends.verilog import tool
from novagen.cli import tables
from novagen.cli.common import POINTS_HELP, SPEC_HELP, err, out, print_json
from novagen.errors import InputError
from novagen.hardware import SYNTH_FAMILIES, report
from novagen.hardware import resolve as hardware_algorithm


def hardware_cmd(
    algorithms: list[str] = typer.Argument(..., help=f"{SPEC_HELP}; F(m,r)/best-dyadic is searched for when "
                                           "the catalog lacks it"),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP + " (for a bare spec)"),
    input_bits: int = typer.Option(8, "--input-bits", help="signed input word width"),
    coef_bits: int = typer.Option(16, "--coef-bits", help="transformed-weight word width"),
    channels: int = typer.Option(16, "--channels", help="input channels the accumulators are sized for"),
    datapath_bits: int = typer.Option(16, "--datapath-bits", help="width of the fixed datapath compared with exact "
                                      "widths"),
    family: str = typer.Option("ice40,xilinx", "--family", help="yosys targets: ice40, xilinx or both"),
    no_yosys: bool = typer.Option(False, "--no-yosys", help="skip synthesis (yosys is slow on wide words)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Fixed-point hardware cost of a whole Winograd tile engine per output: transform adders after sharing
    (CSD shift-add constants), DSPs for the α² products, word widths, throughput per DSP, yosys figures of the
    engine, and measured error with exact widths and with a fixed-width datapath."""
    fams = tuple(f.strip() for f in family.split(",") if f.strip())
    bad = [f for f in fams if f not in SYNTH_FAMILIES]
    if bad or not fams:
        raise InputError(f"--family {family}: use ice40, xilinx or ice40,xilinx")
    if not 2 <= input_bits <= 32:
        raise InputError(f"--input-bits {input_bits} must be from 2 to 32")
    if not input_bits <= datapath_bits <= 64:
        raise InputError(f"--datapath-bits {datapath_bits} must be from the input width ({input_bits}) to 64")
    algs = [hardware_algorithm(a, points) for a in algorithms]
    console = err()
    use_yosys = not no_yosys and tool("yosys") is not None
    if not no_yosys and not use_yosys:
        console.print("yosys is not installed: LUT/carry/DSP columns are left out (apt-get install yosys)")
    rows = []
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("hardware", total=len(algs))
        for alg in algs:
            rows.append(report(alg, input_bits, channels, coef_bits, datapath_bits, fams, use_yosys,
                               progress=lambda msg: bar.update(task, description=msg)))
            bar.update(task, advance=1)
    notes = []
    base = min(rows, key=lambda r: r["per_output"]["adders"])
    for r in rows:
        if r is not base:
            po, pb = r["per_output"], base["per_output"]
            notes.append(f"per output, {r['algorithm']} needs {po['adders']:.1f} transform adders and "
                         f"{po['dsps']:.2f} DSPs against {pb['adders']:.1f} and {pb['dsps']:.2f} for "
                         f"{base['algorithm']} ({po['adders'] / pb['adders']:.1f}x the adders); words into the "
                         f"output transform {r['widths']['m']} vs {base['widths']['m']} bits")
    if as_json:
        print_json({"input_bits": input_bits, "coef_bits": coef_bits, "channels": channels, "rows": rows,
                     "notes": notes})
        return
    console = out()
    console.print(tables.hardware_table(rows, input_bits, coef_bits, channels))
    if use_yosys:
        console.print(tables.yosys_table(rows, fams))
    for n in notes:
        console.print(n)
