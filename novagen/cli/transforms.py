"""Commands on one algorithm: show, verify, export, catalog."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from novagen.algebra import Algorithm, AnyAlgorithm, from_dict
from novagen.catalog import catalog_entries
from novagen.cli import tables
from novagen.cli.common import POINTS_HELP, SNAP_HELP, SPEC_HELP, err, out, print_json, resolve
from novagen.errors import InputError, TransformFileError
from novagen.export import FORMATS, document, export, render, resolve_format
from novagen.files import shorten
from novagen.limits import short
from novagen.metrics import metrics
from novagen.points import format_point
from novagen.verify import verify


def show(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP),
    snap: int | None = typer.Option(None, "--snap", metavar="N", help=SNAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Matrices and metrics of an algorithm."""
    alg = resolve(spec, points, snap)
    if as_json:
        print_json(document(alg))
        return
    console = out()
    axes = alg.axes
    console.print(f"[bold]{alg.label}[/bold]  {alg.spec}  sha256 {alg.content_hash[:16]}")
    for i, a in enumerate(axes):
        if len(axes) > 1:
            console.print(f"\n[bold]axis {i}[/bold]: {a.spec}")
        console.print(f"points: {tables.points_text(a)}")
        for label, M in (("AT", a.AT), ("G", a.G), ("BT", a.BT)):
            console.print()
            console.print(tables.matrix_table(f"{label} ({len(M)}×{len(M[0])})", M))
    console.print()
    console.print(tables.metrics_table(metrics(alg)))
    if isinstance(alg, Algorithm):
        console.print()
        console.print(tables.program_table(alg))


def read_transform(path: Path) -> AnyAlgorithm:
    """The algorithm in a JSON file (as `show --json` writes); TransformFileError for anything else."""
    if not path.exists():
        raise TransformFileError(f"cannot read {shorten(path)}: no such file")
    if not path.is_file():
        raise TransformFileError(f"{shorten(path)} is not a file: give a JSON file with AT, G and BT")
    if path.stat().st_size > 1 << 22:
        raise TransformFileError(f"{shorten(path)} is {path.stat().st_size:,} bytes: a transform file is a few KB")
    try:
        text = path.read_text()
    except OSError as exc:
        raise TransformFileError(f"cannot read {shorten(path)}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TransformFileError(f"{shorten(path)} is not text: give a JSON file with AT, G and BT") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TransformFileError(f"{shorten(path)} is not JSON (line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise TransformFileError(f"{shorten(path)} holds a number novagen will not read: {short(exc, 120)}") from None
    return from_dict(data)


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
    alg = read_transform(file) if file is not None else resolve(spec or "", points, None)
    console = err()
    if console.is_terminal and not as_json:
        with console.status(f"proving {alg.label} ..."):
            cert = verify(alg, symbolic_2d=symbolic_2d, strict=False)
    else:
        cert = verify(alg, symbolic_2d=symbolic_2d, strict=False)
    if as_json:
        print_json(cert.to_dict())
    else:
        out().print(tables.certificate_table(cert))
    if not cert.verified:
        raise typer.Exit(1)


def export_cmd(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    fmt: str | None = typer.Option(None, "--format", "-f", help=f"one of {', '.join(FORMATS)} (default: from -o)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="file to write (default: stdout)"),
    points: str | None = typer.Option(None, "--points", "-p", help=POINTS_HELP),
    snap: int | None = typer.Option(None, "--snap", metavar="N", help=SNAP_HELP),
    force: bool = typer.Option(False, "--force", help="with -o: overwrite the file if it exists"),
    as_json: bool = typer.Option(False, "--json", help="with -o: report what was written as JSON"),
) -> None:
    """Write an algorithm as JSON, a C header, NumPy .npz, LaTeX or Markdown."""
    name = resolve_format(fmt, output)
    alg = resolve(spec, points, snap)
    if output is None:
        if name == "npz":
            raise InputError("npz is binary: give -o FILE.npz")
        data = render(alg, name)
        sys.stdout.write(data if isinstance(data, str) else data.decode())
        return
    path = export(alg, name, output, force)
    if as_json:
        print_json({"path": str(path), "format": name, "algorithm": alg.label, "hash": alg.content_hash,
                     "bytes": path.stat().st_size})
    else:
        err().print(f"wrote {path} ({name})")


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
        print_json(rows)
        return
    out().print(tables.catalog_table(rows, spec))
