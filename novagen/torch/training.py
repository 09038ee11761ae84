"""`finetune`: Winograd-aware fine-tuning of a replaced model, learning exact algorithms.

The model's emulated Winograd convolutions (`replace_conv2d(..., precision=...)`) become training
surrogates (`novagen.torch.learned`) that share one `LearnedPoints` per algorithm, so the network learns one
algorithm per tile size; the whole network trains with Adam (its weights at `lr`, the points and balancing
at `lr_points`; constant, or with `schedule="cosine"` both decay to zero over the run), rounding straight
through.  Then the points are snapped to rationals, moved on the lattice while that lowers the loss measured
by the exact emulator, verified, and the layers become emulated Winograd convolutions of the learned
algorithm again (recalibrated when calibration data is given).

`learn=("matrices",)` is the comparison only: AT, G and BT train as free parameters (`learned.FreeMatrices`),
nothing is snapped or proven, and the layers stay the trained surrogates (report.unverified)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from novagen.algebra import Algorithm
from novagen.errors import InputError
from novagen.torch.emulated import WinogradConv2d
from novagen.torch.learned import (
    FreeMatrices,
    LearnedPoints,
    LearnedWinogradConv2d,
    learnable,
    learned_algorithm,
    learned_balancing,
)
from novagen.torch.replace import set_submodule

_SURROGATE = {"fp32": "fp32", "fp16": "fp16", "fp16-pure": "fp16", "bf16": "bf16", "bf16-pure": "bf16",
              "int8": "int8", "int8-tap": "int8-tap"}


@dataclass
class FinetuneReport:
    """What fine-tuning learned: per starting algorithm, the learned (verified) one and its points."""

    algorithms: dict[str, Algorithm] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0                                          # optimizer steps taken
    skipped: int = 0                                        # steps skipped for a non-finite loss or gradient
    diverged: list[str] = field(default_factory=list)       # algorithms whose points left the finite numbers
    balancing: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)  # learned log2 row scales
    unverified: list[str] = field(default_factory=list)     # learned as free matrices: no exact algorithm

    @property
    def stalled(self) -> str | None:
        """Why nothing was learned when no step was taken, else None."""
        if self.steps or not self.skipped:
            return None
        return (f"fine-tuning took no step: all {self.skipped} batches gave a non-finite loss or gradient (the "
                "emulated layers overflow); the layers keep the algorithms they started from")

    def rows(self) -> list[dict[str, Any]]:
        exact = [{"from": src, "learned": alg.label, "points": [str(p) for p in alg.finite_points or ()],
                  "hash": alg.content_hash, "diverged": src in self.diverged, "verified": True}
                 for src, alg in self.algorithms.items()]
        free = [{"from": src, "learned": "free matrices", "points": [], "hash": None, "diverged": False,
                 "verified": False} for src in self.unverified]
        return exact + free


CLIP_POINTS = 1.0
"""Largest gradient norm of an algorithm's parameters per step: points move a little at a time, so two
never jump across each other (Cook–Toom needs them distinct)."""


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda t, total: 1.0,
    "cosine": lambda t, total: 0.5 * (1 + math.cos(math.pi * min(t, total) / max(total, 1))),
}
"""Learning-rate factor after t of `total` batches."""


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          algo_params: list[torch.Tensor], others: list[torch.Tensor]) -> float | None:
    """One optimizer step on a batch: its loss, or None (no step) when the loss or a gradient is not finite."""
    loss = F.cross_entropy(model(x), y)
    if not torch.isfinite(loss):
        return None
    loss.backward()
    if algo_params:
        torch.nn.utils.clip_grad_norm_(algo_params, CLIP_POINTS)
    if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in algo_params + others):
        return None
    opt.step()
    return loss.item()


def _conv_like(mod: WinogradConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(mod.in_channels, mod.out_channels, mod.kernel_size, padding=tuple(p for p, _ in mod.padding),
                     bias=mod.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(mod.weight)
        if mod.bias is not None:
            conv.bias.copy_(mod.bias)
    return conv


def _examples(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) from a pair of tensors or from batches of (input, label) pairs, as a DataLoader gives."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0], data[1]
    try:
        pairs = [(b[0], b[1]) for b in data]
    except (TypeError, IndexError, KeyError):
        raise InputError("fine-tuning data must be (inputs, labels) tensors or batches of (input, label) pairs, "
                         f"not {type(data).__name__}") from None
    if not pairs:
        raise InputError("fine-tuning data is empty")
    return torch.cat([torch.as_tensor(p[0]) for p in pairs]), torch.cat([torch.as_tensor(p[1]) for p in pairs])


def finetune(model: nn.Module, data: Any, epochs: int = 3,
             learn: Sequence[str] = ("points", "scales"), lr: float = 3e-4, lr_points: float = 2e-3, batch: int = 64,
             seed: int = 0, max_denominator: int = 16, calibrate: Any = None, calibrate_method: str = "percentile",
             label: str | None = None, progress: Callable[[str], None] | None = None,
             schedule: str = "constant") -> FinetuneReport:
    """Fine-tune `model` (in place) on (inputs, labels) tensors or a DataLoader of such batches (reshuffled here
    into batches of `batch`), learning its Winograd algorithms (see the module docstring); returns what was
    learned."""
    from novagen.torch.scales import calibrate as run_calibration

    if schedule not in SCHEDULES:
        raise InputError(f"schedule '{schedule}' is not one of {', '.join(SCHEDULES)}")
    if not (lr > 0 and lr_points > 0 and math.isfinite(lr) and math.isfinite(lr_points)):
        raise InputError(f"learning rates must be positive and finite (lr {lr}, lr_points {lr_points})")
    start = time.monotonic()
    x, y = _examples(data)
    mods = {name: m for name, m in model.named_modules() if isinstance(m, WinogradConv2d)}
    if not mods:
        raise InputError("nothing to fine-tune: no emulated Winograd convolution (replace_conv2d(model, alg, "
                         "precision=...) first)")
    report = FinetuneReport()
    shared: dict[str, LearnedPoints | FreeMatrices] = {}
    surrogates: dict[str, LearnedWinogradConv2d] = {}
    for name, mod in mods.items():
        a0, a1 = mod.algs
        if a0 != a1:
            raise InputError(f"{name}: fine-tuning learns one 1D algorithm nested on both axes")
        prec = _SURROGATE.get(mod.policy.name)
        if prec is None:
            raise InputError(f"{name}: precision {mod.policy.name} has no training surrogate ({', '.join(_SURROGATE)})")
        pts = shared.setdefault(mod.algorithm_label, learnable(a0, learn))
        surrogates[name] = LearnedWinogradConv2d(_conv_like(mod), pts, prec)
        set_submodule(model, name, surrogates[name])
        report.layers[name] = mod.algorithm_label
    policies = {name: mods[name].policy for name in mods}
    algo_params = [p for lp in shared.values() for p in lp.parameters() if p.requires_grad]
    ids = {id(p) for p in algo_params}
    others = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    groups = [{"params": others, "lr": lr}] + ([{"params": algo_params, "lr": lr_points}] if algo_params else [])
    opt = torch.optim.Adam(groups)
    total_batches = epochs * math.ceil(len(y) / batch)
    base_rates = [group["lr"] for group in opt.param_groups]
    batches = 0
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        total, count = 0.0, 0
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            for group, rate in zip(opt.param_groups, base_rates):  # by batch, skipped or not: reproducible
                group["lr"] = rate * SCHEDULES[schedule](batches, total_batches)
            batches += 1
            loss = _step(model, opt, x[idx], y[idx], algo_params, others)
            if loss is None:  # an overflowing batch (fp16, colliding points): its step was skipped
                report.skipped += 1
                continue
            report.steps += 1
            total, count = total + loss * len(idx), count + len(idx)
        report.losses.append(total / count if count else float("nan"))
        if progress:
            progress(f"epoch {epoch + 1}/{epochs}: loss {report.losses[-1]:.4f}")
    model.eval()
    if "matrices" in learn:  # the comparison: the layers keep the trained surrogates, nothing is proven
        report.unverified = list(shared)
        report.seconds = time.monotonic() - start
        return report
    probe = slice(0, min(len(y), 256))

    def restore(algs: dict[str, Algorithm]) -> None:
        for name, sur in surrogates.items():
            new = WinogradConv2d.from_conv(_conv_like_surrogate(sur), algs[report.layers[name]], policies[name])
            set_submodule(model, name, new)

    def loss_with(src: str, alg: Algorithm) -> float:
        trial = {k: (alg if k == src else learned.get(k, v.source)) for k, v in shared.items()}
        restore(trial)  # scored by the exact emulator (dynamic scales: calibration comes once, at the end)
        with torch.no_grad():
            return float(F.cross_entropy(model(x[probe]), y[probe]))

    learned: dict[str, Algorithm] = {}
    if report.steps == 0:  # nothing trained: the layers keep their algorithms (callers say so; see `stalled`)
        restore({src: lp.source for src, lp in shared.items()})
        if calibrate is not None:
            run_calibration(model, calibrate, calibrate_method, seed=seed)
        report.seconds = time.monotonic() - start
        return report
    for src, lp in shared.items():
        if not all(torch.isfinite(p).all() for p in lp.parameters()):
            report.diverged.append(src)  # keep the algorithm it started from
            learned[src] = lp.source
            continue
        if progress:
            progress(f"snapping and verifying the points learned from {src}")
        spec = f"F({lp.m},{lp.r})"
        name = f"{spec}/{label or 'learned'}"
        learned[src] = learned_algorithm(lp, max_denominator, lambda alg, src=src: loss_with(src, alg), name)
        report.balancing[src] = learned_balancing(lp)
    restore(learned)
    if calibrate is not None:
        run_calibration(model, calibrate, calibrate_method, seed=seed)
    report.algorithms = learned
    report.seconds = time.monotonic() - start
    return report


def _conv_like_surrogate(sur: LearnedWinogradConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(sur.weight.shape[1], sur.weight.shape[0], sur.r, padding=sur.padding, bias=sur.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(sur.weight)
        if sur.bias is not None:
            conv.bias.copy_(sur.bias)
    return conv
