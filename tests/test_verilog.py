"""The Verilog target: shift-add RTL of the integer-scaled transforms passes its testbench in iverilog and
is lint-clean in verilator; CSD constant multipliers and adder counts are right."""

import pytest

import novagen
from novagen.backends import verilog
from novagen.cli import run

NAMES = ["F(2,3)/classic", "F(4,3)/classic", "F(4,3)/nova", "F(6,3)/nova"]


def _need(*tools):
    missing = [t for t in tools if verilog.tool(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)} (apt-get install "
                              f"{' '.join(sorted({'vvp': 'iverilog'}.get(t, t) for t in missing))})")


def test_rtl_adder_count_matches_program():
    alg = novagen.algorithm("F(4,3)/nova")
    t = verilog.transforms(alg, 8)
    rtl, _ = t["bt"]
    from novagen.fixedpoint import FixedPointDesign, csd_adders

    prog = FixedPointDesign(alg).bt_program
    c = prog.counts()
    assert rtl.prog_adds == c["adds"] and rtl.muls == c["muls"]
    expected = sum(csd_adders(int(op.c)) for op in prog.ops if op.kind in ("mul", "shift"))
    assert rtl.csd_adds == expected


@pytest.mark.hls
@_need("iverilog", "vvp")
@pytest.mark.parametrize("name", NAMES)
def test_testbenches_pass_in_iverilog(tmp_path, name):
    out = tmp_path / "rtl"
    assert run(["generate", name, "--target", "verilog", "--bits", "8", "-o", str(out)]) == 0
    p = verilog.prefix(novagen.algorithm(name))
    for part in ("bt", "at"):
        passed, failed = verilog.simulate(out, f"{p}_{part}")
        assert failed == 0 and passed > 200


@pytest.mark.hls
@_need("iverilog", "vvp")
def test_testbench_catches_a_wrong_adder(tmp_path):
    out = tmp_path / "rtl"
    verilog.generate(novagen.algorithm("F(4,3)/classic"), out, bits=6)
    p = verilog.prefix(novagen.algorithm("F(4,3)/classic"))
    path = out / f"{p}_bt.v"
    text = path.read_text()
    i = text.index(" - ", text.index("wire signed"))
    path.write_text(text[:i] + " + " + text[i + 3:])
    passed, failed = verilog.simulate(out, f"{p}_bt")
    assert failed > 0


@pytest.mark.hls
@_need("verilator")
@pytest.mark.parametrize("name", ["F(4,3)/classic", "F(6,3)/nova"])
def test_verilator_lint_clean(tmp_path, name):
    verilog.generate(novagen.algorithm(name), tmp_path, bits=8)
    p = verilog.prefix(novagen.algorithm(name))
    for part in ("bt", "at"):
        assert verilog.lint(tmp_path / f"{p}_{part}.v") == ""


def test_bad_bits(tmp_path, capsys):
    assert run(["generate", "F(4,3)/classic", "--target", "verilog", "--bits", "x", "-o", str(tmp_path / "r")]) == 2
    assert "--bits 'x'" in capsys.readouterr().err
