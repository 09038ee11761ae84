"""calibrate and finetune: a user's model file under a low-precision policy (the torch extra)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from novagen.cli.common import err, out, print_json
from novagen.errors import InputError
from novagen.files import atomic_write, check_target, output_folder

METHODS = ("max", "percentile", "mse")
LEARN = ("points", "scales")


def _torch() -> Any:
    try:
        import novagen.torch as nt
    except ImportError:
        raise InputError("calibrate and finetune need PyTorch: pip install 'novagen[torch]'") from None
    return nt


def _quantized(nt: Any, model: Any, algorithm: str, precision: str, calibrate: Any = None,
               method: str = "percentile") -> tuple[Any, Any]:
    model_q, report = nt.replace_conv2d(model, algorithm, precision, calibrate=calibrate, calibrate_method=method,
                                        return_report=True)
    if not report.replaced:
        raise InputError(f"no convolution of this model can run {algorithm} (3x3, stride 1, groups 1 needed): "
                         + "; ".join(f"{n}: {why}" for n, why in report.skipped[:3]))
    return model_q, report


def _accuracy(model: Any, x: Any, y: Any) -> float | None:
    from novagen.torch.modelfile import top1

    if y is None:
        return None
    try:
        return top1(model, x, y)
    except (RuntimeError, AssertionError) as exc:
        raise InputError(f"the model fails on the data: {str(exc).splitlines()[0][:200]} (an exported program "
                         "traced for one batch size: export it with a dynamic batch dimension)") from None


def calibrate_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="an exported program (.pt2) or a pickled model (.pt)"),
    algorithm: str = typer.Option(..., "--algorithm", "-a", help="a catalog algorithm, e.g. F(6,3)/best"),
    precision: str = typer.Option("int8-tap", "--precision", "-P", help="int8, int8-tap, fp8-e4m3, ..."),
    data: Path = typer.Option(..., "--data", help=".npz with x (N, C, H, W) and optionally labels y"),
    method: str = typer.Option("percentile", "--method", help="max, percentile or mse"),
    samples: int = typer.Option(256, "--samples", help="calibrate on the first this many inputs"),
    output: Path = typer.Option(..., "-o", "--output", help="the calibrated scales (JSON)"),
    force: bool = typer.Option(False, "--force", help="overwrite the output file"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Static scales of a model's Winograd convolutions under an int8/fp8 policy, calibrated on data (V per
    tap, U per output channel and tap, x per tensor); with labels, top-1 before and after."""
    if method not in METHODS:
        raise InputError(f"--method {method}: use {', '.join(METHODS)}")
    if not 1 <= samples <= 1_000_000:
        raise InputError(f"--samples {samples} must be from 1 to 1,000,000")
    check_target(output, force)
    nt = _torch()
    from novagen.torch.modelfile import load_data, load_model

    model = load_model(model_path)
    x, y = load_data(data)
    start = time.monotonic()
    model_q, report = _quantized(nt, model, algorithm, precision, x[:samples], method)
    top1 = None
    if y is not None:  # the dynamic-scale model only for the comparison the labels allow
        dynamic, _ = _quantized(nt, model, algorithm, precision)
        top1 = {"fp32": _accuracy(model, x, y), "dynamic": _accuracy(dynamic, x, y),
                "calibrated": _accuracy(model_q, x, y)}
    doc = {"model": str(model_path), "algorithm": algorithm, "precision": precision, "method": method,
           "samples": min(samples, len(x)), "replaced": report.replaced, "skipped": report.skipped, "top1": top1,
           "seconds": round(time.monotonic() - start, 2),
           "scales": {name: {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in sc.items()}
                      for name, sc in report.scales.items()}}
    atomic_write(output, json.dumps(doc, indent=1) + "\n", overwrite=force)
    if as_json:
        print_json(doc)
        return
    con = out()
    con.print(f"calibrated {len(report.replaced)} convolutions ({algorithm}, {precision}, {method} on "
              f"{doc['samples']} inputs) -> {output}")
    if doc["top1"]:
        t = doc["top1"]
        con.print(f"top-1 on the data: fp32 {t['fp32']:.1f}%, {precision} dynamic {t['dynamic']:.1f}%, "
                  f"calibrated {t['calibrated']:.1f}%")


