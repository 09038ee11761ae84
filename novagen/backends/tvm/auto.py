"""`algorithm="auto"`: per convolution, the fastest of the catalog's algorithms (one per tile size) on the
target, among those accurate enough for the model's precision, or TVM's own conv2d when it is faster or the
layer is too thin for Winograd to pay; measured once and cached by shape, target, algorithms and records.

Each candidate runs as it would be compiled now: its record in a tuning database when one is given and holds
it (`novagen tune ALG|direct --layer ... --db`), else its default: our rule's hand-written schedule, and for
TVM's conv2d its default pipeline, which on llvm has no schedule at all (149 ms on a ResNet-18 layer our
default runs in 0.85 ms), so on real layers TVM's conv wins only tuned; the reason says which each was."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from novagen.backends.toolchain import cache_dir
from novagen.backends.tvm.spec import DirectSpec, TVMError, load_tvm, make_spec
from novagen.backends.tvm.targets import host_target
from novagen.files import atomic_write, output_folder
from novagen.version import __version__

CANDIDATES = ("F(2,3)/best", "F(4,3)/best", "F(6,3)/best", "F(8,3)/best")
"""One algorithm per tile size, the catalog's most accurate (measured fp16 error) for each."""
FP16_FACTOR = 20.0
"""fp16 models: an algorithm qualifies when its measured fp16 error is within this factor of the direct
convolution's on the layer (F(2..6,3)/best do on realistic data; F(8,3)/best, 90x, does not)."""
DIRECT = "direct"
NOVAGEN_DIRECT = "novagen direct"
"""novagen's direct kernel (`compute.direct_compute`), the candidate for layers too thin for Winograd."""
MEASUREMENT = "cold weights, interleaved"
"""How candidates are timed: each run after the caches are flushed of everything but the input, since in a
whole model the previous layer has just written the input while the weights come from memory (timed hot,
F(8,3) won the 256- and 512-channel layers of ResNet-18, 0.65 ms, and then took 1.9-5.4 ms in the model);
candidates take turns in rounds (timed one after another, a slow spell of the VM once made F(2,3) win a
layer where F(4,3) runs 0.66 ms a call against 0.98)."""
REPEATS = 10
ROUNDS = 5


@dataclass(frozen=True)
class Choice:
    """What `auto` chose for one convolution and why: the algorithm (or "direct": left to TVM), each
    candidate's measured time in ms, the candidates refused for accuracy, and whether it came from the cache."""

    algorithm: str
    reason: str
    times_ms: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    tuned: tuple[str, ...] = ()
    """The candidates timed with their record from the tuning database."""


def _records(tuned: dict[str, Any]) -> dict[str, str]:
    """A content hash of each tuned record, so that a new record measures again."""
    return {name: hashlib.sha256(mod.script().encode()).hexdigest() for name, mod in sorted(tuned.items())}


def _cache_path(prefix: str, *parts: Any) -> Path:
    """The cache file of one choice: keyed by `parts` (what was measured, records included), the thread count,
    novagen's version and MEASUREMENT."""
    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    text = json.dumps([*parts, threads, __version__, MEASUREMENT])
    return cache_dir() / "tvm-auto" / f"{prefix}{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"


