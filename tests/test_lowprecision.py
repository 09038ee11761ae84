"""Low precision beyond point choice: calibrated static scales (deterministic, the torch module equal to
the NumPy lab bit for bit, overflow counted), Winograd-aware fine-tuning that ends in a verified algorithm,
and the procedural dataset."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import novagen  # noqa: E402
from novagen.errors import InputError  # noqa: E402
from novagen.precision import policy  # noqa: E402
from novagen.precision.emulator import winograd  # noqa: E402
from novagen.precision.numpy_arrays import NumpyArrays  # noqa: E402
from novagen.torch import replace_conv2d  # noqa: E402
from novagen.torch.scales import calibrate  # noqa: E402
from novagen.torch.training import finetune  # noqa: E402


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


def test_calibration_is_deterministic_and_fixes_the_scales():
    x = torch.randn(40, 3, 12, 12)
    scales = []
    for _ in range(2):
        q = replace_conv2d(_net(), "F(4,3)/best", "int8-tap")
        scales.append(calibrate(q, x, "percentile", seed=3))
    assert scales[0] == scales[1]
    v = np.array(scales[0]["0"]["V"])
    assert v.shape == (6, 6) and (v > 0).all() and np.array(scales[0]["0"]["U"]).shape == (8, 1, 6, 6)
    q = replace_conv2d(_net(), "F(4,3)/best", "int8-tap")
    mx = calibrate(q, x, "max", seed=3)
    assert (np.array(mx["0"]["V"]) >= v).all()  # the max never clips: its scales are the largest
    # with static scales, a batch's output does not depend on the rest of the batch
    with torch.no_grad():
        assert torch.allclose(q(x[:5])[2], q(x[2:3])[0], rtol=1e-5, atol=1e-6)


def test_calibrated_int8_module_matches_the_numpy_lab_bit_for_bit():
    q = replace_conv2d(_net(), "F(6,3)/best", "int8-tap")
    x = torch.randn(6, 3, 11, 9)
    calibrate(q, x, "mse", seed=0)
    mod = q[0]
    with torch.no_grad():
        got = mod(x[:2]).double().numpy()
    ref, counts = winograd(x[:2].double().numpy(), mod.weight.detach().double().numpy(), mod.algs,
                           policy("int8-tap"), mod.padding, NumpyArrays(),
                           mod.bias.detach().double().numpy(), {k: v.double().numpy() for k, v in mod.scales.items()})
    assert np.array_equal(got, ref.astype(np.float32).astype(np.float64)) and counts.get("int32", 0) == 0


def test_int32_overflow_is_counted(monkeypatch):
    import novagen.precision.emulator as em

    monkeypatch.setattr(em, "INT32_MAX", 1000)
    q = replace_conv2d(_net(), "F(2,3)/classic", "int8-tap")
    with torch.no_grad():
        y = q[0](torch.randn(1, 3, 8, 8) * 10)
    assert q[0].overflows["int32"] > 0 and torch.isnan(y).any()


def test_finetuning_learns_points_that_verify():
    torch.manual_seed(0)
    x = torch.randn(96, 3, 12, 12)
    yl = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    q = replace_conv2d(_net(), "F(4,3)/classic", "int8-tap")
    rep = finetune(q, (x, yl), epochs=2, batch=32, max_denominator=8, calibrate=x[:32], label="learned-test")
    (alg,) = rep.algorithms.values()
    novagen.verify(alg)
    assert alg.label == "F(4,3)/learned-test" and all(p.denominator <= 8 for p in alg.finite_points)
    assert set(rep.layers) == {"0", "2"} and len(rep.losses) == 2
    # the model now runs the learned algorithm in the exact emulator, calibrated
    assert q[0].algs[0] == alg and q[0].scales is not None
    with torch.no_grad():
        assert torch.isfinite(q(x[:4])).all()


def test_finetuning_and_calibration_take_a_dataloader():
    """The issue's call: calibrate= and finetune() given a torch DataLoader of (input, label) batches, as a
    user's training code has; the learned algorithm verifies. Anything else is a clear error."""
    torch.manual_seed(0)
    x = torch.randn(96, 3, 12, 12)
    yl = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, yl), batch_size=32, shuffle=True)
    q, _ = replace_conv2d(_net(), "F(4,3)/classic", precision="int8-tap", calibrate=loader, return_report=True)
    rep = finetune(q, loader, epochs=2, batch=32, max_denominator=8, label="learned-loader")
    assert rep.steps == 6 and len(rep.losses) == 2
    assert novagen.verify(novagen.torch.learned_algorithm(q[0])).verified
    with pytest.raises(InputError, match="batches of \\(input, label\\) pairs"):
        finetune(q, 3, epochs=1)


