"""Benchmarks: the generated kernel against torch.nn.functional.conv2d (oneDNN) on this machine.

Timing alternates the baseline and every candidate algorithm within each repeat, excludes a warm-up
call of each, and reports medians; weights are transformed once before timing (they are constant at
inference), and GFLOP/s count direct-convolution FLOPs (2·N·K·C·OH·OW·r²) for both.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from novagen.algebra import Algorithm
from novagen.backends.c import Kernel, compiler_identity, find_compiler
from novagen.errors import InputError

VGG16 = (
    ("conv1_1", 3, 224, 64), ("conv1_2", 64, 224, 64),
    ("conv2_1", 64, 112, 128), ("conv2_2", 128, 112, 128),
    ("conv3_1", 128, 56, 256), ("conv3_2", 256, 56, 256), ("conv3_3", 256, 56, 256),
    ("conv4_1", 256, 28, 512), ("conv4_2", 512, 28, 512), ("conv4_3", 512, 28, 512),
    ("conv5_1", 512, 14, 512), ("conv5_2", 512, 14, 512), ("conv5_3", 512, 14, 512),
)
# ResNet-18 at 224×224: the 3×3 stride-1 convs (torchvision names); the stride-2 first conv of layer2–4
# and the 7×7 stem are left out.
RESNET18 = (
    ("layer1.0.conv1", 64, 56, 64), ("layer1.0.conv2", 64, 56, 64),
    ("layer1.1.conv1", 64, 56, 64), ("layer1.1.conv2", 64, 56, 64),
    ("layer2.0.conv2", 128, 28, 128), ("layer2.1.conv1", 128, 28, 128), ("layer2.1.conv2", 128, 28, 128),
    ("layer3.0.conv2", 256, 14, 256), ("layer3.1.conv1", 256, 14, 256), ("layer3.1.conv2", 256, 14, 256),
    ("layer4.0.conv2", 512, 7, 512), ("layer4.1.conv1", 512, 7, 512), ("layer4.1.conv2", 512, 7, 512),
)
NETWORKS = {"vgg16": VGG16, "resnet18": RESNET18}
DEFAULT_ALGORITHMS = ("F(2,3)/classic", "F(4,3)/nova", "F(6,3)/nova")


@dataclass(frozen=True)
class Layer:
    """A 3×3-style conv layer: names of the network layers that share the shape, and (N, C, H, W, K)."""

    names: tuple[str, ...]
    shape: tuple[int, int, int, int, int]
    padding: int = 1


def network_layers(network: str, batch: int = 1) -> list[Layer]:
    """The distinct conv shapes of a network (layers of the same shape grouped, in order)."""
    if network not in NETWORKS:
        raise InputError(f"network '{network}' is not known: use one of {', '.join(NETWORKS)}")
    if batch < 1:
        raise InputError(f"batch {batch} must be at least 1")
    groups: dict[tuple[int, ...], list[str]] = {}
    for name, c, hw, k in NETWORKS[network]:
        groups.setdefault((batch, c, hw, hw, k), []).append(name)
    return [Layer(tuple(names), shape) for shape, names in groups.items()]  # type: ignore[arg-type]


def direct_gflop(shape: Sequence[int], r: int = 3, padding: int = 1) -> float:
    n, c, h, w, k = shape
    oh, ow = h + 2 * padding - r + 1, w + 2 * padding - r + 1
    return 2.0 * n * k * c * oh * ow * r * r / 1e9


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        compiler = compiler_identity(find_compiler())
    except Exception:
        compiler = "none"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "compiler": compiler, "load_1min": load}


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _time(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def geomean_ratio(rows: Sequence[dict[str, Any]]) -> float:
    """Geometric mean of the per-row ratios, each row counting once per network layer it stands for."""
    weights = [len(r["layers"]) for r in rows]
    return math.exp(sum(wi * math.log(r["ratio"]) for wi, r in zip(weights, rows)) / sum(weights))


def timing(repeats: int, order: str = "alternating") -> dict[str, Any]:
    """How every benchmark here times: the `timing` object of its JSON."""
    return {"repeats": repeats, "statistic": "median", "warmup": "excluded", "order": order,
            "weights": "transformed once before timing"}


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
                best = max(best, 2.0 * n ** 3 / min(_time(mm) for _ in range(repeats)) / 1e9)
    return best


def gemm_stage_gflops(kernel: Kernel, x: np.ndarray, w: np.ndarray, repeats: int = 5) -> float:
    """GFLOP/s of the α² channel GEMMs alone (the kernel run with only its GEMM stage), counting
    the GEMM sizes the kernel really computes (tiles and K padded to its blocks, C as given)."""
    alg = kernel.algorithm
    kernel(x, w)
    s = kernel._shape
    assert s is not None
    s.stages = 2
    try:
        t = statistics.median(_time(lambda: kernel(x, w)) for _ in range(repeats))
    finally:
        s.stages = 7
    tiles = s.n * math.ceil(s.oh / alg.m) * math.ceil(s.ow / alg.m)
    tb = kernel._fn("tile_block")(kernel._shape_ref())
    padded_tiles = math.ceil(tiles / tb) * tb
    flops = 2.0 * alg.alpha ** 2 * padded_tiles * s.c * (-(-s.k // 16) * 16)
    return flops / t / 1e9


def _bench_layer(layer: Layer, algorithms: Sequence[Algorithm], repeats: int, threads: int,
                 gemm: bool, layout: str = "NCHW") -> dict[str, Any]:
    import torch

    n, c, h, w, k = layer.shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c, 3, 3)) / math.sqrt(9 * c)).astype(np.float32)
    xt, wtt = torch.from_numpy(x), torch.from_numpy(wt)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        xt = torch.from_numpy(x).permute(0, 3, 1, 2)
        wtt = wtt.contiguous(memory_format=torch.channels_last)
    kernels = {a.label: Kernel(a, padding=layer.padding, layer=layer.shape, threads=threads, layout=layout)
               for a in algorithms}

    def baseline() -> Any:
        return torch.nn.functional.conv2d(xt, wtt, padding=layer.padding)

    ref = baseline()
    ref = (ref.permute(0, 2, 3, 1) if layout == "NHWC" else ref).contiguous().numpy()
    errors = {}
    for label, kern in kernels.items():
        y = kern(x, wt)
        errors[label] = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    samples: dict[str, list[float]] = {"baseline": [], **{label: [] for label in kernels}}
    for _ in range(repeats):
        samples["baseline"].append(_time(baseline))
        for label, kern in kernels.items():
            samples[label].append(_time(lambda kern=kern: kern(x, wt)))
    base_ms = _median_ms(samples["baseline"])
    cand = {label: _median_ms(samples[label]) for label in kernels}
    best = min(cand, key=cand.__getitem__)
    gf = direct_gflop(layer.shape, 3, layer.padding)
    row: dict[str, Any] = {
        "layers": list(layer.names), "shape": list(layer.shape), "padding": layer.padding, "layout": layout,
        "algorithm": best, "ours_ms": cand[best], "baseline_ms": base_ms, "ratio": base_ms / cand[best],
        "ours_gflops": gf / cand[best] * 1e3, "baseline_gflops": gf / base_ms * 1e3,
        "candidates_ms": cand, "rel_error_vs_baseline": errors,
    }
    if gemm:
        row["gemm_stage_gflops"] = gemm_stage_gflops(kernels[best], x, wt, repeats=max(3, repeats // 2))
    return row


def bench_layers(layers: Sequence[Layer], algorithms: Sequence[Algorithm], *, repeats: int = 5,
                 threads: int | None = None, gemm: bool = True, layout: str = "NCHW",
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every layer with every algorithm and the torch baseline; the best algorithm per layer wins."""
    import torch

    if not algorithms:
        raise InputError("give at least one algorithm to benchmark")
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    info = machine_info()
    probe = Kernel(algorithms[0], threads=threads)
    ukernel_peak = probe.ukernel_gflops()
    rows = []
    for layer in layers:
        row = _bench_layer(layer, algorithms, repeats, threads, gemm, layout.upper())
        rows.append(row)
        if progress:
            progress(f"{','.join(layer.names)}: {row['ratio']:.2f}x ({row['algorithm']})")
    geo = geomean_ratio(rows)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result: dict[str, Any] = {
        "machine": {**info, "threads": threads, "load_1min_end": load_end},
        "baseline": {"name": "torch.nn.functional.conv2d", "version": torch.__version__,
                     "memory_format": "channels_last" if layout.upper() == "NHWC" else "contiguous",
                     "backend": "oneDNN (mkldnn)" if torch.backends.mkldnn.is_available() else "native"},
        "timing": timing(repeats),
        "layers": rows,
        "geomean_ratio": geo,
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