def _cached(path: Path) -> Choice | None:
    """The choice stored at `path`, or None (absent or unreadable: measured again)."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        return Choice(doc["algorithm"], doc["reason"], doc["times_ms"], doc["refused"], True, tuple(doc["tuned"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(path: Path, choice: Choice, **about: Any) -> Choice:
    output_folder(path.parent)
    atomic_write(path, json.dumps({"algorithm": choice.algorithm, "reason": choice.reason,
                                   "times_ms": choice.times_ms, "refused": choice.refused,
                                   "tuned": list(choice.tuned), **about}), overwrite=True)
    return choice


def _query(database: Any, workloads: dict[str, Any], target: Any) -> dict[str, Any]:
    """The best scheduled module of each workload (name → unscheduled IRModule) the database holds."""
    if database is None:
        return {}
    from novagen.backends.tvm.tuning import open_database

    db = open_database(database) if isinstance(database, (str, os.PathLike)) else database
    found = {}
    for name, mod in workloads.items():
        if (sch := db.query_schedule(mod, target, workload_name="main")) is not None:
            found[name] = sch.mod
    return found


def tuned_modules(database: Any, names: list[str], layer: tuple[int, ...], padding: tuple[int, int], dtype: str,
                  layout: str, target: Any) -> dict[str, Any]:
    """The candidates (algorithm labels or DIRECT) that the tuning database (a folder, or one `open_database`
    opened) holds a record of, each as its best scheduled module."""
    from novagen.backends.tvm.tuning import tuning_workload

    return _query(database, {name: tuning_workload(name, layer, padding, dtype, layout)[0] for name in names},
                  target)


def accurate_enough(candidates: tuple[str, ...], layer: tuple[int, ...], dtype: str) -> dict[str, str]:
    """The candidates refused for accuracy, with the reason: none in float32; in float16 those whose measured
    fp16 error on a slice of the layer exceeds FP16_FACTOR × the direct convolution's."""
    if dtype != "float16":
        return {}
    from novagen.accuracy import layer_error

    n, c, h, w, k = layer
    probe = (1, min(c, 32), min(h, 24), min(w, 24), min(k, 32))
    direct = layer_error("direct", "fp16", probe).rel_l2
    refused = {}
    for name in candidates:
        err = layer_error(name, "fp16", probe).rel_l2
        if not err <= FP16_FACTOR * direct:
            refused[name] = f"fp16 error {err:.1e} > {FP16_FACTOR:g} x direct {direct:.1e}"
    return refused


def candidate_module(alg_name: str, layer: tuple[int, ...], padding: tuple[int, int], dtype: str, layout: str,
                     tuned: Any = None) -> Any:
    """The module a candidate runs as now: its tuned record, else its default."""
    from novagen.backends.tvm.compute import direct_module
    from novagen.backends.tvm.schedule import conv2d_module

    if tuned is not None:
        return tuned
    return (direct_module(layer, padding, dtype, layout) if alg_name == DIRECT
            else conv2d_module(alg_name, layer, padding, dtype, layout))


def time_modules(mods: dict[str, Any], target: Any) -> dict[str, float]:
    """ms of each module's main on this machine (MEASUREMENT): ROUNDS rounds, each running every candidate
    REPEATS // ROUNDS times with the caches flushed of all but the input, so that a slow spell of a shared
    machine falls on every candidate alike; the median of each candidate's REPEATS runs."""
    tvm = load_tvm()
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    runs = {}
    for name, mod in mods.items():
        lib = tvm.compile(mod, target=target).mod
        symbol = str(mod["main"].attrs["global_symbol"])
        args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype)), dev)
                for p in mod["main"].params]
        lib[symbol](*args)
        runs[name] = (lib.time_evaluator(symbol, dev, number=1, repeat=REPEATS // ROUNDS,
                                         f_preproc="cache_flush_cpu_non_first_arg"), args)
    samples: dict[str, list[float]] = {name: [] for name in mods}
    for _ in range(ROUNDS):
        for name, (evaluator, args) in runs.items():
            samples[name] += list(evaluator(*args).results)
    return {name: float(np.median(values)) * 1e3 for name, values in samples.items()}


