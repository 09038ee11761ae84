"""The accuracy command: measured error of algorithms under low-precision policies, per layer and network."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from novagen.accuracy import DIRECT, resolve_algorithm
from novagen.cli import tables
from novagen.cli.common import SPEC_HELP, err, out, print_json
from novagen.cli.plots import accuracy_plot, check_plot_path
from novagen.errors import CatalogError, InputError
from novagen.layers import parse_layer
from novagen.precision import policy
from novagen.studies import jobs, study


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
    force: bool = typer.Option(False, "--force", help="overwrite the --plot file if it exists"),
    calibrate: int = typer.Option(0, "--calibrate", help="digits/shapes: calibrate int8 scales on this many "
                                  "training images (percentile)"),
    finetune: int = typer.Option(0, "--finetune", help="digits/shapes: Winograd-aware fine-tuning for this many "
                                 "epochs (learned points, verified)"),
    study_table: bool = typer.Option(False, "--study", help="digits/shapes: the whole low-precision table (fp32, "
                                     "direct int8, Winograd int8 per tensor/tap/calibrated/fine-tuned, F(8,3) "
                                     "fp16/bf16)"),
    as_json: bool = typer.Option(False, "--json", help="print {\"rows\": [...]} as JSON"),
) -> None:
    """Measured error of algorithms under low-precision policies, per layer and per network."""
    networks = [n.strip().lower() for item in network or [] for n in item.split(",") if n.strip()]
    if study_table or calibrate or finetune:
        _trained_networks(algorithms, algorithm_opt, precision, networks, calibrate, finetune, study_table, seed,
                          as_json)
        return
    names = [*(algorithms or []), *(algorithm_opt or [])]
    if not names:
        raise InputError("give at least one algorithm, e.g. novagen accuracy \"F(6,3)/nova\" --precision fp16")
    precisions = [policy(p).name for item in precision for p in item.split(",") if p.strip()]
    shape = parse_layer(layer) if layer else (1, 64, 56, 56, 64)
    if plot is not None:
        check_plot_path(plot, force)
    if inputs < 1:
        raise InputError(f"--inputs {inputs} must be at least 1")
    if width <= 0:
        raise InputError(f"--width {width} must be positive")
    algs: list[str] = []
    for name in names:
        try:
            resolve_algorithm(name)
        except CatalogError as exc:
            if not skip_missing:
                raise
            err().print(f"skipped: {exc}")
            continue
        if name not in algs:
            algs.append(name)
    if baseline and DIRECT not in [a.lower() for a in algs]:
        algs.insert(0, DIRECT)
    todo = jobs(algs, precisions, shape if (layer or not networks) else None, networks)
    console = err()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("accuracy", total=len(todo))

        def step(description: str) -> None:
            if bar.tasks[0].description != "accuracy":
                bar.advance(task)
            bar.update(task, description=description)

        rows = study(algs, precisions, shape if (layer or not networks) else None, networks, seed, inputs, width,
                     balanced, progress=step)
    if plot is not None:
        accuracy_plot(rows, plot, force)
    if as_json:
        print_json({"rows": rows, "seed": seed, "balanced": balanced})
        return
    out().print(tables.accuracy_table(rows))


def _trained_networks(algorithms: list[str] | None, algorithm_opt: list[str] | None, precision: list[str],
                      networks: list[str], calibrate: int, finetune: int, study_table: bool, seed: int,
                      as_json: bool) -> None:
    """--calibrate / --finetune / --study on the networks trained here (novagen.datasets)."""
    from novagen.datasets import NETWORKS as TRAINED
    from novagen.lowprecision import HALF_ALGORITHMS, INT8_ALGORITHMS, study, variant

    bad = [n for n in networks if n not in TRAINED] or ([] if networks else ["(none)"])
    if bad:
        raise InputError(f"--calibrate, --finetune and --study take --network {' or '.join(TRAINED)}, "
                         f"got {', '.join(bad)}")
    if calibrate < 0 or finetune < 0:
        raise InputError("--calibrate and --finetune must be at least 0")
    console = err()
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task("training")

        def say(message: str) -> None:
            bar.update(task, description=message)

        if study_table:
            docs = [study(n, epochs=finetune or 2, calibration=calibrate or 256, seed=seed, progress=say)
                    for n in networks]
            if as_json:
                print_json({"studies": docs})
            else:
                for d in docs:
                    out().print(tables.lowprecision_table(d))
            return
        from novagen.datasets import accuracy, trained

        names = [*(algorithms or []), *(algorithm_opt or [])]
        precisions = [policy(p).name for item in precision for p in item.split(",") if p.strip()]
        # no algorithm named: the study's, F(4,3) and F(6,3) for integer formats, F(8,3) for the others
        runs = ([(a, p) for a in names for p in precisions] if names else
                [(a, p) for p in precisions for a in (INT8_ALGORITHMS if p.startswith("int") else HALF_ALGORITHMS)])
        rows = []
        for net in networks:
            say(f"training the {net} network")
            model, data = trained(net, seed)
            rows.append({"network": net, "algorithm": "direct", "precision": "fp32", "variant": "trained",
                         "top1": accuracy(model, data.x_test, data.y_test)})
            how = "finetuned" if finetune else "calibrated"
            for name, prec in runs:
                say(f"{net}: {name} {prec} {how}")
                top1, extra = variant(model, data, name, prec, how, finetune, calibrate or 256, seed=seed,
                                      progress=say)
                rows.append({"network": net, "algorithm": name, "precision": prec, "variant": how,
                             "top1": top1, **extra})
    if as_json:
        print_json({"rows": rows, "seed": seed, "calibrate": calibrate, "finetune": finetune})
        return
    for r in rows:
        pts = "; ".join(f"{x['learned']}: {', '.join(x['points'])}" for x in r.get("learned", []))
        out().print(f"{r['network']}  {r['algorithm']:<16} {r['precision']:<9} {r['variant']:<10} "
                    f"top-1 {r['top1']:.1%}  {pts}")
