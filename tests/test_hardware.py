"""novagen hardware: adder counts after sharing, widths, error, yosys figures; the cost of non-dyadic points."""

import json

import pytest

import novagen
from novagen.backends import verilog
from novagen.cli import run
from novagen.hardware import is_dyadic, report, tile_adders_per_output


def test_non_dyadic_points_cost_several_times_the_adders(capsys):
    assert run(["hardware", "F(6,3)/classic", "F(6,3)/nova", "--input-bits", "8", "--no-yosys", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    classic, nova = doc["rows"]
    assert classic["dyadic"] and not nova["dyadic"]
    assert nova["tile_adders"] > 2 * classic["tile_adders"]
    assert nova["transforms"]["bt"]["const_mults"] > classic["transforms"]["bt"]["const_mults"]
    assert nova["widths"]["m"] > classic["widths"]["m"]
    for r in (classic, nova):
        assert 0 < r["error"]["bound_ratio"] <= 1 and r["error"]["rel_l2"] > 0
    assert doc["notes"] and "F(6,3)/nova" in doc["notes"][0]


def test_tile_adders_match_the_rtl():
    alg = novagen.algorithm("F(4,3)/nova")
    r = report(alg, yosys=False, error_shape=(1, 2, 8, 8, 2))
    bt, at = r["transforms"]["bt"], r["transforms"]["at"]
    t = verilog.transforms(alg, 8)
    assert (bt["adders"], at["adders"]) == (t["bt"][0].adders, t["at"][0].adders)
    assert tile_adders_per_output(alg) == pytest.approx(r["tile_adders_per_output"])
    assert not is_dyadic(alg) and is_dyadic(novagen.algorithm("F(4,3)/classic"))


@pytest.mark.hls
@pytest.mark.skipif(verilog.tool("yosys") is None, reason="yosys is not installed (apt-get install yosys)")
def test_yosys_figures(capsys):
    assert run(["hardware", "F(2,3)/classic", "F(4,3)/classic", "--family", "ice40", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    small, large = (r["transforms"]["bt"]["yosys"]["ice40"] for r in rows)
    assert 0 < small["luts"] < large["luts"] and small["dsps"] == 0


def test_bad_family(capsys):
    assert run(["hardware", "F(2,3)/classic", "--family", "asic"]) == 2
    assert "--family asic" in capsys.readouterr().err


def test_best_dyadic_is_dyadic_and_unknown_names_are_refused(capsys):
    from novagen.hardware import resolve

    alg = resolve("F(6,3)/best-dyadic")
    assert is_dyadic(alg) and alg.alpha == 8
    novagen.verify(alg)
    assert run(["hardware", "F(6,3)/no-such-entry", "--no-yosys"]) == 2
    assert "F(6,3)/no-such-entry" in capsys.readouterr().err
