"""One timing harness for every benchmark (the C kernels, TVM modules, CUDA kernels).

Every candidate is run once and its output compared with a reference (float64 direct convolution, or the
baseline's output); a candidate whose relative error exceeds its bound is marked failed and is never ranked.
Each candidate is timed `repeats` times after `warmup` untimed runs, either alternating between candidates
within each repeat (fair to all when they do not disturb each other), in one block per candidate, checked
and timed before the next one runs at all (when one runtime's thread pool slows the next call of another, as
TVM's does to torch's), or in rounds of blocks: the repeats split over up to ROUNDS rounds, each round a
block per candidate that starts with `warmup` untimed runs.  Rounds keep what blocks protect against and
spread every candidate over the whole measurement, so a slow spell of a shared machine (on a VM here, one
tuned ResNet-18 ran 22-33 ms from call to call) falls on all of them rather than on whichever block it hit.
Medians are reported, with the minimum and maximum beside them.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from novagen.errors import InputError

ORDERS = ("alternating", "blocks", "rounds")
ROUNDS = 5
"""Rounds of the "rounds" order (fewer when there are fewer repeats)."""
FP32_BOUND = 1e-3
"""Largest relative L2 error against float64 a float32 kernel may have before it counts as wrong: Winograd
in fp32 stays below 1e-5 for the catalog's sets up to F(8,3); a wrong kernel is off by O(1)."""
FP16_BOUND = 0.1
"""The same for fp16 storage: real fp16 error is measured by the accuracy lab; this only catches wrong
results."""


def wall_seconds(fn: Callable[[], Any]) -> float:
    """Seconds one call of `fn` takes on the wall clock (the timer of CPU benchmarks)."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def relative_error(y: Any, ref: np.ndarray) -> float:
    """‖y − ref‖ / ‖ref‖ in float64; inf when y has a non-finite value or the wrong shape."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape != ref.shape or not np.all(np.isfinite(y)):
        return math.inf
    den = float(np.linalg.norm(ref))
    num = float(np.linalg.norm(y - ref))
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


@dataclass(frozen=True)
class Candidate:
    """Something to time: `run()` does one call; `output(run())` gives the array the gate compares with the
    reference (default: the return value as it is); `bound` is the largest relative error accepted."""

    name: str
    run: Callable[[], Any]
    output: Callable[[Any], Any] | None = None
    bound: float = math.inf


@dataclass(frozen=True)
class Timing:
    """A candidate's measurement: samples in ms, its error against the reference, and the gate's verdict."""

    name: str
    samples_ms: tuple[float, ...]
    error: float | None
    bound: float
    output: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)

    @property
    def passed(self) -> bool:
        """No reference, or an error within the bound."""
        return self.error is None or (math.isfinite(self.error) and self.error <= self.bound)

    def to_dict(self) -> dict[str, Any]:
        def num(v: float | None) -> float | None:
            return v if v is None or math.isfinite(v) else None

        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms, "error": num(self.error),
                "bound": num(self.bound), "passed": self.passed}


