"""The low-precision study of a trained network: how far calibration and Winograd-aware fine-tuning take
int8 (and fp16/bf16 for F(8,3)) beyond the choice of points.

One table per network (`novagen.datasets`: digits, shapes), every row the real test top-1 accuracy with
the network's eligible 3×3 convolutions computed under the row's recipe (the others direct, in the same
precision), measured by the exact emulator:

- fp32, and fp32 trained `epochs` more (what the extra training alone gives);
- direct int8 with per-output-channel weight scales, calibrated (the baseline a user would otherwise deploy);
- per Winograd algorithm: int8 per tensor; int8 per tap; int8 per tap, calibrated; fine-tuned (learned points
  and balancing, snapped, verified, calibrated); fine-tuned with free matrices (the unverified comparison,
  dynamic per-tap scales as trained) — F(4,3) and F(6,3);
- per F(8,3) algorithm: fp16 and bf16, and each fine-tuned.

A study takes hours on a small machine (each fine-tuned row trains the network again), so every finished row is
kept on disk as it comes, keyed by the study's settings, the machine, torch and the hash of the novagen code a
study runs (not the kernels, benches and command line, which it never calls; nor docstrings and comments): an
interrupted study started again resumes where it stopped.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from novagen.algebra import Algorithm
from novagen.catalog import split_name
from novagen.datasets import Dataset, accuracy, train, trained
from novagen.errors import InputError

INT8_ALGORITHMS = ("F(4,3)/classic", "F(4,3)/nova", "F(4,3)/best", "F(6,3)/classic", "F(6,3)/nova", "F(6,3)/best")
HALF_ALGORITHMS = ("F(8,3)/classic", "F(8,3)/nova", "F(8,3)/best")


_NOT_RUN = ("backends/", "cli/", "torch/fast.py", "torch/auto.py", "torch/epilogue.py", "bench.py", "timing.py",
            "limits.py", "costmodel.py")


def _code(source: str) -> str:
    """What of a module's source can change a result: its syntax tree without docstrings (comments and layout
    are not in the tree)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _code_hash() -> str:
    """sha256 of the code a study runs: a change to it invalidates the rows kept on disk; a change to
    docstrings, comments or layout does not."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).as_posix().startswith(_NOT_RUN):
            continue
        h.update(path.relative_to(root).as_posix().encode())
        h.update(_code(path.read_text()).encode())
    return h.hexdigest()


def _kept_rows(network: str, settings: list[Any]) -> Path:
    """Where a study's finished rows are kept (see the module docstring)."""
    from novagen.backends.toolchain import cache_dir
    from novagen.timing import machine_info

    m = machine_info()
    text = json.dumps([network, settings, m["cpu"], m["vector"], torch.__version__, _code_hash()])
    return cache_dir() / "lowprecision-study" / f"{network}-{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"


def _load_rows(path: Path) -> dict[str, dict[str, Any]]:
    try:
        rows = json.loads(path.read_text())
        return rows if isinstance(rows, dict) else {}
    except (OSError, ValueError):
        return {}


def _row(label: str, alg: str, precision: str, variant: str, top1: float, start: float, **extra: Any) -> dict:
    return {"row": label, "algorithm": alg, "precision": precision, "variant": variant, "top1": top1,
            "seconds": round(time.monotonic() - start, 1), **extra}


def _emulated(model: torch.nn.Module, data: Dataset, alg: str, precision: str, calibrated: bool, calibration: int,
              method: str, seed: int) -> torch.nn.Module:
    """A copy of `model` with `alg` emulated in `precision` (the other convolutions direct in it), its int8
    scales calibrated on the first `calibration` training images when `calibrated`."""
    from novagen.torch import replace_conv2d
    from novagen.torch.scales import calibrate

    q = replace_conv2d(model, alg, precision, others="direct")
    if calibrated and precision.startswith("int8"):
        calibrate(q, data.x_train[:calibration], method, seed=seed)
    return q


