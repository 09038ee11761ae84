"""The C benchmark: generated kernels against torch.nn.functional.conv2d (oneDNN) on this machine.

Timing goes through `novagen.timing`: every output checked against torch's float64 conv2d first (a
kernel off by more than `FP32_BOUND` is listed as failed and never ranked), warm-up excluded, baseline
and candidates alternating within each repeat, medians.  Weights are transformed once before timing (they
are constant at inference), and GFLOP/s count direct-convolution FLOPs (2·N·K·C·OH·OW·r²) for both.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from novagen.algebra import Algorithm
from novagen.backends.c import Kernel, compiler_identity
from novagen.backends.direct import DIRECT, MAX_CHANNELS, direct_library
from novagen.backends.toolchain import BuildError, find_compiler
from novagen.errors import CheckFailed, InputError
from novagen.layers import Layer, check_layout, conv_bytes, direct_gflop
from novagen.limits import require_memory, whole
from novagen.timing import (
    FP32_BOUND,
    Candidate,
    fastest,
    geomean_ratio,
    machine_info,
    measure,
    settings,
    torch_layer,
    wall_seconds,
)

DEFAULT_ALGORITHMS = ("F(2,3)/classic", "F(4,3)/nova", "F(6,3)/nova", "F(7,3)/best")


def sgemm_gflops(threads: int, sizes: Sequence[int] = (2048, 4096), repeats: int = 5) -> float:
    """The best sgemm rate the machine's libraries reach at `threads`: torch.mm (MKL) and numpy's BLAS
    (OpenBLAS), best of repeats over square sizes. MKL takes a slow path on AMD CPUs, so one library alone
    understates the peak we compare the GEMM stage with."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    best = 0.0
    for n in sizes:
        a32 = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        at = torch.from_numpy(a32)
        with threadpool_limits(limits=threads):
            for mm in (lambda at=at: torch.mm(at, at), lambda a32=a32: a32 @ a32):
                mm()
                best = max(best, 2.0 * n ** 3 / min(wall_seconds(mm) for _ in range(repeats)) / 1e9)
    return best


