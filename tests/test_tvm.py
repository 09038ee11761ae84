"""The TVM backend: Winograd conv2d modules against the float64 direct correlation, and bad input."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import novagen  # noqa: E402
from novagen import tvm as nt  # noqa: E402
from novagen.accuracy import layer_error  # noqa: E402
from novagen.errors import InputError  # noqa: E402
from novagen.reference import correlate_direct  # noqa: E402

pytestmark = pytest.mark.tvm


def _data(layer: tuple[int, ...], r: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n, c, h, w, k = layer
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
    return x, wt


def _run(alg: str, layer: tuple[int, ...], padding: int, layout: str, weights: str = "precomputed",
         dtype: str = "float32") -> tuple[float, float]:
    """Relative L2 error of the TVM module against fp64 direct, and the accuracy lab's emulated fp32 error
    of the same algorithm on the same data (what fp32 arithmetic allows for it)."""
    a = novagen.algorithm(alg)
    x, wt = _data(layer, a.r)
    conv = nt.Conv2d(alg, layer, padding=padding, layout=layout, weights=weights, dtype=dtype)
    xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = conv(xin.astype(dtype), wt).astype(np.float64)
    if layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    ref = correlate_direct(x, wt, padding)
    assert y.shape == ref.shape
    emulated = layer_error(alg, "fp32", shape=layer, x=x, w=wt, padding=padding).rel_l2
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref)), emulated


# odd spatial sizes (partial tiles on both axes), batch 2, channel counts the schedule vectorizes
CASES = [
    ("F(2,3)/classic", (2, 8, 11, 9, 16), 1, "NCHW", "precomputed"),
    ("F(4,3)/nova", (2, 8, 11, 9, 16), 0, "NHWC", "precomputed"),
    ("F(4,3)/nova", (2, 16, 13, 7, 8), 1, "NCHW", "graph"),
    pytest.param("F(6,3)/nova", (2, 8, 15, 10, 16), 1, "NCHW", "graph", marks=pytest.mark.slow),
    ("F(6,3)/nova", (2, 8, 9, 11, 8), 0, "NHWC", "precomputed"),
    pytest.param("F(8,3)/nova", (1, 8, 17, 12, 8), 1, "NHWC", "graph", marks=pytest.mark.slow),
    ("F(4,5)/kappa", (2, 8, 12, 11, 16), 1, "NCHW", "precomputed"),
]


@pytest.mark.parametrize("alg,layer,padding,layout,weights", CASES)
def test_matches_direct_float64(alg: str, layer: tuple[int, ...], padding: int, layout: str, weights: str) -> None:
    err, emulated = _run(alg, layer, padding, layout, weights)
    # as accurate as fp32 allows for this algorithm (the accuracy lab's emulated fp32 error), with margin
    assert err < max(4 * emulated, 1e-6), f"{alg} {layout} {weights}: relative error {err:.2e} ({emulated:.2e})"


def test_odd_channel_counts() -> None:
    """C and K that no vector width divides still give the right answer (scalar loops)."""
    assert _run("F(2,3)/classic", (1, 3, 7, 6, 5), 1, "NCHW")[0] < 5e-6


def test_fp16_storage_fp32_accumulation() -> None:
    err = _run("F(4,3)/nova", (1, 16, 10, 10, 8), 1, "NHWC", dtype="float16")[0]
    assert 1e-5 < err < 5e-3, f"fp16 storage: relative error {err:.2e}"


def test_transform_constants_folded() -> None:
    """No zero term and no factor ±1 reaches the code: the input transform multiplies only by the
    constants of the BT program (the classic F(4,3) BT has 12 zero entries)."""
    from novagen.program import compile_matrix

    alg = novagen.algorithm("F(4,3)/classic")
    mod = nt.conv2d_module(alg, (1, 8, 8, 8, 8), schedule=None)
    text = mod.script()
    assert not re.search(r"T\.float32\(0(\.0)?\) \*|\* T\.float32\(0(\.0)?\)", text)
    assert not re.search(r"\* T\.float32\(-?1\.0\)", text)
    btd = text[text.index('T.sblock("BTd")'):text.index('T.sblock("V")')]
    consts = {float(v) for v in re.findall(r"\* T\.float32\(([-0-9.e]+)\)", btd)}
    expected = {float(op.c) for op in compile_matrix(alg.BT).ops if op.kind in ("mul", "shift")}
    assert consts and consts <= expected


def test_transform_weights_matches_exact_g() -> None:
    alg = novagen.algorithm("F(4,3)/nova")
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    u = nt.transform_weights(alg, w, "float64")
    g = np.array([[float(v) for v in row] for row in alg.G])
    assert u.shape == (6, 6, 1, 3, 4)  # (alpha, alpha, K / k_block, C, k_block)
    np.testing.assert_allclose(u[:, :, 0, 1, 2], g @ w[2, 1] @ g.T, rtol=1e-12)
    w8 = np.random.default_rng(2).standard_normal((8, 3, 3, 3))
    packed = nt.transform_weights(alg, w8, "float64", k_block=4)
    assert packed.shape == (6, 6, 2, 3, 4)
    np.testing.assert_allclose(packed[:, :, 1, 2, 3], g @ w8[7, 2] @ g.T, rtol=1e-12)
    with pytest.raises(nt.TVMError, match="k_block 3 must divide the 8 filters"):
        nt.transform_weights(alg, w8, k_block=3)


def test_module_shape_and_symbol() -> None:
    mod = nt.conv2d_module("F(6,3)/nova", (1, 16, 14, 14, 32), padding=1, layout="NHWC")
    func = mod["main"]
    assert [tuple(int(d) for d in p.shape) for p in func.params] == [
        (1, 14, 14, 16), (8, 8, 2, 16, 16), (1, 14, 14, 32)]
    assert str(func.attrs["global_symbol"]).startswith("novagen_F_6_3_nova_1x16x14x14x32")


@pytest.mark.parametrize("kwargs,match", [
    ({"layout": "NCWH"}, "layout"),
    ({"dtype": "int8"}, "dtype"),
    ({"weights": "lazy"}, "weights"),
    ({"padding": -1}, "padding"),
    ({"layer": (1, 8, 2, 2, 8), "padding": 0}, "smaller than"),
    ({"layer": "1,8,8"}, "N,C,H,W,K"),
])
def test_bad_input(kwargs: dict, match: str) -> None:
    args = {"layer": (1, 8, 8, 8, 8), **kwargs}
    with pytest.raises(InputError, match=match):
        nt.conv2d_module("F(4,3)/nova", **args)


def test_bad_weights_and_input_shape() -> None:
    conv = nt.Conv2d("F(2,3)/classic", (1, 8, 6, 6, 8), padding=1)
    x, w = _data((1, 8, 6, 6, 8), 3)
    with pytest.raises(InputError, match="weights"):
        conv(x, w[:, :4])
    with pytest.raises(InputError, match="x must be"):
        conv(x[:, :4], w)
    with pytest.raises(InputError, match="2D conv"):
        nt.conv2d_module(novagen.algorithm("F(4x4,3x3)/nova"), (1, 8, 6, 6, 8))


# ---------------------------------------------------------------------------------------------
# Relax pass on a model imported from PyTorch


def _torch_model() -> tuple[Any, Any]:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        """conv-bn-relu ×3 + linear; the first conv (3 channels) and a strided conv are not eligible."""

        def __init__(self) -> None:
            super().__init__()
            self.c1, self.b1 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
            self.c2, self.b2 = torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
            self.c3, self.b3 = torch.nn.Conv2d(16, 16, 3, padding=0), torch.nn.BatchNorm2d(16)
            self.c4 = torch.nn.Conv2d(16, 16, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(16, 10)

        def forward(self, x: Any) -> Any:
            x = torch.relu(self.b1(self.c1(x)))
            x = torch.relu(self.b2(self.c2(x)))
            x = torch.relu(self.b3(self.c3(x)))
            return self.fc(self.c4(x).mean((2, 3)))

    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        for bn in (model.b1, model.b2, model.b3):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model, torch.randn(2, 3, 13, 11)


def _run_relax(mod: Any, x: np.ndarray, *params: np.ndarray) -> np.ndarray:
    from tvm import relax

    ex = tvm.compile(mod, target=nt.host_target())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(p) for p in params))
    return (out[0] if not hasattr(out, "numpy") else out).numpy()


def test_rewrite_torch_model_matches_torch() -> None:
    from tvm.relax.frontend.torch import from_exported_program

    torch = pytest.importorskip("torch")
    model, x = _torch_model()
    mod = from_exported_program(torch.export.export(model, (x,)))
    new, report = nt.rewrite_conv2d(mod, "F(4,3)/nova", return_report=True)
    assert [r["shape"] for r in report.rewritten] == [[2, 8, 13, 11, 16], [2, 16, 13, 11, 16]]
    assert [r["weights"] for r in report.rewritten] == ["precomputed"] * 2
    reasons = [s["reason"] for s in report.skipped]
    assert len(reasons) == 2 and "min_channels" in reasons[0] and "stride" in reasons[1]
    text = new.script()
    assert text.count("R.nn.conv2d(") == 2 and text.count("R.call_tir(") >= 2
    funcs = {gv.name_hint: f for gv, f in new.functions.items()}
    for r in report.rewritten:
        assert int(funcs[r["function"]].attrs["op_pattern"]) == 8  # opaque unless schedule="fusable"
    y = _run_relax(new, x.numpy())
    ref = model(x).detach().numpy()
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


def test_rewrite_weights_as_inputs_graph_and_bound() -> None:
    """Weights that are function inputs are transformed inside the PrimFunc; bound with `params`, they
    become constants transformed at compile time."""
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.torch import from_exported_program

    torch = pytest.importorskip("torch")
    model, x = _torch_model()
    mod, params = detach_params(from_exported_program(torch.export.export(model, (x,)), keep_params_as_input=True))
    arrays = [p.numpy() for p in params["main"]]
    ref = model(x).detach().numpy()
    graph, rep = nt.rewrite_conv2d(mod, "F(2,3)/classic", return_report=True)
    assert [r["weights"] for r in rep.rewritten] == ["graph"] * 2
    np.testing.assert_allclose(_run_relax(graph, x.numpy(), *arrays), ref, atol=1e-4, rtol=1e-4)
    names = [str(v.name) for v in mod["main"].params[1:]]
    bound, rep2 = nt.rewrite_conv2d(mod, "F(2,3)/classic", params=dict(zip(names, arrays)), return_report=True)
    assert [r["weights"] for r in rep2.rewritten] == ["precomputed"] * 2
    assert len(bound["main"].params) == 1


def test_rewrite_bad_input() -> None:
    with pytest.raises(InputError, match="Relax IRModule"):
        nt.rewrite_conv2d("not a module", "F(4,3)/nova")
    with pytest.raises(InputError, match="not in the catalog"):
        nt.rewrite_conv2d(tvm.IRModule(), "F(4,3)/nope")


# ---------------------------------------------------------------------------------------------
# CLI: generate, tune, bench


def test_cli_generate_tvm_llvm(tmp_path: Any, capsys: Any) -> None:
    from novagen.cli import run

    out = tmp_path / "build"
    assert run(["generate", "F(4,3)/nova", "--target", "tvm-llvm", "--layer", "1,8,10,10,8", "-o", str(out),
                "--json"]) == 0
    files = {p.suffix for p in out.iterdir()}
    assert files == {".py", ".so", ".md"}
    so = next(out.glob("*.so"))
    lib = tvm.runtime.load_module(str(so))
    spec = nt.make_spec("F(4,3)/nova", (1, 8, 10, 10, 8))
    x, w = _data((1, 8, 10, 10, 8), 3)
    y = tvm.runtime.empty(spec.output_shape, "float32", tvm.cpu())
    lib[spec.name](tvm.runtime.tensor(x), tvm.runtime.tensor(nt.transform_weights(spec.alg, w)), y)
    ref = correlate_direct(x, w, 1)
    assert np.linalg.norm(y.numpy() - ref) / np.linalg.norm(ref) < 1e-5
    script = next(out.glob("*.py")).read_text()
    assert "T.prim_func" in script


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cli_generate_tvm_cuda_without_gpu(tmp_path: Any, arch: str) -> None:
    """novagen's CUDA rule with its default decisions builds for Ampere and Hopper without a GPU."""
    from novagen.cli import run

    out = tmp_path / "cuda"
    assert run(["generate", "F(4,3)/nova", "--target", "tvm-cuda", "--layer", "1,16,14,14,16", "-o", str(out),
                "--arch", arch]) == 0
    assert arch in (out / "README.md").read_text()  # the target it was built for
    assert next(out.glob("*.so")).stat().st_size > 0
    cu = next(out.glob("*.cu")).read_text()
    assert "__global__" in cu and "threadIdx.x" in cu


