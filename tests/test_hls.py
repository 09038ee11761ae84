"""The HLS target: the generated dataflow design, C-simulated with g++ and the ap_types headers of hls4ml,
equals novagen's fixed-point model bit for bit and the float64 reference within the predicted bound."""

import shutil

import pytest

import novagen
from novagen.backends import hls
from novagen.cli import run

try:
    hls.ap_types_dir()
    _AP = None
except Exception as exc:  # BuildError: the reason is printed by pytest -rs
    _AP = str(exc)

pytestmark = [pytest.mark.hls,
              pytest.mark.skipif(_AP is not None, reason=f"HLS C simulation unavailable: {_AP}"),
              pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")]


@pytest.mark.parametrize("name,layer,bits", [("F(2,3)/classic", "1,16,32,32,16", "auto"),
                                             ("F(4,3)/classic", "1,16,32,32,16", "auto"),
                                             ("F(4,3)/nova", "2,5,13,11,7", "6")])
def test_csim_bit_exact_and_within_bound(tmp_path, capsys, name, layer, bits):
    out = tmp_path / "hls"
    assert run(["generate", name, "--target", "hls", "--layer", layer, "--bits", bits, "-o", str(out)]) == 0
    prefix = hls.prefix(novagen.algorithm(name))
    src = (out / f"{prefix}.cpp").read_text()
    assert "#pragma HLS DATAFLOW" in src and "PIPELINE II=1" in src and "ARRAY_PARTITION" in src
    assert "ap_fixed<" in (out / f"{prefix}.h").read_text()
    assert "csynth_design" in (out / "run_hls.tcl").read_text()
    assert not list(out.glob("ap_*.h")), "the ap_types headers must not be copied"
    capsys.readouterr()
    assert run(["hls-sim", str(out), "--json"]) == 0
    import json

    rep = json.loads(capsys.readouterr().out)
    n, c, h, w, k = map(int, layer.split(","))
    assert rep["outputs"] == n * k * h * w and rep["mismatches"] == 0 and rep["within_bound"] and rep["passed"]
    assert rep["max_abs_error"] > 0


@pytest.mark.slow
def test_csim_detects_a_changed_coefficient(tmp_path, capsys):
    out = tmp_path / "hls"
    hls.generate(novagen.algorithm("F(2,3)/classic"), out, layer=(1, 3, 8, 8, 2))
    text = (out / "weights.h").read_text()
    start = text.index("{ {") + 4
    end = text.index(",", start)
    (out / "weights.h").write_text(text[:start] + str(int(text[start:end]) + 7) + text[end:])
    rep = hls.simulate(out)
    assert rep.mismatches > 0 and not rep.passed
    assert run(["hls-sim", str(out)]) == 1


def test_hls_sim_bad_folder(tmp_path, capsys):
    assert run(["hls-sim", str(tmp_path)]) == 2
    assert "design.json" in capsys.readouterr().err