def copy_bandwidth(threads: int, megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of a large memory copy (bytes read plus bytes written), best of repeats: the transforms' ceiling."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(megabytes * (1 << 18), dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2.0 * src.numel() * 4 / min(wall_seconds(lambda: dst.copy_(src)) for _ in range(repeats)) / 1e9


def limit_ms(kernel: Kernel, shape: Sequence[int], sgemm: float, bandwidth: float) -> float:
    """The least time this machine could take for the kernel's work: its GEMM FLOPs at the measured sgemm
    rate, plus the transforms' memory traffic at the measured copy bandwidth (x read, V and M each written
    and read back, U read, y written, 4 bytes a value)."""
    n, c, h, w, k = shape
    alg = kernel.algorithm
    tiles = n * math.ceil(h / alg.m) * math.ceil(w / alg.m)
    traffic = 4.0 * (n * c * h * w + 2 * alg.alpha ** 2 * tiles * (c + k) + alg.alpha ** 2 * c * k + n * k * h * w)
    return (kernel.gemm_flops() / (sgemm * 1e9) + traffic / (bandwidth * 1e9)) * 1e3


def gemm_stage_gflops(kernel: Kernel, x: np.ndarray, w: np.ndarray, repeats: int = 5) -> float:
    """GFLOP/s of the α² channel GEMMs alone (the kernel run with only its GEMM stage), counting the GEMM
    sizes the kernel really computes (`Kernel.gemm_flops`)."""
    kernel(x, w)
    settle = time.perf_counter() + 0.3  # the BLAS threads of the error checks before spin for ~0.1 s and slow
    while time.perf_counter() < settle:  # the first calls 3-4x (AMD EPYC, 2 cores): not counted
        kernel(x, w, stages=2)
    t = statistics.median(wall_seconds(lambda: kernel(x, w, stages=2)) for _ in range(repeats))
    return kernel.gemm_flops() / t / 1e9


def _bench_layer(layer: Layer, algorithms: Sequence[Algorithm], repeats: int, threads: int,
                 ceilings: dict[str, float] | None, layout: str = "NCHW") -> dict[str, Any]:
    data = torch_layer(layer.shape, layer.padding, layout)
    x, wt, ref = data.x, data.w, data.reference
    kernels = {a.label: Kernel(a, padding=layer.padding, layer=layer.shape, threads=threads, layout=layout)
               for a in algorithms}
    cands = [data.baseline]
    cands += [Candidate(label, lambda kern=kern: kern(x, wt), None, FP32_BOUND) for label, kern in kernels.items()]
    ours = list(kernels)
    if layout == "NCHW" and layer.shape[1] <= MAX_CHANNELS:  # what auto offers layers with few channels
        cands.append(_direct_candidate(layer, x, wt, threads))
        ours.append(DIRECT)
    times = measure(cands, ref, repeats, order="alternating", keep_outputs=True)
    base = times["baseline"]
    best = fastest(times, ours)
    if best is None:
        raise CheckFailed(f"every kernel failed its correctness check on layer {layer.shape}: "
                          + ", ".join(f"{n} error {t.error:.2e}" for n, t in times.items() if n != "baseline"))
    gf = direct_gflop(layer.shape, 3, layer.padding)
    y0 = base.output
    row: dict[str, Any] = {
        "layers": list(layer.names), "shape": list(layer.shape), "padding": layer.padding, "layout": layout,
        "algorithm": best.name, "ours_ms": best.median_ms, "baseline_ms": base.median_ms,
        "ratio": base.median_ms / best.median_ms, "ours_gflops": gf / best.median_ms * 1e3,
        # what replace_conv2d(..., "auto") runs: the faster of the best kernel and torch, from these timings
        "auto": best.name if best.median_ms < base.median_ms else "torch",
        "auto_ratio": base.median_ms / min(best.median_ms, base.median_ms),
        "baseline_gflops": gf / base.median_ms * 1e3,
        "candidates_ms": {label: times[label].median_ms for label in ours},
        "candidates": {name: t.to_dict() for name, t in times.items()},
        "rel_error": {name: t.error for name, t in times.items()},
        "rel_error_vs_baseline": {label: float(np.linalg.norm(times[label].output - y0) / np.linalg.norm(y0))
                                  for label in ours},
        "failed": [name for name, t in times.items() if not t.passed],
    }
    if ceilings and best.name == DIRECT:  # no GEMM stage: its FLOPs at sgemm speed, x read and y written
        n, c, h, w, k = layer.shape
        flops = gf * 1e9
        row.update(gemm_stage_gflops=None, gemm_fraction_of_sgemm=None, gemm_fraction_of_ukernel_peak=None,
                   limit_ms=(flops / (ceilings["sgemm_gflops"] * 1e9)
                             + 4.0 * (n * c * h * w + n * k * h * w) / (ceilings["copy_gbytes_per_s"] * 1e9)) * 1e3)
        row["fraction_of_limit"] = row["limit_ms"] / best.median_ms
    elif ceilings:
        kern = kernels[best.name]
        row["gemm_stage_gflops"] = gemm_stage_gflops(kern, x, wt, repeats=max(3, repeats // 2))
        row["gemm_fraction_of_sgemm"] = row["gemm_stage_gflops"] / ceilings["sgemm_gflops"]
        row["gemm_fraction_of_ukernel_peak"] = row["gemm_stage_gflops"] / ceilings["ukernel_peak_gflops"]
        row["limit_ms"] = limit_ms(kern, layer.shape, ceilings["sgemm_gflops"], ceilings["copy_gbytes_per_s"])
        row["fraction_of_limit"] = row["limit_ms"] / best.median_ms
    return row


def _direct_candidate(layer: Layer, x: np.ndarray, w: np.ndarray, threads: int) -> Candidate:
    """The direct C kernel on one layer (NCHW), writing into one output array."""
    n, c, h, wd, k = layer.shape
    lib = direct_library(w.shape[2])
    s = lib.shape(n, c, h, wd, k, (layer.padding, layer.padding), False, threads)
    work = np.empty(lib.workspace_floats(s), dtype=np.float32)
    y = np.empty((n, k, s.oh, s.ow), dtype=np.float32)

    def run() -> np.ndarray:
        lib.run(s, x.ctypes.data, w.ctypes.data, None, y.ctypes.data, work.ctypes.data)
        return y
    return Candidate(DIRECT, run, None, FP32_BOUND)


def bench_layers(layers: Sequence[Layer], algorithms: Sequence[Algorithm], *, repeats: int = 5,
                 threads: int | None = None, gemm: bool = True, layout: str = "NCHW",
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every layer with every algorithm and the torch baseline; the best correct algorithm per layer
    wins."""
    import torch

    if not algorithms:
        raise InputError("give at least one algorithm to benchmark")
    threads = whole("--threads", threads, 1, 4096) if threads is not None else os.cpu_count() or 1
    repeats = whole("--repeats", repeats, 1, 1000)
    for layer in layers:
        require_memory(conv_bytes(layer.shape, 3, layer.padding) * 2, f"benchmarking layer {layer.shape}")
    torch.set_num_threads(threads)
    info = machine_info()
    try:
        info["compiler"] = compiler_identity(find_compiler())
    except BuildError:
        info["compiler"] = "none"
    ceilings = None
    if gemm:  # the machine's ceilings, measured in this run before the layers
        ceilings = {"sgemm_gflops": sgemm_gflops(threads), "copy_gbytes_per_s": copy_bandwidth(threads),
                    "ukernel_peak_gflops": Kernel(algorithms[0], threads=threads).ukernel_gflops()}
        info.update(ceilings)
    rows = []
    for layer in layers:
        row = _bench_layer(layer, algorithms, repeats, threads, ceilings, layout.upper())
        rows.append(row)
        if progress:
            progress(f"{','.join(layer.names)}: {row['ratio']:.2f}x ({row['algorithm']})")
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result: dict[str, Any] = {
        "machine": {**info, "threads": threads, "load_1min_end": load_end},
        "baseline": {"name": "torch.nn.functional.conv2d", "version": torch.__version__,
                     "memory_format": "channels_last" if layout.upper() == "NHWC" else "contiguous",
                     "backend": "oneDNN (mkldnn)" if torch.backends.mkldnn.is_available() else "native"},
        "timing": settings(repeats, "alternating"),
        "layers": rows,
        "geomean_ratio": geomean_ratio(rows),
        "geomean_auto_ratio": geomean_ratio(rows, "auto_ratio"),
        "geomean_weighting": "every network layer counts once (layers sharing a shape are timed once)",
    }
    return result


def bench_model(name: str, batch: int = 1, repeats: int = 10, threads: int | None = None,
                algorithm: str = "auto", seed: int = 0, progress: Callable[[str], None] | None = None,
                layout: str = "NCHW") -> dict[str, Any]:
    """Whole-model latency of an ImageNet-shaped model built in code (`novagen.models`): torch eager against
    the same model after `novagen.torch.replace_conv2d(model, algorithm, backend="c")`, whose "auto" choices
    are made (and cached) before timing, which BatchNorm, ReLU and max pool modules run inside the kernels
    ("fused") and which other max pools run novagen's C pool ("pools"); outputs checked against torch's.
    layout "NHWC": model and input in channels_last memory, for both (torch's own convolutions and pooling
    are faster so)."""
    import torch

    from novagen.models import example_input, imagenet_model
    from novagen.torch import replace_conv2d

    threads = whole("--threads", threads, 1, 4096) if threads is not None else os.cpu_count() or 1
    torch.set_num_threads(threads)
    say = progress or (lambda message: None)
    layout = check_layout(layout)
    fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
    model = imagenet_model(name, seed).to(memory_format=fmt)
    x = example_input(whole("--batch", batch, 1, 256), seed).contiguous(memory_format=fmt)
    say("choosing a kernel per layer")
    fast, report = replace_conv2d(model, algorithm, backend="c", example_inputs=(x,), return_report=True)
    with torch.inference_mode():
        ref = model(x).numpy()
        say("timing")
        times = measure([Candidate("torch", lambda: model(x), lambda y: y.numpy(), FP32_BOUND),
                         Candidate("novagen", lambda: fast(x), lambda y: y.numpy(), FP32_BOUND)],
                        ref, whole("--repeats", repeats, 1, 1000), order="alternating", keep_outputs=True)
    rows = []
    for key in ("torch", "novagen"):
        t = times[key]
        rows.append({"name": key, "ms": t.median_ms, "min_ms": t.min_ms, "max_ms": t.max_ms,
                     "speedup_vs_torch": times["torch"].median_ms / t.median_ms,
                     "max_rel_error": float(np.abs(t.output - ref).max() / np.abs(ref).max()), "passed": t.passed})
    return {"model": name, "batch": batch, "layout": layout, "machine": {**machine_info(), "threads": threads},
            "rows": rows, "speedup": rows[0]["ms"] / rows[1]["ms"], "choices": report.choices(), "left": report.skipped,
            "fused": report.fused, "not_fused": report.not_fused, "pools": report.pools,
            "timing": settings(repeats, "alternating")}
