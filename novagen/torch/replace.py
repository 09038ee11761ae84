"""`replace_conv2d`: one call that swaps a model's eligible convolutions, emulated or fast."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from novagen.accuracy import DIRECT, axes_2d, resolve_algorithm
from novagen.algebra import Algorithm, AnyAlgorithm
from novagen.catalog import algorithm as catalog_algorithm
from novagen.errors import InputError
from novagen.precision import Policy, policy
from novagen.torch.direct import ineligible as direct_ineligible
from novagen.torch.emulated import DirectConv2d, Replacement, WinogradConv2d, ineligible
from novagen.torch.epilogue import fuse_epilogues
from novagen.torch.fast import KernelConv2d
from novagen.torch.pool import KernelMaxPool2d
from novagen.torch.pool import ineligible as pool_ineligible

BACKENDS = ("emulate", "c")


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` at the dotted path `name` of `root` (replacing what is there)."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _fast_algorithms(algorithm: str | AnyAlgorithm) -> list[Algorithm]:
    from novagen.torch.auto import CANDIDATES

    if isinstance(algorithm, str) and algorithm.strip().lower() == "auto":
        return [catalog_algorithm(name) for name in CANDIDATES]  # type: ignore[misc]
    resolved = resolve_algorithm(algorithm)
    if resolved == DIRECT or not isinstance(resolved, Algorithm):
        raise InputError(f"backend 'c' runs a 1D algorithm (nested on both axes) or 'auto', not {algorithm!r}")
    return [resolved]


def _replace_pools(model: nn.Module, report: Replacement) -> None:
    """Every plain MaxPool2d of `model` (not fused into a conv) as a KernelMaxPool2d, in place."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.MaxPool2d) and pool_ineligible(mod) is None:
            set_submodule(model, name, KernelMaxPool2d.from_pool(mod))
            report.pools.append(name)


def replace_conv2d(model: nn.Module, algorithm: str | AnyAlgorithm, precision: str | Policy = "fp32", *,
                   backend: str = "emulate", others: str = "keep", inplace: bool = False,
                   example_inputs: Sequence[Any] | None = None, calibrate: Any = None,
                   calibrate_method: str = "percentile", fuse: bool = True, pools: bool = True,
                   return_report: bool = False) -> Any:
    """A copy of `model` whose eligible 3×3 stride-1 convolutions (groups 1, zero padding) run novagen's.

    backend "emulate": `algorithm` (or "direct", the precision baseline) under `precision`, emulated
    (accuracy studies); ineligible convolutions are left alone (others="keep") or computed directly in the
    same precision (others="direct").

    backend "c": the generated C kernel (fp32) as a PyTorch operator, `algorithm` one algorithm or "auto":
    per layer, the fastest of the catalog's fp32 algorithms, the direct C kernel (layers of up to 16 input
    channels; with "auto" also the strided stems no Winograd kernel takes) and torch's own conv2d, measured on
    the first call with each input shape, or at once and inside the model when `example_inputs` are given (the
    model is run on them: `novagen.torch.auto.decide_in_model`).  With `fuse`, the BatchNorm2d, ReLU and 2×2 stride-2
    MaxPool2d modules that only a replaced conv feeds run inside it (`novagen.torch.epilogue`; the model keeps
    its structure and state-dict keys).  With `pools`, every other MaxPool2d runs novagen's C max pool on
    NCHW inputs (`novagen.torch.pool`: torch's is ~10x slower there than on channels_last).

    With `calibrate` (input batches, a tensor of inputs, or (input, label) pairs), the int8/fp8 stages get
    static scales calibrated on that data (`novagen.torch.calibrate`).  The report
    (`model.novagen_replacement`, or returned with `return_report=True`) lists what was replaced and what was
    left, what was fused, for "auto" what each layer chose, and the calibrated scales.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend '{backend}' is not known: use {' or '.join(BACKENDS)}")
    if others not in ("keep", "direct"):
        raise InputError(f"others='{others}' is not understood: use 'keep' or 'direct'")
    out = model if inplace else copy.deepcopy(model)
    report = Replacement(model=out)
    if backend == "c":
        if policy(precision).name != "fp32":
            raise InputError(f"backend 'c' computes in fp32; precision {precision!r} is emulated with backend "
                             "'emulate'")
        if others != "keep":
            raise InputError("backend 'c' leaves other convolutions to torch (others='keep')")
        algs = _fast_algorithms(algorithm)
        auto = len(algs) > 1
        for name, mod in list(out.named_modules()):
            if not isinstance(mod, nn.Conv2d):
                continue
            reason = ineligible(mod, (algs[0].r, algs[0].r))
            if reason is None or (auto and direct_ineligible(mod) is None):  # auto: the direct kernel takes more
                set_submodule(out, name, KernelConv2d(mod, algs if reason is None else [], direct=auto))
                report.replaced.append(name)
            else:
                report.skipped.append((name, reason))
        if fuse and report.replaced:
            report.fused, report.not_fused = fuse_epilogues(out)
        if pools:
            _replace_pools(out, report)
        out.novagen_replacement = report  # type: ignore[assignment]
        if example_inputs is not None:
            if not out.training:  # timed where each layer runs (train mode would move BatchNorm statistics)
                from novagen.torch.auto import decide_in_model

                decide_in_model(out, example_inputs, {name: out.get_submodule(name) for name in report.replaced})
            with torch.no_grad():
                out(*example_inputs)
        return (out, report) if return_report else out
    resolved = resolve_algorithm(algorithm)
    pol = policy(precision)
    kernel = (3, 3) if resolved == DIRECT else tuple(a.r for a in axes_2d(resolved))  # type: ignore[arg-type]
    for name, mod in list(out.named_modules()):
        if not isinstance(mod, nn.Conv2d):
            continue
        reason = ineligible(mod, kernel)  # type: ignore[arg-type]
        if reason is None:
            new: nn.Module = (DirectConv2d.from_conv(mod, pol) if resolved == DIRECT
                              else WinogradConv2d.from_conv(mod, resolved, pol))  # type: ignore[arg-type]
            report.replaced.append(name)
        else:
            report.skipped.append((name, reason))
            if others == "keep":
                continue
            new = DirectConv2d.from_conv(mod, pol)
        set_submodule(out, name, new)
    if calibrate is not None:
        from novagen.torch.scales import calibrate as run_calibration

        report.scales = run_calibration(out, calibrate, calibrate_method)
    out.novagen_replacement = report  # type: ignore[assignment]
    return (out, report) if return_report else out
