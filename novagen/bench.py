"""The C benchmark: generated kernels against torch.nn.functional.conv2d (oneDNN) on this machine.

Timing goes through `novagen.timing`: every output checked against torch's float64 conv2d first (a
kernel off by more than `FP32_BOUND` is listed as failed and never ranked), warm-up excluded, baseline
and candidates alternating within each repeat, medians.  Weights are transformed once before timing (they
are constant at inference), and GFLOP/s count direct-convolution FLOPs (2·N·K·C·OH·OW·r²) for both.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from novagen.algebra import Algorithm
from novagen.backends.c import Kernel, compiler_identity
from novagen.backends.toolchain import BuildError, find_compiler
from novagen.errors import CheckFailed, InputError
from novagen.layers import Layer, conv_bytes, direct_gflop
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

DEFAULT_ALGORITHMS = ("F(2,3)/classic", "F(4,3)/nova", "F(6,3)/nova")


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


def gemm_stage_gflops(kernel: Kernel, x: np.ndarray, w: np.ndarray, repeats: int = 5) -> float:
    """GFLOP/s of the α² channel GEMMs alone (the kernel run with only its GEMM stage), counting the GEMM
    sizes the kernel really computes (`Kernel.gemm_flops`)."""
    kernel(x, w)
    t = statistics.median(wall_seconds(lambda: kernel(x, w, stages=2)) for _ in range(repeats))
    return kernel.gemm_flops() / t / 1e9


def _bench_layer(layer: Layer, algorithms: Sequence[Algorithm], repeats: int, threads: int,
                 gemm: bool, layout: str = "NCHW") -> dict[str, Any]:
    data = torch_layer(layer.shape, layer.padding, layout)
    x, wt, ref = data.x, data.w, data.reference
    kernels = {a.label: Kernel(a, padding=layer.padding, layer=layer.shape, threads=threads, layout=layout)
               for a in algorithms}
    cands = [data.baseline]
    cands += [Candidate(label, lambda kern=kern: kern(x, wt), None, FP32_BOUND) for label, kern in kernels.items()]
    times = measure(cands, ref, repeats, order="alternating", keep_outputs=True)
    base = times["baseline"]
    best = fastest(times, list(kernels))
    if best is None:
        raise CheckFailed(f"every kernel failed its correctness check on layer {layer.shape}: "
                          + ", ".join(f"{n} error {t.error:.2e}" for n, t in times.items() if n != "baseline"))
    gf = direct_gflop(layer.shape, 3, layer.padding)
    y0 = base.output
    row: dict[str, Any] = {
        "layers": list(layer.names), "shape": list(layer.shape), "padding": layer.padding, "layout": layout,
        "algorithm": best.name, "ours_ms": best.median_ms, "baseline_ms": base.median_ms,
        "ratio": base.median_ms / best.median_ms, "ours_gflops": gf / best.median_ms * 1e3,
        "baseline_gflops": gf / base.median_ms * 1e3,
        "candidates_ms": {label: times[label].median_ms for label in kernels},
        "candidates": {name: t.to_dict() for name, t in times.items()},
        "rel_error": {name: t.error for name, t in times.items()},
        "rel_error_vs_baseline": {label: float(np.linalg.norm(times[label].output - y0) / np.linalg.norm(y0))
                                  for label in kernels},
        "failed": [name for name, t in times.items() if not t.passed],
    }
    if gemm:
        row["gemm_stage_gflops"] = gemm_stage_gflops(kernels[best.name], x, wt, repeats=max(3, repeats // 2))
    return row


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
    probe = Kernel(algorithms[0], threads=threads)
    ukernel_peak = probe.ukernel_gflops()
    rows = []
    for layer in layers:
        row = _bench_layer(layer, algorithms, repeats, threads, gemm, layout.upper())
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
        "geomean_weighting": "every network layer counts once (layers sharing a shape are timed once)",
    }
    if gemm:
        peak = sgemm_gflops(threads)
        result["machine"]["sgemm_gflops"] = peak
        result["machine"]["ukernel_peak_gflops"] = ukernel_peak
        for r in rows:
            r["gemm_fraction_of_sgemm"] = r["gemm_stage_gflops"] / peak
            r["gemm_fraction_of_ukernel_peak"] = r["gemm_stage_gflops"] / ukernel_peak
    return result
