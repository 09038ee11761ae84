"""The bench command: generated kernels (C, or TVM modules) against torch.conv2d per layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress

from novagen.backends import backend
from novagen.bench import DEFAULT_ALGORITHMS, bench_layers
from novagen.cli import tables
from novagen.cli.common import err, out, print_json, resolve
from novagen.errors import InputError
from novagen.layers import Layer, check_layout, network_layers, parse_layer


def bench(
    target: str = typer.Option("c", "--target", "-t",
                               help="target to time here: c or tvm-llvm (tvm-cuda: --model on a GPU)"),
    network: str | None = typer.Option(None, "--network", help="a network's 3x3 stride-1 conv layers: vgg16, "
                                       "resnet18 or resnet50"),
    batch: int = typer.Option(1, "--batch", help="batch size for --network (and --model with --target c)"),
    layer: str | None = typer.Option(None, "--layer", help="one layer N,C,H,W,K (3x3, padding 1)"),
    algorithms: list[str] | None = typer.Option(
        None, "--algorithm", "-a", help="algorithm(s) to try; the fastest per layer is reported "
        f"(default: {', '.join(DEFAULT_ALGORITHMS)})"),
    repeats: int = typer.Option(5, "--repeats", help="timed runs of each kernel (median reported)"),
    threads: int | None = typer.Option(None, "--threads", help="threads for ours and the baseline (default: all)"),
    layout: str = typer.Option("NCHW", "--layout", help="NCHW, or NHWC (torch then runs channels_last)"),
    tuned: Path | None = typer.Option(None, "--tuned", help="tvm-llvm: use the schedules of this tuning database"),
    direct: bool = typer.Option(False, "--tvm-direct", help="tvm-llvm: also time TVM's own direct conv2d, "
                                "unscheduled and (with --tuned) tuned"),
    model: str | None = typer.Option(None, "--model", help="a whole model: resnet18, resnet50 or vgg16 (built in "
                                     "code, seeded weights): torch eager against novagen (c) or TVM (tvm-llvm)"),
    trials: int = typer.Option(1000, "--trials", help="tvm --model: MetaSchedule trials of each tuned row"),
    db: Path = typer.Option(Path("tune_db"), "--db", help="tvm-llvm --model: tuning databases (resumed)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Time generated kernels against torch.nn.functional.conv2d (oneDNN), median of repeats; every kernel's
    output is checked against float64 first and a wrong one is never ranked."""
    if target not in ("c", "tvm-llvm") and not (target == "tvm-cuda" and model is not None):
        backend(target)
        raise InputError(f"bench runs here: use --target c or tvm-llvm (or tvm-cuda with --model on a GPU), "
                         f"not {target}")
    if model is not None:
        if network is not None or layer is not None:
            raise InputError("give one of --model, --network or --layer")
        _bench_model(target, model, batch, trials, db, repeats, threads, check_layout(layout), as_json)
        return
    if (network is None) == (layer is None):
        raise InputError("give either --network NAME or --layer N,C,H,W,K (or --model NAME)")
    if repeats < 1:
        raise InputError(f"--repeats {repeats} must be at least 1")
    layout = check_layout(layout)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError("bench compares with torch.nn.functional.conv2d: pip install torch") from None
    layers = network_layers(network, batch) if network else [Layer(("layer",), parse_layer(layer))]  # type: ignore[arg-type]
    algs = [resolve(a) for a in (algorithms or DEFAULT_ALGORITHMS)]
    if target == "tvm-llvm":
        _bench_tvm(layers, algs, repeats, threads, layout, tuned, direct, as_json)
        return
    if tuned is not None or direct:
        raise InputError("--tuned and --tvm-direct apply to --target tvm-llvm")
    console = err()
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("benchmarking", total=len(layers))
        result = bench_layers(layers, algs, repeats=repeats, threads=threads, layout=layout,  # type: ignore[arg-type]
                              progress=lambda msg: bar.update(task, advance=1, description=msg))
    if as_json:
        print_json(result)
        return
    m = result["machine"]
    console = out()
    console.print(f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads, {m['compiler']}; "
                  f"baseline {result['baseline']['name']} {result['baseline']['version']} "
                  f"({result['baseline']['backend']}); load {m['load_1min']:.2f} → {m['load_1min_end']:.2f}")
    console.print(tables.c_bench_table(result, layout))
    _print_failed(result)
    console.print(f"geomean ratio {result['geomean_ratio']:.2f}x (with auto, torch kept where it wins: "
                  f"{result['geomean_auto_ratio']:.2f}x) over "
                  f"{sum(len(r['layers']) for r in result['layers'])} layers; best sgemm (MKL, OpenBLAS) "
                  f"{m['sgemm_gflops']:.0f} GFLOP/s, micro-kernel in cache {m['ukernel_peak_gflops']:.0f} GFLOP/s")