def test_cli_bench_tvm_with_direct(capsys: Any) -> None:
    import json

    from novagen.cli import run

    assert run(["bench", "--target", "tvm-llvm", "--layer", "1,8,10,10,8", "-a", "F(2,3)", "-a", "F(4,3)/nova",
                "--repeats", "1", "--tvm-direct", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["layers"][0]
    assert set(row["candidates_ms"]) == {"ours:F(2,3)", "ours:F(4,3)/nova", "tvm_default:direct"}
    assert max(row["rel_error_vs_baseline"].values()) < 1e-5
    assert row["ratio"] == pytest.approx(row["baseline_ms"] / row["ours_ms"])
    assert row["tvm_default_ratio"] == pytest.approx(row["baseline_ms"] / row["tvm_default_ms"])
    assert run(["bench", "--target", "tvm-llvm", "--layer", "1,8,10,10,8", "-a", "F(2,3)", "--repeats", "1",
                "--tvm-direct"]) == 0
    out = capsys.readouterr().out
    assert "TVM direct ms" in out and "geomean over 1 layers" in out


@pytest.mark.parametrize("argv,match", [
    (["generate", "F(4,3)/nova", "--target", "tvm-llvm"], "--layer"),
    (["generate", "F(4,3)/nova", "--target", "tvm-llvm", "--layer", "1,8,8,8,8", "--layout", "NWHC"], "layout"),
    (["generate", "F(4,3)/nova", "--target", "c", "--layout", "NHWC"], "option of tvm-llvm, tvm-cuda"),
    (["generate", "F(4,3)/nova", "--target", "tvm-llvm", "--layer", "1,8,8,8,8", "--tuned", "/nonexistent"],
     "not a folder"),
    (["tune", "F(4,3)/nova", "--layer", "1,8,8,8,8", "--target", "cuda"], "llvm"),
    (["tune", "F(4,3)/nova", "--layer", "1,8,8,8,8", "--trials", "0"], "trials"),
    (["tune", "F(4,3)/nova", "--layer", "1,8,8,8,8", "--measure", "remote"], "--measure"),
    (["bench", "--target", "tvm-cuda", "--layer", "1,8,8,8,8"], "tvm-llvm"),
    (["bench", "--target", "c", "--layer", "1,8,8,8,8", "--tvm-direct"], "apply to --target tvm-llvm"),
])
def test_cli_bad_input(argv: list[str], match: str, tmp_path: Any, capsys: Any) -> None:
    from novagen.cli import run

    assert run([*argv[:1], *argv[1:]] + (["-o", str(tmp_path / "o")] if argv[0] == "generate" else [])) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_whole_model_bench_on_cuda_needs_a_gpu(capsys: Any) -> None:
    """`bench --target tvm-cuda --model` is the command for a GPU machine; without one it says so, one line."""
    import torch

    from novagen.cli import run

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the command would run the whole bench")
    assert run(["bench", "--target", "tvm-cuda", "--model", "resnet18", "--trials", "8"]) == 2
    err = capsys.readouterr().err
    assert "none is visible here" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_tune_bad_builder(tmp_path: Any) -> None:
    with pytest.raises(InputError, match="builder 'remote' is not known"):
        nt.tune("F(2,3)/classic", (1, 8, 8, 8, 8), tmp_path / "db", trials=1, builder="remote")
    with pytest.raises(InputError, match="runner 'remote' is not known"):
        nt.tune("F(2,3)/classic", (1, 8, 8, 8, 8), tmp_path / "db", trials=1, runner="remote")


def test_conv2d_refuses_a_module_packed_differently() -> None:
    """A module built with another k_block takes weights of another shape: refused before compiling."""
    layer = (1, 8, 8, 8, 8)
    mod = nt.conv2d_module("F(2,3)", layer, k_block=4)
    with pytest.raises(InputError, match="k_block"):
        nt.Conv2d("F(2,3)", layer, mod=mod)
    conv = nt.Conv2d("F(2,3)", layer, mod=mod, k_block=4)
    x, w = _data(layer, 3)
    ref = correlate_direct(x, w, 1)
    assert np.linalg.norm(conv(x, w) - ref) / np.linalg.norm(ref) < 1e-5


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_direct_module_is_tvm_conv2d(layout: str) -> None:
    """The baseline workload: TVM's own direct conv2d, unscheduled, equals the reference."""
    layer = (1, 4, 9, 7, 5)
    dc = nt.DirectConv2d(layer, padding=1, layout=layout)
    x, w = _data(layer, 3)
    xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = dc.run(tvm.runtime.tensor(xin), dc.weights(w)).numpy()
    y = y if layout == "NCHW" else y.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y, correlate_direct(x, w, 1), rtol=1e-5, atol=1e-5)
    assert "tvm_direct_1x4x9x7x5" in str(nt.direct_module(layer, 1, layout=layout)["main"].attrs["global_symbol"])


@pytest.mark.slow
def test_tune_resume_and_load(tmp_path: Any) -> None:
    """A few MetaSchedule trials into a JSON database; a second call runs nothing; the tuned module loads
    from the database and is correct."""
    db = tmp_path / "db"
    layer = (1, 8, 8, 8, 8)
    first = nt.tune("F(2,3)/classic", layer, db, trials=2, trials_per_iter=2, builder="in-process",
                    runner="in-process")
    assert first.trials_before == 0 and first.trials_after >= 1 and first.best_ms is not None
    again = nt.tune("F(2,3)/classic", layer, db, trials=first.trials_after)
    assert again.trials_before == again.trials_after == first.trials_after
    conv = nt.Conv2d("F(2,3)/classic", layer, mod=nt.load_tuned("F(2,3)/classic", layer, db))
    x, w = _data(layer, 3)
    ref = correlate_direct(x, w, 1)
    assert np.linalg.norm(conv(x, w) - ref) / np.linalg.norm(ref) < 1e-5
    with pytest.raises(InputError, match="no tuning record"):
        nt.load_tuned("F(2,3)/classic", (1, 8, 8, 8, 16), db)


@pytest.mark.slow
def test_bench_tuned_against_tvm_direct(tmp_path: Any, monkeypatch: Any) -> None:
    """Tune ours and TVM's direct conv2d a few trials in-process; the bench times untuned, tuned, TVM
    unscheduled and TVM tuned side by side, every candidate correct; auto given the database times them tuned."""
    from novagen.layers import Layer

    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))

    db = tmp_path / "db"
    layer = (1, 16, 12, 12, 16)
    ours = nt.tune("F(4,3)/nova", layer, db, trials=4, trials_per_iter=4, builder="in-process", runner="in-process")
    direct = nt.tune("direct", layer, db, trials=4, trials_per_iter=4, builder="in-process", runner="in-process")
    assert ours.trials_after >= 1 and direct.trials_after >= 1
    assert direct.workload.startswith("tvm_direct_1x16x12x12x16")
    result = nt.bench_layers([Layer(("l",), layer)], ["F(4,3)/nova"], repeats=2, tuned=db, direct=True)
    row = result["layers"][0]
    assert set(row["candidates_ms"]) == {"ours:F(4,3)/nova", "tuned:F(4,3)/nova", "tvm_default:direct",
                                         "tvm_tuned:direct"}
    assert max(row["rel_error_vs_baseline"].values()) < 1e-5
    assert row["tuned_vs_tvm_tuned"] == pytest.approx(row["tvm_tuned_ms"] / row["tuned_ms"])
    assert "geomean_tuned_vs_tvm_tuned" in result
    # auto times the candidates the database holds with their records, TVM's conv2d among them
    from novagen.backends.tvm.auto import DIRECT, choose, tuned_modules

    cands = ("F(2,3)/best", "F(4,3)/nova")
    found = tuned_modules(db, [*cands, DIRECT], layer, (1, 1), "float32", "NCHW", nt.host_target())
    assert set(found) == {"F(4,3)/nova", DIRECT}  # F(2,3)/best was never tuned
    from novagen.backends.tvm.tuning import open_database

    opened = tuned_modules(open_database(db), [*cands, DIRECT], layer, (1, 1), "float32", "NCHW", nt.host_target())
    assert {n: m.script() for n, m in opened.items()} == {n: m.script() for n, m in found.items()}
    for name in found:  # each the database's best record, as load_tuned applies it
        assert found[name].script() == nt.load_tuned(name, layer, db).script()
    untuned = choose(layer, (1, 1), candidates=cands)
    tuned = choose(layer, (1, 1), candidates=cands, database=db)
    assert untuned.tuned == () and "TVM's conv2d (untuned)" in untuned.reason and not untuned.cached
    assert tuned.tuned == ("F(4,3)/nova", DIRECT) and "TVM's conv2d (tuned)" in tuned.reason and not tuned.cached
    again = choose(layer, (1, 1), candidates=cands, database=db)
    assert again.cached and again.algorithm == tuned.algorithm and again.tuned == tuned.tuned


@pytest.mark.slow
def test_tune_through_rpc_tracker_on_localhost(tmp_path: Any) -> None:
    """MetaSchedule measuring through TVM's RPC: a tracker and a server on 127.0.0.1, the candidates built
    here and timed on the server found through the tracker under its key."""
    from tvm.rpc.server import Server
    from tvm.rpc.tracker import Tracker

    tracker = Tracker("127.0.0.1", port=9190, port_end=9290, silent=True)
    server = Server("127.0.0.1", port=9300, port_end=9400, key="novagen-test",
                               tracker_addr=("127.0.0.1", tracker.port), silent=True)
    try:
        runner = nt.rpc_runner("127.0.0.1", tracker.port, "novagen-test")
        layer = (1, 8, 8, 8, 8)
        result = nt.tune("F(2,3)/classic", layer, tmp_path / "db", trials=2, trials_per_iter=2,
                         builder="in-process", runner=runner)
        assert result.trials_after >= 1 and result.best_ms is not None and result.best_ms < 1e3
    finally:
        server.terminate()
        tracker.terminate()