def _finetuned(q: torch.nn.Module, data: Dataset, precision: str, epochs: int, calibration: int, method: str,
               seed: int, learn: Sequence[str], label: str, progress: Callable[[str], None] | None,
               max_denominator: int = 16, **rates: Any) -> Any:
    """`finetune` of an `_emulated` model on the training split (int8: recalibrated afterwards); `rates`:
    finetune's lr, lr_points and schedule."""
    from novagen.torch.training import finetune

    calib = data.x_train[:calibration] if precision.startswith("int8") else None
    return finetune(q, (data.x_train, data.y_train), epochs=epochs, seed=seed, learn=learn,
                    max_denominator=max_denominator, calibrate=calib, calibrate_method=method, label=label,
                    progress=progress, **rates)


def variant(model: torch.nn.Module, data: Dataset, alg: str, precision: str, how: str, epochs: int = 2,
            calibration: int = 256, method: str = "percentile", seed: int = 0,
            progress: Callable[[str], None] | None = None) -> tuple[float, dict[str, Any]]:
    """Top-1 of one recipe `how` ("dynamic", "calibrated", "finetuned"; "free": fine-tuned with free matrices,
    the unverified comparison, evaluated on its training surrogates) and what it learned."""
    q = _emulated(model, data, alg, precision, how != "dynamic", calibration, method, seed)
    extra: dict[str, Any] = {}
    if how in ("finetuned", "free"):
        rep = _finetuned(q, data, precision, epochs, calibration, method, seed,
                         ("matrices",) if how == "free" else ("points", "scales"),
                         f"learned-{data.name}-{precision}", progress)
        extra = {"learned": rep.rows(), "losses": rep.losses, "steps": rep.steps, "skipped": rep.skipped,
                 "verified": how == "finetuned" and not rep.stalled}
    return accuracy(q, data.x_test, data.y_test), extra


