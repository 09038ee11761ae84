"""`algorithm="auto"` for PyTorch: per layer shape, memory format and thread count, the fastest of the
catalog's fp32 algorithms (one per tile size) and torch's own conv2d, measured once through the timing
harness (every candidate's output checked against float64 first: a wrong one is never chosen) and cached on
disk by shape, machine and kernel hash.  Each timed run starts with the layer's weights (w, every U) and the
kernel workspaces evicted from the caches (MEASUREMENT), as they are when the layer runs inside a model."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from novagen.backends.c import kernel_library
from novagen.backends.cacheflush import flush
from novagen.backends.toolchain import cache_dir
from novagen.files import atomic_write, output_folder
from novagen.timing import FP32_BOUND, Candidate, fastest, machine_info, measure, wall_seconds
from novagen.version import __version__

TORCH = "torch"
"""The choice that leaves a convolution to torch's own conv2d (oneDNN)."""

CANDIDATES = ("F(2,3)/best", "F(4,3)/best", "F(6,3)/best")
"""fp32 candidates, one per tile size; F(8,3) stays out (its fp32 error, 1e-5 against 1e-6, buys little
speed over F(6,3) on these CPUs)."""
REPEATS = 7
MEASUREMENT = "cold weights"
"""Timed hot, F(6,3) won ResNet-18's 512-channel layers by 1.3x and then ran slower than torch inside the
model, where its 4.4x larger U comes from memory."""


def _cache_key(conv: Any, key: tuple[Any, ...]) -> str:
    m = machine_info()
    kernels = sorted(kernel_library(alg).built.key for alg in conv.algorithms.values())
    text = json.dumps([list(map(str, key)), list(conv.padding), conv.bias is not None, m["cpu"], m["vector"],
                       kernels, torch.__version__, __version__, MEASUREMENT])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cold(conv: Any) -> Any:
    """The timer: one call's seconds, after the conv's resident buffers (`conv.resident()`) leave the caches."""
    def timer(fn: Any) -> float:
        flush(conv.resident())
        return wall_seconds(fn)
    return timer


def decide(conv: Any, x: torch.Tensor) -> dict[str, Any]:
    """The fastest correct candidate for `conv` (a `fast.KernelConv2d`: its algorithms, `key` and `run`) on
    inputs like `x` (see the module docstring): a dict with
    the choice (an algorithm's name, or TORCH), its label, the times in ms, the errors, and the reason."""
    key = conv.key(x)
    path = cache_dir() / "torch-auto" / f"{_cache_key(conv, key)}.json"
    labels = {name: alg.label for name, alg in conv.algorithms.items()}
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
            if doc["choice"] == TORCH or doc["choice"] in conv.algorithms:
                return {**doc, "cached": True}
        except (OSError, ValueError, KeyError):
            pass
    with torch.no_grad():
        xd = x.detach()
        ref = torch.nn.functional.conv2d(xd.double(), conv.weight.double(),
                                         None if conv.bias is None else conv.bias.double(), 1, conv.padding).numpy()
        cands = [Candidate(TORCH, lambda: conv.run(xd, TORCH), lambda y: y.numpy(), FP32_BOUND)]
        cands += [Candidate(name, lambda name=name: conv.run(xd, name), lambda y: y.numpy(), FP32_BOUND)
                  for name in conv.algorithms]
        times = measure(cands, ref, REPEATS, order="alternating", timer=_cold(conv))
    best = fastest(times)
    choice = TORCH if best is None else best.name
    base = times[TORCH].median_ms
    if choice == TORCH:
        why = f"torch's conv2d {base:.3g} ms beats every Winograd kernel ({MEASUREMENT})"
    else:
        why = f"{labels[choice]} {times[choice].median_ms:.3g} ms against torch's {base:.3g} ms ({MEASUREMENT})"
    doc = {"choice": choice, "label": labels.get(choice, TORCH), "shape": [int(v) for v in x.shape],
           "channels_last": bool(key[4]), "threads": int(key[5]), "why": why,
           "times_ms": {labels.get(n, TORCH): t.median_ms for n, t in times.items()},
           "errors": {labels.get(n, TORCH): t.error for n, t in times.items()},
           "failed": [labels.get(n, TORCH) for n, t in times.items() if not t.passed]}
    output_folder(path.parent)
    atomic_write(path, json.dumps(doc), overwrite=True)
    return {**doc, "cached": False}