def measure(candidates: Sequence[Candidate], reference: np.ndarray | None = None, repeats: int = 5,
            order: str = "alternating", warmup: int = 1,
            timer: Callable[[Callable[[], Any]], float] = wall_seconds, keep_outputs: bool = False,
            settle: float = 0.0) -> dict[str, Timing]:
    """Time every candidate (see the module docstring); `timer(fn)` returns the seconds of one call;
    `keep_outputs` keeps each candidate's checked output (as float64) in its Timing; `settle`: seconds of
    idle before each block of the "rounds" order, for the previous candidate's thread pool to go to sleep."""
    if repeats < 1:
        raise InputError(f"repeats {repeats} must be at least 1")
    if order not in ORDERS:
        raise InputError(f"order '{order}' is not known: use {' or '.join(ORDERS)}")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise InputError(f"candidate names must differ: {names}")
    errors: dict[str, float | None] = {}
    outputs: dict[str, np.ndarray | None] = {}
    samples: dict[str, list[float]] = {c.name: [] for c in candidates}

    def check(c: Candidate) -> None:
        y = c.run()
        y = np.asarray(c.output(y) if c.output else y, dtype=np.float64)
        errors[c.name] = None if reference is None else relative_error(y, reference)
        outputs[c.name] = y if keep_outputs else None

    if order == "alternating":
        for c in candidates:
            check(c)
            for _ in range(warmup):
                c.run()
        for _ in range(repeats):
            for c in candidates:
                samples[c.name].append(timer(c.run))
    elif order == "blocks":  # each candidate checked, warmed up and timed before the next one runs at all
        for c in candidates:
            check(c)
            for _ in range(warmup):
                c.run()
            samples[c.name] = [timer(c.run) for _ in range(repeats)]
    else:  # rounds of blocks, each block warmed up again after the other candidates ran
        for c in candidates:
            check(c)
        rounds = min(ROUNDS, repeats)
        for r in range(rounds):
            for c in candidates:
                time.sleep(settle)
                for _ in range(warmup):
                    c.run()
                samples[c.name] += [timer(c.run) for _ in range(repeats * (r + 1) // rounds - repeats * r // rounds)]
    return {c.name: Timing(c.name, tuple(s * 1e3 for s in samples[c.name]), errors[c.name], c.bound,
                           outputs[c.name]) for c in candidates}


def fastest(timings: Mapping[str, Timing], among: Sequence[str] | None = None) -> Timing | None:
    """The passing candidate with the lowest median (of `among` when given); failed ones are never ranked."""
    pool = [t for name, t in timings.items() if (among is None or name in among) and t.passed]
    return min(pool, key=lambda t: t.median_ms, default=None)


def settings(repeats: int, order: str, warmup: int = 1) -> dict[str, Any]:
    """How a benchmark timed: the `timing` object of its JSON."""
    rounds = order == "rounds"
    return {"repeats": repeats, "statistic": "median (min, max beside it)",
            "warmup": f"{warmup} run(s) excluded" + (" per block" if rounds else ""),
            "order": f"{order} ({min(ROUNDS, repeats)})" if rounds else order,
            "weights": "transformed once before timing",
            "correctness": "each candidate's output checked against the reference first; failed ones not ranked"}


def geomean_ratio(rows: Sequence[Mapping[str, Any]], key: str = "ratio") -> float:
    """Geometric mean of rows[key], each row counting once per network layer it stands for."""
    weights = [len(r["layers"]) for r in rows]
    return math.exp(sum(wi * math.log(r[key]) for wi, r in zip(weights, rows)) / sum(weights))


def machine_info() -> dict[str, Any]:
    """The CPU, its cores and vector extensions, and the load: what every benchmark prints beside its numbers."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for ln in fh:
                if ln.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                    cpu = ln.split(":", 1)[1].strip()
                elif ln.startswith("flags") and not flags:
                    flags = set(ln.split(":", 1)[1].split())
    except OSError:
        pass
    vector = [f for f in ("avx512f", "avx2", "fma", "neon") if f in flags]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "vector": vector, "load_1min": load}


@dataclass(frozen=True)
class TorchLayer:
    """A conv layer's benchmark operands: x in the layout (NumPy), w (K, C, 3, 3), the torch baseline
    (oneDNN conv2d; channels_last for NHWC) as a Candidate, and the float64 reference in the layout."""

    x: np.ndarray
    w: np.ndarray
    baseline: Candidate
    reference: np.ndarray


def torch_layer(shape: Sequence[int], padding: int = 1, layout: str = "NCHW", seed: int = 0) -> TorchLayer:
    """Seeded operands of one layer, the torch.conv2d baseline and its float64 reference (torch extra)."""
    import torch

    n, c, h, w, k = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c, 3, 3)) / math.sqrt(9 * c)).astype(np.float32)
    xt, wtt = torch.from_numpy(x), torch.from_numpy(wt)
    ref = torch.nn.functional.conv2d(xt.double(), wtt.double(), padding=padding)
    output: Callable[[Any], Any] = lambda y: y.numpy()  # noqa: E731
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        xt = torch.from_numpy(x).permute(0, 3, 1, 2)
        wtt = wtt.contiguous(memory_format=torch.channels_last)
        ref = ref.permute(0, 2, 3, 1)
        output = lambda y: y.permute(0, 2, 3, 1).numpy()  # noqa: E731
    baseline = Candidate("baseline", lambda: torch.nn.functional.conv2d(xt, wtt, padding=padding), output,
                         FP32_BOUND)
    return TorchLayer(x, wt, baseline, ref.contiguous().numpy())