def finetune_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="an exported program (.pt2) or a pickled model (.pt)"),
    algorithm: str = typer.Option(..., "--algorithm", "-a", help="a catalog algorithm, e.g. F(6,3)/best"),
    precision: str = typer.Option("int8-tap", "--precision", "-P", help="int8, int8-tap, fp16, bf16"),
    data: Path = typer.Option(..., "--data", help=".npz with x (N, C, H, W) and labels y (N,)"),
    epochs: int = typer.Option(3, "--epochs", help="training epochs"),
    learn: str = typer.Option("points,scales", "--learn", help="what the algorithm learns: points, scales or both"),
    calibrate: int = typer.Option(256, "--calibrate", help="calibrate static scales on this many inputs after "
                                  "training (0: dynamic scales)"),
    seed: int = typer.Option(0, "--seed", help="seed of the batch order"),
    output: Path = typer.Option(..., "-o", "--output", help="a folder: state_dict.pt, report.json, algorithms/"),
    force: bool = typer.Option(False, "--force", help="overwrite files in the output folder"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Winograd-aware fine-tuning of a model under a low-precision policy: the network's weights and the
    algorithm's points (and power-of-two balancing) train together; the points are snapped to rationals,
    verified exact, and written as catalog entries beside the fine-tuned weights."""
    parts = tuple(p.strip() for p in learn.split(",") if p.strip())
    if not parts or any(p not in LEARN for p in parts):
        raise InputError(f"--learn {learn}: use points, scales or points,scales")
    if not 1 <= epochs <= 1000:
        raise InputError(f"--epochs {epochs} must be from 1 to 1000")
    if not 0 <= calibrate <= 1_000_000:
        raise InputError(f"--calibrate {calibrate} must be from 0 to 1,000,000")
    if not 0 <= seed < 2 ** 32:
        raise InputError(f"--seed {seed} must be from 0 to 2**32 - 1")
    if output.exists() and not output.is_dir():
        raise InputError(f"{output} is not a folder: give a folder to write into")
    if output.is_dir():  # a new folder has nothing to clobber; it is created once training has succeeded
        for name in ("state_dict.pt", "report.json"):
            check_target(output / name, force)
    nt = _torch()
    import torch

    from novagen.export import identifier, to_json
    from novagen.torch.modelfile import load_data, load_model

    model = load_model(model_path)
    x, y = load_data(data, labels=True)
    before = _accuracy(model, x, y)
    model_q, _ = _quantized(nt, model, algorithm, precision)
    dynamic = _accuracy(model_q, x, y)
    console = err()
    label = f"{algorithm.rsplit('/', 1)[-1]}-{precision}-learned"
    rep = nt.finetune(model_q, (x, y), epochs=epochs, learn=parts, seed=seed, label=label,
                      calibrate=x[:calibrate] if calibrate else None,
                      progress=lambda msg: console.print(msg) if console.is_terminal else None)
    if rep.stalled:
        raise InputError(f"{model_path}: {rep.stalled}; nothing written")
    after = _accuracy(model_q, x, y)
    doc = {"model": str(model_path), "algorithm": algorithm, "precision": precision, "epochs": epochs,
           "learn": list(parts), "seconds": round(rep.seconds, 1), "losses": rep.losses, "steps": rep.steps,
           "skipped_steps": rep.skipped,
           "top1_on_data": {"fp32": before, "dynamic": dynamic, "finetuned": after},
           "learned": rep.rows(), "layers": rep.layers}
    output_folder(output)
    algs = {f"algorithms/{identifier(alg)}.json": to_json(alg) for alg in rep.algorithms.values()}
    for rel in algs:
        if (output / rel).parent.is_dir():
            check_target(output / rel, force)
    buf = _state_bytes(torch, model_q)
    atomic_write(output / "state_dict.pt", buf, overwrite=force)
    if algs:
        output_folder(output / "algorithms")
    for rel, text in algs.items():
        atomic_write(output / rel, text, overwrite=force)
    atomic_write(output / "report.json", json.dumps(doc, indent=1) + "\n", overwrite=force)
    if as_json:
        print_json(doc)
        return
    con = out()
    con.print(f"fine-tuned {len(rep.layers)} convolutions for {epochs} epochs in {rep.seconds:.0f} s -> {output}")
    for row in rep.rows():
        con.print(f"{row['from']} -> {row['learned']}: points {', '.join(row['points'])} (verified)")
    con.print(f"top-1 on the data: fp32 {before:.1f}%, {precision} dynamic {dynamic:.1f}%, fine-tuned {after:.1f}%")


def _state_bytes(torch: Any, model: Any) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()