def study(network: str, epochs: int = 2, calibration: int = 256, method: str = "percentile", seed: int = 0,
          int8_algorithms: Sequence[str] = INT8_ALGORITHMS, half_algorithms: Sequence[str] = HALF_ALGORITHMS,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The table of one network (see the module docstring)."""
    from novagen.files import atomic_write, output_folder

    say = progress or (lambda message: None)
    if epochs < 0 or calibration < 1:
        raise InputError("epochs must be at least 0 and calibration images at least 1")
    start = time.monotonic()
    kept = _kept_rows(network, [epochs, calibration, method, seed])
    done = _load_rows(kept)
    rows: list[dict[str, Any]] = []

    def add(key: str, make: Callable[[], dict[str, Any]]) -> None:
        """The row `key`: kept from an earlier run of this study, else made now and kept."""
        if key in done:
            rows.append({**done[key], "kept": True})
            return
        row = done[key] = make()
        rows.append(row)
        output_folder(kept.parent)
        atomic_write(kept, json.dumps(done), overwrite=True)

    say(f"training the {network} network")
    model, data = trained(network, seed)
    trained_seconds = round(time.monotonic() - start, 1)
    add("fp32", lambda: _row("fp32", "direct", "fp32", "trained", accuracy(model, data.x_test, data.y_test), start,
                             seconds_training=trained_seconds))
    if epochs:
        def more() -> dict[str, Any]:
            t = time.monotonic()
            net = train(copy.deepcopy(model).train(), data, epochs, lr=3e-4, seed=seed + 1)
            return _row(f"fp32 + {epochs} epochs", "direct", "fp32", "trained more",
                        accuracy(net, data.x_test, data.y_test), t)
        add("fp32 more", more)

    def direct() -> dict[str, Any]:
        t = time.monotonic()
        say("direct int8, per-channel, calibrated")
        top1, _ = variant(model, data, "direct", "int8", "calibrated", calibration=calibration, method=method,
                          seed=seed)
        return _row("direct int8 (per channel, calibrated)", "direct", "int8", "calibrated", top1, t)
    add("direct int8", direct)
    recipes = [(a, "int8", "dynamic") for a in int8_algorithms]
    recipes += [(a, "int8-tap", how) for a in int8_algorithms for how in ("dynamic", "calibrated")]
    recipes += [(a, p, "dynamic") for a in half_algorithms for p in ("fp16", "bf16")]
    if epochs:
        recipes += [(a, "int8-tap", "finetuned") for a in int8_algorithms]
        recipes += [(a, "int8-tap", "free") for a in int8_algorithms]
        recipes += [(a, p, "finetuned") for a in half_algorithms for p in ("fp16", "bf16")]
    for alg, prec, how in recipes:
        def row(alg: str = alg, prec: str = prec, how: str = how) -> dict[str, Any]:
            say(f"{network}: {alg} {prec} {how}")
            t = time.monotonic()
            top1, extra = variant(model, data, alg, prec, how, epochs, calibration, method, seed, progress)
            return _row(f"{alg} {prec} {how}", alg, prec, how, top1, t, **extra)
        add(f"{alg} {prec} {how}", row)
    return {"network": network, "dataset": {"train": len(data.y_train), "test": len(data.y_test)},
            "epochs": epochs, "calibration_images": calibration, "method": method, "seed": seed, "rows": rows,
            "seconds": round(time.monotonic() - start, 1)}


@dataclass
class Learned:
    """What a fine-tuning campaign found: its algorithm (learned, snapped, verified) with the power-of-two row
    scales it learned, and the network's test top-1 in fp32, with the starting algorithm (calibrated) and
    after fine-tuning."""

    best: Algorithm
    balancing: tuple[list[int], list[int]]
    network: str
    start: str
    precision: str
    top1: dict[str, float]
    losses: list[float]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"best": {"name": self.best.label, "points": [str(p) for p in self.best.finite_points or ()],
                         "hash": self.best.content_hash, "verified": True},
                "balancing": {"log2_g": self.balancing[0], "log2_b": self.balancing[1]},
                "network": self.network, "start": self.start, "precision": self.precision, "top1": self.top1,
                "losses": self.losses, "seconds": round(self.seconds, 1)}


def learn(name: str, network: str, start: str, precision: str, epochs: int = 2, calibration: int = 256,
          method: str = "percentile", seed: int = 0, max_denominator: int = 16, lr: float = 3e-4,
          lr_points: float = 2e-3, schedule: str = "constant", threads: int | None = None,
          progress: Callable[[str], None] | None = None) -> Learned:
    """The catalog entry `name` learned by Winograd-aware fine-tuning: the network of `novagen.datasets`
    trained here (seeded), its eligible convolutions emulated with `start` in `precision` (int8: calibrated
    per tap first), fine-tuned `epochs` with the points and balancing learned, snapped (denominators up to
    `max_denominator`) and verified; `lr`, `lr_points` and `schedule` as in `novagen.torch.finetune`.  With
    `threads`, torch runs on that many threads throughout (float32 training differs with the thread count, so a
    campaign that fixes it reproduces on any machine of the same CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        return _learn(name, network, start, precision, epochs, calibration, method, seed, max_denominator, lr,
                      lr_points, schedule, progress)
    finally:
        torch.set_num_threads(before)


def _learn(name: str, network: str, start: str, precision: str, epochs: int, calibration: int, method: str,
           seed: int, max_denominator: int, lr: float, lr_points: float, schedule: str,
           progress: Callable[[str], None] | None) -> Learned:
    say = progress or (lambda message: None)
    began = time.monotonic()
    spec, family = split_name(name)
    if split_name(start)[0] != spec:
        raise InputError(f"{name}: the starting algorithm {start} is not an {spec}")
    say(f"training the {network} network")
    model, data = trained(network, seed)
    top1 = {"fp32": accuracy(model, data.x_test, data.y_test)}
    q = _emulated(model, data, start, precision, True, calibration, method, seed)
    top1["start"] = accuracy(q, data.x_test, data.y_test)
    rep = _finetuned(q, data, precision, epochs, calibration, method, seed, ("points", "scales"), family, say,
                     max_denominator, lr=lr, lr_points=lr_points, schedule=schedule)
    if rep.stalled:
        raise InputError(f"{name}: {rep.stalled}; nothing was learned")
    src, alg = next(iter(rep.algorithms.items()))
    if rep.diverged:
        raise InputError(f"{name}: fine-tuning {start} in {precision} diverged (every step overflowed or the "
                         "points left the finite numbers); nothing was learned")
    top1["finetuned"] = accuracy(q, data.x_test, data.y_test)
    return Learned(alg, rep.balancing[src], network, start, precision, top1, rep.losses,
                   time.monotonic() - began)
