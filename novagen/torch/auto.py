"""`algorithm="auto"` for PyTorch: per layer shape, memory format and thread count, the fastest of the
catalog's fp32 algorithms (one per tile size), the direct C kernel (layers with few input channels) and
torch's own conv2d, every candidate's output checked
against float64 first (a wrong one is never chosen), cached on disk by shape, machine and kernel hash.

Two ways to measure.  Given the model and an input (`decide_in_model`, what `replace_conv2d(...,
example_inputs=...)` does), each layer's candidates are timed where they run: inside the model's forward
pass, the layer's own call timed, so its weights, input and neighbours are as they will be.  A layer met
first on its own (`decide`) is timed alone, each run after its weights (w, every U) and the kernel
workspaces leave the caches (MEASUREMENT), the nearest a single layer gets to running inside a model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from novagen.backends.c import kernel_library
from novagen.backends.cacheflush import flush
from novagen.backends.direct import direct_library
from novagen.backends.toolchain import cache_dir
from novagen.files import atomic_write, output_folder
from novagen.timing import (
    FP32_BOUND,
    Candidate,
    Timing,
    fastest,
    machine_info,
    measure,
    relative_error,
    wall_seconds,
)
from novagen.torch.direct import DIRECT
from novagen.version import __version__

TORCH = "torch"
"""The choice that leaves a convolution to torch's own conv2d (oneDNN)."""

CANDIDATES = ("F(2,3)/best", "F(4,3)/best", "F(6,3)/best", "F(7,3)/best")
"""fp32 candidates, one per tile size.  F(7,3) is there because tiles of 7 split 224, 112, 56, 28, 14 and 7
exactly, where F(6,3) computes up to 65% more outputs than the layer has (a 2-core AVX-512 Xeon: ResNet-50's
256@14² at batch 8 2.39 ms against F(6,3)'s 4.1-4.7); F(8,3) stays out (its fp32 error, 1.8e-4 against F(7,3)'s
8e-5 and F(6,3)'s 2e-5, buys little speed over them on these CPUs)."""
REPEATS = 7
MEASUREMENT = "cold weights"
"""Timed hot, F(6,3) won ResNet-18's 512-channel layers by 1.3x and then ran slower than torch inside the
model, where its 4.4x larger U comes from memory."""
IN_MODEL = "in the model"
"""Timed cold, F(4,3) won ResNet-18's 128- and 256-channel layers and ran 1.06-1.2x slower than oneDNN
inside the model (torch profiler); hence timing inside the model whenever a model and input are given."""


def _cache_key(conv: Any, key: tuple[Any, ...]) -> str:
    m = machine_info()
    kernels = sorted(kernel_library(alg).built.key for alg in conv.algorithms.values())
    if DIRECT in conv.candidates:
        kernels.append(direct_library(conv.kernel_size[0], conv.stride).built.key)
    _, bias, relu = conv.kernel_parameters()
    text = json.dumps([list(map(str, key)), list(conv.padding), bias is not None, relu, conv.kernel_pool(),
                       m["cpu"], m["vector"], kernels, torch.__version__, __version__, MEASUREMENT])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cold(conv: Any) -> Any:
    """The timer: one call's seconds, after the conv's resident buffers (`conv.resident()`) leave the caches."""
    def timer(fn: Any) -> float:
        flush(conv.resident())
        return wall_seconds(fn)
    return timer


def decide(conv: Any, x: torch.Tensor) -> dict[str, Any]:
    """The fastest correct candidate for `conv` (a `fast.KernelConv2d`: its algorithms, `key` and `compute`,
    with its fused epilogue) on inputs like `x`, timed alone and cold (see the module docstring): a dict with
    the choice (an algorithm's name, or TORCH), its label, the times in ms, the errors, and the reason."""
    key = conv.key(x)
    path = cache_dir() / "torch-auto" / f"{_cache_key(conv, key)}.json"
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
            if doc["choice"] == TORCH or doc["choice"] in conv.candidates:
                return {**doc, "cached": True}
        except (OSError, ValueError, KeyError):
            pass
    with torch.no_grad():
        xd = x.detach()
        ref = _reference(conv, xd)
        cands = [Candidate(TORCH, lambda: conv.compute(xd, TORCH), lambda y: y.numpy(), FP32_BOUND)]
        cands += [Candidate(name, lambda name=name: conv.compute(xd, name), lambda y: y.numpy(), FP32_BOUND)
                  for name in conv.candidates]
        times = measure(cands, ref, REPEATS, order="alternating", timer=_cold(conv))
    doc = _decision(conv, key, x, times, MEASUREMENT)
    output_folder(path.parent)
    atomic_write(path, json.dumps(doc), overwrite=True)
    return {**doc, "cached": False}


def _decision(conv: Any, key: tuple[Any, ...], x: torch.Tensor, times: dict[str, Any], how: str) -> dict[str, Any]:
    """The decision record of one layer from its candidates' Timings: choice, label, times, errors, reason."""
    labels = conv.candidates
    best = fastest(times)
    choice = TORCH if best is None else best.name
    base = times[TORCH].median_ms
    if choice == TORCH:
        why = f"torch's conv2d {base:.3g} ms beats every Winograd kernel ({how})"
    else:
        why = f"{labels[choice]} {times[choice].median_ms:.3g} ms against torch's {base:.3g} ms ({how})"
    return {"choice": choice, "label": labels.get(choice, TORCH), "shape": [int(v) for v in x.shape],
            "channels_last": bool(key[4]), "threads": int(key[5]), "why": why,
            "times_ms": {labels.get(n, TORCH): t.median_ms for n, t in times.items()},
            "errors": {labels.get(n, TORCH): t.error for n, t in times.items()},
            "failed": [labels.get(n, TORCH) for n, t in times.items() if not t.passed]}