def test_free_matrices_are_the_unverified_comparison():
    """learn=("matrices",) trains AT, G, BT themselves: the matrices move off the exact algorithm, nothing
    is snapped or proven, the report says unverified, and the model keeps the trained surrogates."""
    from novagen.torch.learned import FreeMatrices, LearnedWinogradConv2d, learnable

    torch.manual_seed(0)
    x = torch.randn(96, 3, 12, 12)
    yl = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    q = replace_conv2d(_net(), "F(4,3)/classic", "int8-tap")
    rep = finetune(q, (x, yl), epochs=2, batch=32, learn=("matrices",), label="free-test")
    assert rep.algorithms == {} and rep.unverified == ["F(4,3)/classic"]
    assert [(r["learned"], r["verified"]) for r in rep.rows()] == [("free matrices", False)]
    assert isinstance(q[0], LearnedWinogradConv2d) and isinstance(q[0].algo, FreeMatrices) and q[0].algo is q[2].algo
    start = novagen.algorithm("F(4,3)/classic").matrices("float64")
    moved = [float(np.abs(got.detach().numpy() - want).max()) for got, want in zip(q[0].algo.matrices(), start)]
    assert max(moved) > 1e-4  # trained: no longer the exact algorithm's matrices
    with torch.no_grad():
        assert torch.isfinite(q(x[:4])).all()
    with pytest.raises(InputError, match="'matrices' \\(free, unverified\\) goes alone"):
        learnable(novagen.algorithm("F(4,3)/classic"), ("matrices", "points"))


def test_finetuning_skips_non_finite_steps_and_never_ends_in_nan_points():
    torch.manual_seed(0)
    x = torch.randn(96, 3, 12, 12)
    yl = (x[:, 0].mean((1, 2)) > 0).long()
    x[40] = float("inf")  # one poisoned image: the batch holding it is skipped, once per epoch
    q = replace_conv2d(_net(), "F(4,3)/classic", "fp16")
    rep = finetune(q, (x, yl), epochs=2, batch=32, max_denominator=8, label="learned-guard")
    assert rep.skipped == 2  # one batch per epoch
    assert all(np.isfinite(v) for v in rep.losses) and rep.diverged == []
    (alg,) = rep.algorithms.values()
    assert novagen.verify(alg).verified


def test_finetuning_trains_through_direct_int8_layers():
    """The shapes ResNet as the study runs it: Winograd int8-tap where eligible, its stride-2 and 1x1 convs
    direct in int8 (others="direct").  Every step trains (an int32 guard once made every gradient NaN, so
    no step was taken) and the gradient reaches the stem through the direct layers."""
    from novagen.datasets import shapes_data, small_resnet

    torch.manual_seed(0)
    data = shapes_data(128, 16, seed=0)
    q = replace_conv2d(small_resnet(width=8).eval(), "F(4,3)/best", "int8-tap", others="direct")
    calibrate(q, data.x_train[:32], "percentile", seed=0)
    q.train()
    with warnings.catch_warnings():  # the int32 guard once warned of float() on a tensor that needs its gradient
        warnings.simplefilter("error", UserWarning)
        torch.nn.functional.cross_entropy(q(data.x_train[:32]), data.y_train[:32]).backward()
    stem = q[0].weight.grad
    assert stem is not None and torch.isfinite(stem).all() and stem.abs().max() > 0
    rep = finetune(q, (data.x_train, data.y_train), epochs=1, batch=32, max_denominator=8, label="learned-resnet")
    assert (rep.steps, rep.skipped, rep.stalled) == (4, 0, None) and np.isfinite(rep.losses).all()
    (alg,) = rep.algorithms.values()
    assert novagen.verify(alg).verified


