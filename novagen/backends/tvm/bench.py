"""The TVM benchmark: our Winograd modules (untuned and tuned), TVM's own direct conv2d (unscheduled and
tuned) and torch.conv2d per layer, through the one timing harness (`novagen.timing`), in rounds of blocks: a
torch call right after some MetaSchedule-tuned TVM modules is up to 8× slower (the two thread pools contend),
which alternating would charge to the baseline, and one block per candidate would give a slow spell of the
machine to whichever block it hit (torch 41-56 ms, novagen 25-35 ms over four runs of the same ResNet-18
databases here, one block each)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from novagen.backends.tvm.runtime import Conv2d, DirectConv2d
from novagen.backends.tvm.spec import TVMError, load_tvm, one_axis_tvm
from novagen.backends.tvm.targets import host_target
from novagen.backends.tvm.tuning import load_tuned
from novagen.layers import Layer, conv_bytes, direct_gflop
from novagen.limits import require_memory, whole
from novagen.timing import FP32_BOUND, Candidate, fastest, geomean_ratio, machine_info, measure, settings, torch_layer

SETTLE = 0.5
"""Seconds of idle before each timed block: torch right after TVM's pool has run took 80-140 ms instead of
45-50 on ResNet-18 here for its first calls; after half a second, its usual time."""


def tuned_or_none(alg: Any, layer: Any, db: str | os.PathLike[str] | None, padding: Any, layout: str) -> Any:
    """The tuned module of `alg` for the layer from `db`, or None when there is no database or record."""
    if db is None:
        return None
    try:
        return load_tuned(alg, layer, db, padding, layout=layout)
    except TVMError:
        return None


# per candidate group: the row's keys for the fastest candidate's label, its time and torch's time over it
ROW_KEYS = {"ours": ("algorithm", "ours_ms", "ratio"),
            "tuned": ("tuned_algorithm", "tuned_ms", "tuned_ratio"),
            "tvm_default": ("tvm_default_kind", "tvm_default_ms", "tvm_default_ratio"),
            "tvm_tuned": ("tvm_tuned_kind", "tvm_tuned_ms", "tvm_tuned_ratio")}


def _candidates(layer: Layer, algorithms: Sequence[Any], x: np.ndarray, wt: np.ndarray, layout: str,
                tuned: str | os.PathLike[str] | None, direct: bool) -> list[Candidate]:
    """Every TVM candidate of a layer, named "group:label", each running on prepared tvm tensors."""
    tvm = load_tvm()
    out = []
    for alg in algorithms:
        label = one_axis_tvm(alg).label
        for group, mod in (("ours", None), ("tuned", tuned_or_none(alg, layer.shape, tuned, layer.padding, layout))):
            if group == "tuned" and mod is None:
                continue
            conv = Conv2d(alg, layer.shape, layer.padding, layout=layout, mod=mod)
            conv.set_weights(wt)
            xi = tvm.runtime.tensor(x, conv.dev)
            out.append(Candidate(f"{group}:{label}", lambda conv=conv, xi=xi: conv.run(xi), lambda y: y.numpy(),
                                 FP32_BOUND))
    if direct:
        for group, mod in (("tvm_default", None),
                           ("tvm_tuned", tuned_or_none("direct", layer.shape, tuned, layer.padding, layout))):
            if group == "tvm_tuned" and mod is None:
                continue
            dc = DirectConv2d(layer.shape, layer.padding, layout=layout, mod=mod)
            xi, wi = tvm.runtime.tensor(x, dc.dev), dc.weights(wt)
            out.append(Candidate(f"{group}:direct", lambda dc=dc, xi=xi, wi=wi: dc.run(xi, wi), lambda y: y.numpy(),
                                 FP32_BOUND))
    return out


def bench_layers(layers: Sequence[Layer], algorithms: Sequence[Any], repeats: int = 5, threads: int | None = None,
                 layout: str = "NCHW", tuned: str | os.PathLike[str] | None = None, direct: bool = False,
                 progress: Any = None) -> dict[str, Any]:
    """Time the TVM modules of each algorithm against torch conv2d per layer.

    Per layer: the fastest untuned algorithm ("ours"); with `tuned`, the fastest algorithm tuned in that
    database ("tuned"); with `direct`, TVM's own direct conv2d unscheduled ("tvm_default") and, when
    `tuned` holds a record of it (`tune("direct", ...)`), tuned ("tvm_tuned").  The ratios are torch time
    over ours; "tuned_vs_tvm_tuned" is TVM's tuned direct conv2d over our tuned Winograd.  Every output is
    checked against torch's float64 conv2d first; a candidate off by more than its bound is listed under
    "failed" and never ranked."""
    import torch

    tvm = load_tvm()
    threads = whole("--threads", threads, 1, 4096) if threads is not None else os.cpu_count() or 1
    repeats = whole("--repeats", repeats, 1, 1000)
    for layer in layers:
        require_memory(conv_bytes(layer.shape, 3, layer.padding) * 2, f"benchmarking layer {layer.shape}")
    torch.set_num_threads(threads)
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    rows = []
    for layer in layers:
        data = torch_layer(layer.shape, layer.padding, layout)
        cands = _candidates(layer, algorithms, data.x, data.w, layout, tuned, direct)
        ref = data.reference
        times = measure([data.baseline, *cands], ref, repeats, order="rounds", keep_outputs=True,
                        settle=SETTLE)
        base_y = times["baseline"].output
        base = times["baseline"].median_ms
        gf = direct_gflop(layer.shape, 3, layer.padding)
        row: dict[str, Any] = {
            "layers": list(layer.names), "shape": list(layer.shape), "padding": layer.padding, "layout": layout,
            "baseline_ms": base, "baseline_gflops": gf / base * 1e3,
            "candidates_ms": {name: t.median_ms for name, t in times.items() if name != "baseline"},
            "candidates": {name: t.to_dict() for name, t in times.items()},
            "rel_error": {name: t.error for name, t in times.items()},
            "rel_error_vs_baseline": {name: float(np.linalg.norm(t.output - base_y) / np.linalg.norm(base_y))
                                      for name, t in times.items() if name != "baseline"},
            "failed": [name for name, t in times.items() if not t.passed], "tuned": bool(tuned)}
        for group, (label_key, ms_key, ratio_key) in ROW_KEYS.items():
            best = fastest(times, [cd.name for cd in cands if cd.name.startswith(group + ":")])
            if best is not None:
                row.update({label_key: best.name.split(":", 1)[1], ms_key: best.median_ms,
                            ratio_key: base / best.median_ms})
        if "ours_ms" not in row:
            raise TVMError(f"every TVM candidate for layer {layer.shape} failed its correctness check: "
                           f"{row['rel_error']}")
        row["ours_gflops"] = gf / row["ours_ms"] * 1e3
        if "tuned_ms" in row and "tvm_tuned_ms" in row:
            row["tuned_vs_tvm_tuned"] = row["tvm_tuned_ms"] / row["tuned_ms"]
        rows.append(row)
        if progress:
            progress(f"{','.join(layer.names)}: {row['ratio']:.2f}x ({row['algorithm']})")
    summary: dict[str, Any] = {"geomean_ratio": geomean_ratio(rows)}
    for key in ("tuned_ratio", "tvm_default_ratio", "tvm_tuned_ratio", "tuned_vs_tvm_tuned"):
        if rows and all(key in r for r in rows):
            summary[f"geomean_{key}"] = geomean_ratio(rows, key)
    return {"machine": {**machine_info(), "threads": threads, "tvm": tvm.__version__, "target": str(host_target())},
            "baseline": {"name": "torch.nn.functional.conv2d", "version": torch.__version__},
            "timing": settings(repeats, "rounds"), "layers": rows, **summary}



MODEL_ROWS = ("torch", "tvm_default", "tvm_tuned", "novagen_tuned")


def gpu_target() -> Any:
    """The CUDA target of this machine's first GPU (its arch from torch), or a TVMError saying none is there."""
    import torch

    tvm = load_tvm()
    if not torch.cuda.is_available() or not tvm.cuda(0).exist:
        raise TVMError("--target tvm-cuda times on a CUDA GPU and none is visible here (torch.cuda.is_available() "
                       f"{torch.cuda.is_available()}, tvm.cuda(0).exist {tvm.cuda(0).exist})")
    major, minor = torch.cuda.get_device_capability(0)
    return tvm.target.Target({"kind": "cuda", "arch": f"sm_{major}{minor}"})