def _print_failed(result: dict[str, Any]) -> None:
    for r in result["layers"]:
        for name in r.get("failed", []):
            err().print(f"[red]{','.join(r['layers'])}: {name} failed its correctness check "
                        f"(relative error {r['rel_error'][name]}) and was not ranked[/red]")


def _bench_tvm(layers: list[Any], algs: list[Any], repeats: int, threads: int | None, layout: str,
               tuned: Path | None, direct: bool, as_json: bool) -> None:
    from novagen.backends import tvm as nt

    if tuned is not None and not tuned.is_dir():
        raise InputError(f"tuning database '{tuned}' is not a folder: run novagen tune first")
    console = err()
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("benchmarking (tvm-llvm)", total=len(layers))
        result = nt.bench_layers(layers, algs, repeats=repeats, threads=threads, layout=layout, tuned=tuned,
                                 direct=direct, progress=lambda msg: bar.update(task, advance=1, description=msg))
    if as_json:
        print_json(result)
        return
    m = result["machine"]
    console = out()
    console.print(f"{m['cpu']}, {m['threads']} threads, TVM {m['tvm']} ({m['target']}); baseline "
                  f"{result['baseline']['name']} {result['baseline']['version']}; ratio = torch ms / ms")
    console.print(tables.tvm_bench_table(result, layout, tuned is not None, direct))
    _print_failed(result)
    count = sum(len(r["layers"]) for r in result["layers"])
    parts = [f"untuned {result['geomean_ratio']:.2f}x"]
    for key, name in (("geomean_tuned_ratio", "tuned"), ("geomean_tvm_default_ratio", "TVM direct"),
                      ("geomean_tvm_tuned_ratio", "TVM direct tuned"),
                      ("geomean_tuned_vs_tvm_tuned", "tuned over TVM direct tuned")):
        if key in result:
            parts.append(f"{name} {result[key]:.2f}x")
    console.print(f"geomean over {count} layers (vs torch unless named): " + ", ".join(parts))


def _bench_model(target: str, model: str, batch: int, trials: int, db: Path, repeats: int, threads: int | None,
                 layout: str, as_json: bool) -> None:
    if target == "c":
        _bench_torch_model(model, batch, repeats, threads, layout, as_json)
        return
    if batch != 1 or layout != "NCHW":
        raise InputError(f"--target {target} --model runs batch 1, NCHW")
    from novagen.backends import tvm as nt

    kind = "cuda" if target == "tvm-cuda" else "llvm"
    if kind == "cuda":
        nt.gpu_target()  # no GPU: say so before building anything
    result = _with_spinner(model, lambda say: nt.bench_model(model, trials, db, repeats=repeats, threads=threads,
                                                             progress=say, target=kind))
    if as_json:
        print_json(result)
        return
    m = result["machine"]
    console = out()
    where = m.get("gpu") or f"{m['cpu']}, {m['threads']} threads"
    console.print(f"{where}; {model} batch 1; tuned rows: MetaSchedule, {trials} trials each")
    console.print(tables.model_bench_table(result))
    console.print(f"novagen over TVM tuned {result['novagen_vs_tvm_tuned']:.2f}x, over torch eager "
                  f"{result['novagen_vs_torch']:.2f}x")


def _with_spinner(label: str, run: Callable[[Callable[[str], None]], dict[str, Any]]) -> dict[str, Any]:
    """run(say) under a progress line on stderr that shows each message `say` gets, prefixed by `label`."""
    console = err()
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=None)
        return run(lambda msg: bar.update(task, description=f"{label}: {msg}"))


def _bench_torch_model(model: str, batch: int, repeats: int, threads: int | None, layout: str, as_json: bool
                       ) -> None:
    from novagen.bench import bench_model

    result = _with_spinner(model, lambda say: bench_model(model, batch, repeats=repeats, threads=threads,
                                                          progress=say, layout=layout))
    if as_json:
        print_json(result)
        return
    m = result["machine"]
    console = out()
    console.print(f"{m['cpu']}, {m['threads']} threads; {model} batch {batch}, {layout}"
                  + (" (channels_last, both)" if layout == "NHWC" else "")
                  + "; novagen = replace_conv2d(model, 'auto', backend='c')")
    console.print(tables.torch_model_table(result))
    console.print(f"speed-up {result['speedup']:.2f}x; {len(result['choices'])} layers chose, "
                  f"{sum(c['label'] != 'torch' for c in result['choices'])} a Winograd kernel; "
                  f"{len(result['fused'])} took the BatchNorm/ReLU/max pool after them into the kernel"
                  + (f" ({result['not_fused']})" if result["not_fused"] else "")
                  + (f"; {len(result['pools'])} other max pool(s) run novagen's C pool on NCHW inputs"
                     if result["pools"] else ""))