def test_cosine_schedule_decays_both_rates_to_zero(monkeypatch):
    """schedule="cosine": the network's and the points' learning rates start at lr and lr_points and fall
    to near zero by the last batch; a bad schedule or rate is a clear error."""
    import novagen.torch.training as T

    seen = []
    real = T._step

    def spy(model, opt, *rest):
        seen.append([group["lr"] for group in opt.param_groups])
        return real(model, opt, *rest)

    monkeypatch.setattr(T, "_step", spy)
    torch.manual_seed(0)
    x = torch.randn(64, 3, 12, 12)
    yl = (x[:, 0].mean((1, 2)) > 0).long()
    q = replace_conv2d(_net(), "F(4,3)/classic", "int8-tap")
    rep = finetune(q, (x, yl), epochs=2, batch=16, lr=1e-3, lr_points=4e-3, schedule="cosine", max_denominator=8)
    assert rep.steps == 8 and seen[0] == [1e-3, 4e-3]
    assert all(a[0] > b[0] and a[1] > b[1] for a, b in zip(seen, seen[1:]))  # strictly falling
    assert seen[-1][0] < 0.05 * 1e-3 and seen[4][0] == pytest.approx(0.5e-3)  # halfway: half the rate
    for bad, match in (({"schedule": "step"}, "schedule 'step' is not one of constant, cosine"),
                       ({"lr": 0.0}, "learning rates must be positive")):
        with pytest.raises(InputError, match=match):
            finetune(replace_conv2d(_net(), "F(4,3)/classic", "int8-tap"), (x, yl), epochs=1, **bad)
    from novagen.pointsearch.campaigns import SCHEDULES

    assert tuple(T.SCHEDULES) == SCHEDULES  # the campaign loader checks the same names


def test_snapping_scores_each_point_set_once():
    """The lattice walk after snapping revisits point sets in its last sweep; each is scored once, and the
    walk still ends where a lower loss cannot be found next to it."""
    from novagen.torch.learned import learnable, learned_algorithm, neighbours

    start = novagen.algorithm("F(4,3)/classic").finite_points
    target = [float(p) + d for p, d in zip(start, (0.3, -0.2, 0.15, -0.3, 0.2))]
    calls = []

    def score(pts):
        return sum((float(p) - t) ** 2 for p, t in zip(pts, target))

    def loss(alg):
        calls.append(tuple(alg.finite_points))
        return score(alg.finite_points)

    alg = learned_algorithm(learnable(novagen.algorithm("F(4,3)/classic"), ("points",)), 8, loss, "F(4,3)/walk")
    assert len(calls) == len(set(calls)) > 10 and novagen.verify(alg).verified
    end = list(alg.finite_points)
    assert score(end) < 0.5 * score(start)
    for i in range(len(end)):  # no single move to a lattice neighbour lowers the loss
        for nb in neighbours(end[i], 8):
            if nb not in end:
                assert score(end[:i] + [nb] + end[i + 1:]) >= score(end)


def test_finetuning_that_takes_no_step_learns_nothing_and_says_so():
    x = torch.full((64, 3, 12, 12), float("inf"))
    q = replace_conv2d(_net(), "F(4,3)/classic", "int8-tap")
    rep = finetune(q, (x, torch.zeros(64, dtype=torch.long)), epochs=2, batch=32)
    assert (rep.steps, rep.skipped, rep.algorithms) == (0, 4, {})
    assert "took no step" in rep.stalled and q[0].algs[0] == novagen.algorithm("F(4,3)/classic")


def test_package_functions_survive_importing_every_submodule():
    """novagen.torch.calibrate and .finetune are functions; a submodule of the same name, once imported,
    would replace them on the package (the CLI's finetune failed that way in CI)."""
    import importlib
    import pkgutil

    import novagen.torch as nt

    for info in pkgutil.iter_modules(nt.__path__):
        importlib.import_module(f"novagen.torch.{info.name}")
    for name in ("calibrate", "finetune", "learned_algorithm", "replace_conv2d"):
        assert callable(getattr(nt, name)) and not isinstance(getattr(nt, name), type(nt)), name