def bench_model(name: str, trials: int, db: str | os.PathLike[str], repeats: int = 10, threads: int | None = None,
                algorithm: str = "auto", seed: int = 0, progress: Any = None, target: str = "llvm") -> dict[str, Any]:
    """Whole-model latency at batch 1 of an ImageNet-shaped model built in code (`novagen.models`): torch
    eager; TVM's default pipeline (untuned); TVM with the whole model tuned by `model.tune` for `trials`; and
    novagen's rewrite (`algorithm`, "auto" by default) tuned the same way with the same trials.  `target`
    "llvm" (this CPU) or "cuda" (this machine's GPU; torch then runs there too, and every call is timed to
    its end on the device).  Databases go to `db`/tvm and `db`/novagen (resumed when they exist).  Every
    output is checked against torch's; times go through `novagen.timing` in blocks."""
    import torch

    from novagen.backends.tvm import model as M
    from novagen.models import example_input, imagenet_model

    load_tvm()
    if target not in ("llvm", "cuda"):
        raise TVMError(f"bench_model target '{target}' is not known: use llvm or cuda")
    gpu = target == "cuda"
    tgt = gpu_target() if gpu else host_target()
    threads = whole("--threads", threads, 1, 4096) if threads is not None else os.cpu_count() or 1
    torch.set_num_threads(threads)
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    say = progress or (lambda message: None)
    net = imagenet_model(name, seed)
    x = example_input(1, seed)
    with torch.inference_mode():
        ref = net(x).numpy()
    mod, params = M.import_model(net, tuple(x.shape))
    root = Path(db)
    runs: dict[str, Any] = {}
    tuning: dict[str, Any] = {}
    say("TVM default pipeline: compiling")
    runs["tvm_default"] = M.compile_model(M.prepare(mod, params, None, target=tgt), tgt)
    for key, algo in (("tvm_tuned", None), ("novagen_tuned", algorithm)):
        say(f"{key}: rewriting" if algo else f"{key}: binding the parameters")
        prepared = M.prepare(mod, params, algo, target=tgt)
        say(f"{key}: tuning {trials} trials")
        tuned = M.tune(prepared, tgt, root / key.split("_")[0], trials)
        tuning[key] = {"trials": tuned.trials, "new_trials": tuned.new_trials, "seconds": round(tuned.seconds, 1),
                       "tasks": len(tuned.tasks), "db": tuned.db}
        say(f"{key}: compiling")
        runs[key] = M.compile_model(tuned, tgt, tuned.db)
        if tuned.report is not None:
            tuning[key]["rewritten"] = [{k: r[k] for k in ("shape", "algorithm", "why")}
                                        for r in tuned.report.rewritten]
    if gpu:
        net, x = net.cuda(), x.cuda()

    def eager() -> Any:
        y = net(x)
        if gpu:
            torch.cuda.synchronize()
        return y

    xi = x.cpu().numpy()
    cands = [Candidate("torch", eager, lambda y: y.detach().cpu().numpy(), FP32_BOUND)]
    cands += [Candidate(key, M.model_runner(ex, xi, tgt), lambda y: y.numpy(), FP32_BOUND)
              for key, ex in runs.items()]
    say("timing")
    with torch.inference_mode():
        times = measure(cands, ref, whole("--repeats", repeats, 1, 1000), order="rounds", keep_outputs=True,
                        settle=SETTLE)
    base = times["torch"].median_ms
    rows = []
    for key in MODEL_ROWS:
        t = times[key]
        out = t.output
        rows.append({"name": key, "ms": t.median_ms, "min_ms": t.min_ms, "max_ms": t.max_ms,
                     "speedup_vs_torch": base / t.median_ms,
                     "max_rel_error": float(np.abs(out - ref).max() / np.abs(ref).max()), "passed": t.passed,
                     **tuning.get(key, {})})
    by = {r["name"]: r for r in rows}
    machine = {**machine_info(), "threads": threads}
    if gpu:
        machine["gpu"] = torch.cuda.get_device_name(0)
        machine["target"] = str(tgt)
    return {"model": name, "batch": 1, "trials": trials, "machine": machine,
            "rows": rows, "novagen_vs_tvm_tuned": by["tvm_tuned"]["ms"] / by["novagen_tuned"]["ms"],
            "novagen_vs_torch": base / by["novagen_tuned"]["ms"], "timing": settings(repeats, "rounds")}
