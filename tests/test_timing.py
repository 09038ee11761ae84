"""The one timing harness: a wrong candidate is failed and never ranked, whatever its speed; the order of
runs follows the order asked for; warm-up runs are not timed."""

import math

import numpy as np
import pytest

from novagen.errors import InputError
from novagen.timing import Candidate, fastest, geomean_ratio, measure, relative_error


def test_a_wrong_candidate_is_never_ranked_even_when_fastest():
    ref = np.arange(12.0).reshape(3, 4)
    calls = []

    def fake(name, value, seconds):
        def run():
            calls.append(name)
            return value
        return Candidate(name, run, None, 1e-6), seconds

    cands = [fake("right", ref.copy(), 2.0), fake("wrong", ref * 1.01, 1.0), fake("nan", ref * np.nan, 0.5)]
    clock = {c.name: s for c, s in cands}
    times = measure([c for c, _ in cands], ref, repeats=3, order="alternating", warmup=2,
                    timer=lambda fn: (fn(), clock[calls[-1]])[1])
    assert times["right"].passed and times["right"].error == 0.0
    assert not times["wrong"].passed and times["wrong"].error == pytest.approx(0.01)
    assert not times["nan"].passed and math.isinf(times["nan"].error)
    assert fastest(times).name == "right"
    assert times["wrong"].median_ms == 1000.0 and times["right"].samples_ms == (2000.0,) * 3
    # one checked run and two warm-ups each, then three timed runs each, alternating within each repeat
    assert calls[:9] == ["right"] * 3 + ["wrong"] * 3 + ["nan"] * 3 and len(calls) == 3 * (1 + 2 + 3)
    assert calls[9:] == ["right", "wrong", "nan"] * 3


def test_blocks_order_and_no_reference():
    calls = []
    cands = [Candidate(n, lambda n=n: calls.append(n)) for n in ("a", "b")]
    times = measure(cands, None, repeats=2, order="blocks", warmup=1)
    assert calls == ["a"] * 4 + ["b"] * 4  # in blocks: checked, warmed up and timed before the next one runs
    assert all(t.passed and t.error is None for t in times.values())


def test_rounds_order_spreads_each_candidate_over_the_measurement():
    calls = []
    cands = [Candidate(n, lambda n=n: calls.append(n) or len(calls)) for n in ("a", "b")]
    clock = iter(range(1, 100))
    times = measure(cands, None, repeats=7, order="rounds", warmup=1, timer=lambda fn: (fn(), next(clock))[1])
    # checked once each, then five rounds: per round a warm-up and a block of 1 or 2 timed runs per candidate
    blocks = [1, 1, 2, 1, 2]
    expected = ["a", "b"]
    for k in blocks:
        expected += ["a"] * (1 + k) + ["b"] * (1 + k)
    assert calls == expected
    assert len(times["a"].samples_ms) == len(times["b"].samples_ms) == 7
    # the timed runs interleave: a's samples are from every round, not one stretch of the clock
    assert times["a"].samples_ms == tuple(1e3 * v for v in (1, 3, 5, 6, 9, 11, 12))
    assert times["b"].samples_ms == tuple(1e3 * v for v in (2, 4, 7, 8, 10, 13, 14))


def test_bad_input_and_helpers():
    with pytest.raises(InputError, match="order 'random'"):
        measure([Candidate("a", lambda: 0)], order="random")
    with pytest.raises(InputError, match="repeats 0"):
        measure([Candidate("a", lambda: 0)], repeats=0)
    with pytest.raises(InputError, match="names must differ"):
        measure([Candidate("a", lambda: 0), Candidate("a", lambda: 1)])
    assert relative_error(np.ones(3), np.ones(4)) == math.inf
    rows = [{"layers": ["x", "y"], "ratio": 4.0}, {"layers": ["z"], "ratio": 0.5}]
    assert geomean_ratio(rows) == pytest.approx((4.0 * 4.0 * 0.5) ** (1 / 3))