def _reference(conv: Any, x: torch.Tensor) -> np.ndarray:
    """What the layer's kernel call must compute (its conv with the fused epilogue), in float64."""
    w, b, relu = conv.kernel_parameters()
    pool = conv.kernel_pool()
    ref = torch.nn.functional.conv2d(x.double(), w.double(), None if b is None else b.double(), conv.stride,
                                     conv.padding)
    ref = ref.relu() if relu else ref
    return (torch.nn.functional.max_pool2d(ref, pool) if pool else ref).numpy()


def decide_in_model(model: torch.nn.Module, inputs: Sequence[Any], layers: Mapping[str, Any],
                    repeats: int = REPEATS) -> list[str]:
    """Choose for the `fast.KernelConv2d` layers of `model` (by name) that have several candidates, timing
    them inside the model run on `inputs`: each forward pass runs one candidate in every layer (the
    candidates take turns, pass by pass, after one pass each to warm up) and times each layer's call by
    itself.  First the correctness gate, per layer on the input it gets in the model.  Layers called more
    than once per pass are left to `decide`.  The choices are cached on disk for the whole list of layers
    (what a layer costs depends on what runs around it).  Returns the names of the layers decided."""
    convs = {name: m for name, m in layers.items() if m.auto}
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in convs}
    hooks = [m.register_forward_pre_hook(lambda _, args, name=name: seen[name].append(args[0].detach()))
             for name, m in convs.items()]
    try:
        _forward(model, inputs, {name: TORCH for name in convs})
    finally:
        for h in hooks:
            h.remove()
    xs = {name: got[0] for name, got in seen.items() if len(got) == 1}
    if not xs:
        return []
    keys = {name: convs[name].key(x) for name, x in xs.items()}
    path = cache_dir() / "torch-auto" / f"model-{_model_key(convs, keys)}.json"
    docs = _cached_model(path, convs, keys)
    if docs is None:
        docs = _time_in_model(model, inputs, {n: convs[n] for n in xs}, xs, keys, repeats)
        output_folder(path.parent)
        atomic_write(path, json.dumps(docs), overwrite=True)
    for name, doc in docs.items():
        convs[name].choices[keys[name]] = doc["choice"]
        convs[name].decisions.append(doc)
    return list(docs)


def _forward(model: torch.nn.Module, inputs: Sequence[Any], trial: dict[str, str]) -> dict[str, list[float]]:
    """One forward pass with each named layer running its `trial` candidate; the seconds of each layer's call."""
    seconds: dict[str, list[float]] = {name: [] for name in trial}
    mods = dict(model.named_modules())
    for name, choice in trial.items():
        mods[name].trial = (choice, seconds[name])
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for name in trial:
            mods[name].trial = None
    return seconds


def _model_key(convs: dict[str, Any], keys: dict[str, tuple[Any, ...]]) -> str:
    layers = [[name, _cache_key(convs[name], key)] for name, key in keys.items()]
    return hashlib.sha256(json.dumps([layers, IN_MODEL]).encode()).hexdigest()[:32]


def _cached_model(path: Any, convs: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        docs = json.loads(path.read_text())
        if set(docs) == set(keys) and all(d["choice"] == TORCH or d["choice"] in convs[n].candidates
                                          for n, d in docs.items()):
            return {n: {**d, "cached": True} for n, d in docs.items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _time_in_model(model: torch.nn.Module, inputs: Sequence[Any], convs: dict[str, Any],
                   xs: dict[str, torch.Tensor], keys: dict[str, tuple[Any, ...]], repeats: int) -> dict[str, Any]:
    cands = {name: [TORCH, *conv.candidates] for name, conv in convs.items()}
    errors: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for name, conv in convs.items():
            ref = _reference(conv, xs[name])
            errors[name] = {c: relative_error(conv.compute(xs[name], c).numpy(), ref) for c in cands[name]}
    samples: dict[str, dict[str, list[float]]] = {name: {c: [] for c in cands[name]} for name in convs}
    width = max(len(c) for c in cands.values())
    for rnd in range(repeats + 1):
        for turn in range(width):
            j = (turn + rnd) % width  # the order of the candidates changes every round
            trial = {}
            for name, cs in cands.items():
                c = cs[j % len(cs)]
                trial[name] = c if errors[name][c] <= FP32_BOUND else TORCH
            got = _forward(model, inputs, trial)
            if rnd == 0:
                continue  # warm-up round
            for name, c in trial.items():
                samples[name][c].extend(got[name][:1])
    docs = {}
    for name, conv in convs.items():
        times = {c: Timing(c, tuple(s * 1e3 for s in samples[name][c]) or (float("inf"),), errors[name][c],
                           FP32_BOUND) for c in cands[name]}
        docs[name] = {**_decision(conv, keys[name], xs[name], times, IN_MODEL), "cached": False}
    return docs

