"""Accuracy studies: many (algorithm, precision) pairs on one layer and on networks, as the rows of one
table.  Layer rows need only NumPy; network rows load `novagen.networks` (the torch extra) when asked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from novagen import limits
from novagen.accuracy import ErrorReport, layer_error
from novagen.errors import InputError

NETWORK_TARGETS = ("vgg16", "resnet18", "digits")


def jobs(algorithms: Sequence[str], precisions: Sequence[str], shape: tuple[int, ...] | None,
         networks: Sequence[str]) -> list[tuple[str, str, str]]:
    """(target, algorithm, precision) of every row: the layer's first (when a shape is given), then each
    network's."""
    for n in networks:
        if n not in NETWORK_TARGETS:
            raise InputError(f"network '{n}' is not known: use one of {', '.join(NETWORK_TARGETS)}")
    out = [("layer", a, p) for a in algorithms for p in precisions] if shape else []
    return out + [(n, a, p) for n in networks for a in algorithms for p in precisions]


def study(algorithms: Sequence[str], precisions: Sequence[str], shape: tuple[int, ...] | None,
          networks: Sequence[str] = (), seed: int = 0, inputs: int = 128, width: float = 0.5, balanced: bool = False,
          progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The JSON rows (`ErrorReport.row`) of every job; networks are built (and the digits CNN trained) once
    each, then reused across algorithms and precisions.  `progress(description)` is called before each job."""
    seed = limits.seed(seed, "--seed")
    inputs = limits.whole("--inputs", inputs, 1, 100_000)
    width = limits.real("--width", width, 0.0, 16.0, open_low=True)
    todo = jobs(algorithms, precisions, shape, networks)
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    for target, alg, prec in todo:
        if progress:
            progress(f"{target} {alg} {prec}")
        if target == "layer":
            assert shape is not None
            report = layer_error(alg, prec, shape, seed, balanced=balanced)
        else:
            report = network_row(models, target, alg, prec, seed, inputs, width, balanced)
        rows.append(report.row())
    return rows


def network_row(models: dict[str, Any], target: str, alg: str, prec: str, seed: int, inputs: int, width: float,
                balanced: bool) -> ErrorReport:
    """One network row; `models` caches the networks built so far (by target name)."""
    from novagen import networks as nets

    if target == "digits":
        if target not in models:
            data = nets.digits_data(seed=seed)
            models[target] = (nets.digits_cnn(data, seed=seed), data)
        model, data = models[target]
        return nets.digits_accuracy(model, data, alg, prec, balanced=balanced)
    if target not in models:
        models[target] = nets.seeded_network(target, seed, width)
    report = nets.network_error(models[target], alg, prec, inputs=inputs, width=width, seed=seed, balanced=balanced)
    return replace(report, target=f"{target} ({inputs} inputs, width {width:g})")
