"""novagen hardware: the whole tile engine per output (transform adders after sharing, DSPs for the α²
products, widths, throughput per DSP), error with exact and fixed datapaths, yosys figures of the engine."""

import json

import pytest

import novagen
from novagen.backends import verilog
from novagen.cli import run
from novagen.hardware import is_dyadic, report, tile_adders_per_output


def test_non_dyadic_points_cost_more_per_output(capsys):
    assert run(["hardware", "F(6,3)/classic", "F(6,3)/nova", "F(4,3)/classic", "--input-bits", "8", "--no-yosys",
                "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    classic, nova, f43 = doc["rows"]
    assert classic["dyadic"] and not nova["dyadic"]
    assert nova["per_output"]["adders"] > 2 * classic["per_output"]["adders"]
    assert nova["passes"]["bt_row"]["const_mults"] > classic["passes"]["bt_row"]["const_mults"]
    assert nova["widths"]["m"] > classic["widths"]["m"]
    # per output, not per tile: F(6,3) needs fewer multiplications per output than F(4,3)
    assert classic["per_output"]["multiplies"] == pytest.approx(64 / 36)
    assert f43["per_output"]["multiplies"] == 2.25 > classic["per_output"]["multiplies"]
    assert f43["gops_per_dsp_200mhz"] == pytest.approx(2 * 9 * 16 / 36 * 0.2)
    for r in (classic, nova, f43):
        assert 0 < r["error"]["bound_ratio"] <= 1 and 0 < r["error_fixed"]["bound_ratio"] <= 1
        assert r["error_fixed"]["rel_l2"] >= r["error"]["rel_l2"]
        assert all(r["widths_fixed"][s] <= 16 for s in ("z", "v", "m", "t", "y"))
    assert any("F(6,3)/nova" in n and "per output" in n for n in doc["notes"])


def test_engine_adders_match_the_rtl_passes():
    alg = novagen.algorithm("F(4,3)/nova")
    r = report(alg, yosys=False, error_shape=(1, 2, 8, 8, 2))
    t = verilog.transforms(alg, 8)
    assert {k: v["adders"] for k, v in r["passes"].items()} == {k: v[0].adders for k, v in t.items()}
    a, m = alg.alpha, alg.m
    assert r["engine"]["tile_adders"] == a * (t["bt_row"][0].adders + t["bt_col"][0].adders
                                              + t["at_col"][0].adders) + m * t["at_row"][0].adders
    assert tile_adders_per_output(alg) == pytest.approx(r["per_output"]["adders"])
    assert r["engine"]["dsps"] == a * a * r["engine"]["dsps_per_multiplier"] and r["engine"]["dsps_per_multiplier"] > 1
    assert not is_dyadic(alg) and is_dyadic(novagen.algorithm("F(4,3)/classic"))


@pytest.mark.hls
@pytest.mark.slow
@pytest.mark.skipif(verilog.tool("yosys") is None, reason="yosys is not installed (apt-get install yosys)")
def test_yosys_figures_of_the_engine(capsys):
    assert run(["hardware", "F(2,3)/classic", "--family", "xilinx,ice40", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    x, ice = row["yosys"]["xilinx"], row["yosys"]["ice40"]
    assert x["dsps"] == row["engine"]["dsps"] == 16 and ice["dsps"] == 16
    assert x["luts"] > 100 and x["ffs"] > 100


def test_bad_family(capsys):
    assert run(["hardware", "F(2,3)/classic", "--family", "asic"]) == 2
    assert "--family asic" in capsys.readouterr().err
    assert run(["hardware", "F(2,3)/classic", "--datapath-bits", "4"]) == 2
    assert "--datapath-bits 4" in capsys.readouterr().err


def test_best_dyadic_is_dyadic_and_unknown_names_are_refused(capsys):
    from novagen.hardware import resolve

    alg = resolve("F(6,3)/best-dyadic")
    assert is_dyadic(alg) and alg.alpha == 8
    novagen.verify(alg)
    assert run(["hardware", "F(6,3)/no-such-entry", "--no-yosys"]) == 2
    assert "F(6,3)/no-such-entry" in capsys.readouterr().err