def choose(layer: tuple[int, ...], padding: tuple[int, int], dtype: str = "float32", layout: str = "NCHW",
           target: Any = None, candidates: tuple[str, ...] = CANDIDATES, min_channels: int = 8,
           database: Any = None) -> Choice:
    """The algorithm for one convolution (see the module docstring); llvm targets are measured here, other
    targets (cuda without a GPU) get the tile size the CPU measurement prefers.  `database`: a tuning database
    (a folder, or one already opened) whose records of the candidates (and of TVM's conv2d) are timed in place
    of their defaults."""
    target = target or host_target()
    if getattr(getattr(target, "kind", None), "name", "llvm") != "llvm":
        target = host_target()  # no GPU here: the CPU's ranking of tile sizes stands in
    make_spec(candidates[0], layer, padding, dtype, layout)  # checks the layer
    n, c, h, w, k = layer
    if min(c, k) < min_channels:
        return Choice(DIRECT, f"{c} input / {k} output channels: fewer than {min_channels}, left to TVM")
    from novagen.catalog import algorithm

    tuned = tuned_modules(database, [*candidates, DIRECT], layer, padding, dtype, layout, target)
    path = _cache_path("", list(layer), list(padding), dtype, layout, str(target),
                       [algorithm(c).content_hash for c in candidates], _records(tuned))
    if (hit := _cached(path)) is not None:
        return hit
    refused = accurate_enough(candidates, layer, dtype)
    allowed = [c for c in candidates if c not in refused]
    if not allowed:
        raise TVMError(f"no Winograd algorithm is accurate enough for layer {layer} in {dtype}: {refused}")
    times = time_modules({name: candidate_module(name, layer, padding, dtype, layout, tuned.get(name))
                          for name in [*allowed, DIRECT]}, target)
    best = min(times, key=times.__getitem__)
    direct = f"TVM's conv2d ({'tuned' if DIRECT in tuned else 'untuned'}) {times[DIRECT]:.3g} ms"
    if best == DIRECT:
        reason = f"{direct} beats every Winograd candidate"
    else:
        how = "tuned" if best in tuned else "default schedule"
        reason = f"fastest ({MEASUREMENT}): {times[best]:.3g} ms ({how}) against {direct}"
    return _store(path, Choice(best, reason, times, refused, tuned=tuple(sorted(tuned))), layer=list(layer),
                  target=str(target))


def direct_workloads(spec: DirectSpec) -> dict[str, Any]:
    """The unscheduled modules of the two candidates of a thin layer, by name: novagen's direct kernel and
    TVM's conv2d (what `tune_relax` tunes, and what the database is asked for)."""
    from novagen.backends.tvm.compute import tvm_direct_module
    from novagen.backends.tvm.schedule import direct_primfunc

    tvm = load_tvm()
    return {NOVAGEN_DIRECT: tvm.IRModule({"main": direct_primfunc(spec, schedule=None)}),
            DIRECT: tvm_direct_module(spec)}


def choose_direct(spec: DirectSpec, target: Any = None, database: Any = None) -> Choice:
    """For a layer Winograd does not take (too thin in channels, such as a 3-channel stem, or strided):
    novagen's direct kernel or TVM's conv2d, whichever is faster here, each timed (MEASUREMENT) with its
    record from the tuning database when it holds one, else its default; cached like `choose`."""
    from novagen.backends.tvm.schedule import schedule_default

    tvm = load_tvm()
    target = target or host_target()
    workloads = direct_workloads(spec)
    tuned = _query(database, workloads, target)
    path = _cache_path("direct-", spec.to_json(), str(target), _records(tuned))
    if (hit := _cached(path)) is not None:
        return hit
    ours = tuned.get(NOVAGEN_DIRECT) or tvm.IRModule(
        {"main": schedule_default(workloads[NOVAGEN_DIRECT]["main"], target)})
    times = time_modules({NOVAGEN_DIRECT: ours, DIRECT: tuned.get(DIRECT, workloads[DIRECT])}, target)
    best = min(times, key=times.__getitem__)
    how = {name: "tuned" if name in tuned else ("default schedule" if name == NOVAGEN_DIRECT else "untuned")
           for name in times}
    why = (f"stride {list(spec.stride)}, not Winograd's" if spec.k_block
           else f"{spec.layer[1]} input channels, too few for Winograd")
    reason = (f"{why}; ({MEASUREMENT}) novagen's direct kernel "
              f"{times[NOVAGEN_DIRECT]:.3g} ms ({how[NOVAGEN_DIRECT]}), TVM's conv2d {times[DIRECT]:.3g} ms "
              f"({how[DIRECT]})")
    return _store(path, Choice(best, reason, times, {}, tuned=tuple(sorted(tuned))), spec=spec.to_json(),
                  target=str(target))