def test_procedural_shapes_are_seeded_and_balanced():
    from novagen.datasets import SHAPES, shapes_data

    a, b = shapes_data(200, 50, seed=1), shapes_data(200, 50, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (200, 3, 32, 32) and sorted(set(a.y_train.tolist())) == list(range(len(SHAPES)))
    assert not torch.equal(a.x_train, shapes_data(200, 50, seed=2).x_train)


def test_the_kept_rows_key_ignores_docstrings_comments_and_layout():
    from novagen.lowprecision import _code

    src = 'def f(x):\n    """Twice x."""\n    return 2 * x  # doubled\n\n\nclass A:\n    """A class."""\n'
    edited = ('def f(x):\n    """Two times x, documented anew."""\n    # a new comment\n    return 2*x\n\n'
              'class A:\n    pass\n')
    assert _code(src) == _code(edited)
    assert _code(src) != _code(src.replace("2 * x", "3 * x"))
    assert _code('"""Module doc."""\nX = 1\n') == _code("X = 1\n") != _code("X = 2\n")


@pytest.mark.slow
def test_an_interrupted_study_resumes_from_its_kept_rows(tmp_path, monkeypatch):
    """A study keeps each finished row on disk: stopped part-way (Ctrl-C), the same study started again takes
    the finished rows as they were and computes only the rest; a third run takes every row as kept (only the
    network is trained again)."""
    from novagen import lowprecision

    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path))
    kw = dict(epochs=0, calibration=64, int8_algorithms=("F(4,3)/best",), half_algorithms=())

    def stop_at_calibrated(message: str) -> None:
        if "int8-tap calibrated" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lowprecision.study("digits", progress=stop_at_calibrated, **kw)
    second = lowprecision.study("digits", **kw)["rows"]
    labels = [r["row"] for r in second]
    assert labels == ["fp32", "direct int8 (per channel, calibrated)", "F(4,3)/best int8 dynamic",
                      "F(4,3)/best int8-tap dynamic", "F(4,3)/best int8-tap calibrated"]
    assert [r.get("kept", False) for r in second] == [True, True, True, True, False]
    third = lowprecision.study("digits", **kw)["rows"]
    assert all(r["kept"] for r in third)
    assert [r["top1"] for r in third] == [r["top1"] for r in second]
    assert 0.5 < third[0]["top1"] <= 1.0


def test_accuracy_command_without_an_algorithm_runs_the_study_algorithms(monkeypatch, capsys):
    """`novagen accuracy --network digits --precision int8-tap --calibrate 256 --finetune 3 --json` (the
    issue's command, no algorithm named) fine-tunes F(4,3) and F(6,3) x classic, nova, best; fp16 takes the
    F(8,3) ones. Training and fine-tuning are replaced here by recorders: this checks what the command runs."""
    import json

    import novagen.datasets as D
    import novagen.lowprecision as L
    from novagen.cli import run

    seen = []
    monkeypatch.setattr(D, "trained", lambda net, seed=0: ("model", type("Data", (), {"x_test": 0, "y_test": 0})))
    monkeypatch.setattr(D, "accuracy", lambda model, x, y: 0.9)

    def fake_variant(model, data, name, prec, how, epochs, calibration, seed=0, progress=None):
        seen.append((name, prec, how, epochs, calibration))
        return 0.5, {}

    monkeypatch.setattr(L, "variant", fake_variant)
    code = run(["accuracy", "--network", "digits", "--precision", "int8-tap", "--calibrate", "256", "--finetune", "3",
                "--json"])
    assert code == 0, capsys.readouterr().err
    assert seen == [(a, "int8-tap", "finetuned", 3, 256) for a in L.INT8_ALGORITHMS]
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["algorithm"] for r in rows] == ["direct", *L.INT8_ALGORITHMS]
    seen.clear()
    assert run(["accuracy", "--network", "digits", "-P", "fp16", "--calibrate", "64"]) == 0
    assert seen == [(a, "fp16", "calibrated", 0, 64) for a in L.HALF_ALGORITHMS]
