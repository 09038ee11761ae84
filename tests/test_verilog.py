"""The Verilog target: a pipelined tile engine and the layer around it, simulated end to end in iverilog
and verilator bit for bit against novagen's fixed-point model; each transform pass sized for its own input
range; lint-clean; yosys infers α² × PK DSPs."""

import json

import numpy as np
import pytest

import novagen
from novagen.backends import verilog
from novagen.cli import run
from novagen.fixedpoint import FixedPointDesign, csd_adders


def _need(*tools):
    missing = [t for t in tools if verilog.tool(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)} (apt-get install "
                              f"{' '.join(sorted({'vvp': 'iverilog'}.get(t, t) for t in missing))})")


def test_rtl_adder_count_matches_program():
    alg = novagen.algorithm("F(4,3)/nova")
    rtl, _ = verilog.transforms(alg, 8)["bt_row"]
    prog = FixedPointDesign(alg).bt_program
    c = prog.counts()
    assert rtl.prog_adds == c["adds"] and rtl.muls == c["muls"]
    assert rtl.csd_adds == sum(csd_adders(int(op.c)) for op in prog.ops if op.kind in ("mul", "shift"))


@pytest.mark.hls
@_need("iverilog", "vvp")
@pytest.mark.parametrize("name", ["F(4,3)/classic", "F(6,3)/nova"])
def test_every_pass_is_exact_over_its_own_input_range(tmp_path, name):
    """The column passes take the row passes' results, wider than the inputs: each module is sized for its
    own range and passes extreme and random vectors of that width."""
    alg = novagen.algorithm(name)
    des = FixedPointDesign(alg, in_bits=8, channels=16)
    ps = verilog.passes(des, verilog.prefix(alg))
    assert ps["bt_col"][0].in_width == des.widths["z"] > ps["bt_row"][0].in_width == 8
    assert ps["at_col"][0].in_width == des.widths["m"] and ps["at_row"][0].in_width == des.widths["t"]
    for key, (rtl, M) in ps.items():
        files = verilog.render_module(rtl, M, key, key, alg.label, vectors=100)
        for fname, text in files.items():
            (tmp_path / fname).write_text(text)
        passed, failed = verilog.simulate(tmp_path, rtl.name)
        assert failed == 0 and passed > 100, key


def _layer(tmp_path, name, layer, *extra):
    rng = np.random.default_rng(7)
    n, c, h, w, k = layer
    np.savez(tmp_path / "w.npz", conv=rng.standard_normal((k, c, 3, 3)) * np.sqrt(2 / (9 * c)))
    out = tmp_path / "r"
    assert run(["generate", name, "--target", "verilog", "--layer", ",".join(map(str, layer)), "--weights",
                str(tmp_path / "w.npz"), "-o", str(out), *extra]) == 0
    return out


def _rtl_sim(capsys, out, simulator):
    capsys.readouterr()
    code = run(["rtl-sim", str(out), "--simulator", simulator, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.hls
@_need("iverilog", "vvp")
@pytest.mark.parametrize("name,layer,extra", [
    ("F(4,3)/classic", (1, 16, 16, 16, 16), []),
    ("F(2,3)/classic", (2, 5, 9, 7, 6), ["--channels-per-cycle", "3", "--padding", "0"]),
    ("F(4,3)/classic", (1, 6, 10, 10, 8), ["--datapath-bits", "18", "--channels-per-cycle", "2"]),
])
def test_layer_end_to_end_in_iverilog_bit_exact(tmp_path, capsys, name, layer, extra):
    out = _layer(tmp_path, name, layer, *extra)
    code, doc = _rtl_sim(capsys, out, "iverilog")
    (rep,) = doc["simulators"]
    n, c, h, w, k = layer
    pad = 0 if "--padding" in extra else 1
    assert code == 0 and doc["passed"], rep
    assert rep["outputs"] == rep["testbench_passed"] == n * k * (h + 2 * pad - 2) * (w + 2 * pad - 2)
    assert rep["mismatches"] == 0 and rep["within_bound"] and "torch" in rep["reference"]


@pytest.mark.hls
@pytest.mark.slow
@_need("verilator", "iverilog")
def test_layer_end_to_end_in_verilator_and_lint_clean(tmp_path, capsys):
    out = _layer(tmp_path, "F(4,3)/classic", (1, 16, 16, 16, 16))
    code, doc = _rtl_sim(capsys, out, "verilator")
    assert code == 0 and doc["passed"] and doc["simulators"][0]["testbench_passed"] == 16 * 16 * 16
    p = verilog.prefix(novagen.algorithm("F(4,3)/classic"))
    assert verilog.lint(out / f"{p}_layer.v", f"{p}_layer", (str(out / f"{p}_engine.v"),
                                                             str(out / f"{p}_passes.v"))) == ""


@pytest.mark.hls
@_need("iverilog", "vvp")
def test_testbench_and_rtl_sim_catch_a_wrong_output(tmp_path, capsys):
    out = _layer(tmp_path, "F(2,3)/classic", (1, 3, 6, 6, 2))
    lines = (out / "data" / "y_expected.hex").read_text().split()
    lines[5] = format((int(lines[5], 16) + 1) % (1 << (4 * len(lines[5]))), f"0{len(lines[5])}x")
    (out / "data" / "y_expected.hex").write_text("\n".join(lines) + "\n")
    code, doc = _rtl_sim(capsys, out, "iverilog")
    rep = doc["simulators"][0]
    assert code == 1 and rep["testbench_failed"] == 1 and rep["mismatches"] == 0  # the RTL is right, the file not


@pytest.mark.hls
@pytest.mark.slow
@_need("yosys")
def test_yosys_infers_alpha_squared_times_pk_dsps(tmp_path):
    out = _layer(tmp_path, "F(2,3)/classic", (1, 4, 8, 8, 4), "--channels-per-cycle", "2")
    p = verilog.prefix(novagen.algorithm("F(2,3)/classic"))
    stats = verilog.synth_stats([out / f"{p}_passes.v", out / f"{p}_engine.v"], f"{p}_engine", "xilinx")
    assert stats["dsps"] == 16 * 2 and stats["luts"] > 100


def test_bad_input(tmp_path, capsys):
    assert run(["generate", "F(4,3)/classic", "--target", "verilog", "--bits", "x", "--self-test",
                "-o", str(tmp_path / "r")]) == 2
    assert "bits 'x'" in capsys.readouterr().err
    assert run(["generate", "F(4,3)/classic", "--target", "verilog", "--layer", "1,4,8,8,6", "--self-test",
                "--channels-per-cycle", "4", "-o", str(tmp_path / "r")]) == 2
    assert "must divide the 6 output channels" in capsys.readouterr().err
    assert run(["rtl-sim", str(tmp_path)]) == 2
    assert "design.json" in capsys.readouterr().err
