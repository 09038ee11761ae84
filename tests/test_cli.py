import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from novagen import algorithm
from novagen.cli import run

NOVA63 = "0,3/5,-3/5,1,-1,7/6,-7/6"


def cli(capsys, *args):
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_table(capsys):
    code, out, _ = cli(capsys, "show", "F(6,3)", "--points", NOVA63)
    assert code == 0
    assert "0, 3/5, -3/5, 1, -1, 7/6, -7/6, inf" in out
    assert "16807/7776" in out  # (7/6)^5 in AT
    assert "vandermonde_cond" in out and "76.64" in out


def test_show_json_contract(capsys):
    code, out, _ = cli(capsys, "show", "F(6,3)/nova", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["spec"] == "F(6,3)"
    assert doc["points"] == ["0", "3/5", "-3/5", "1", "-1", "7/6", "-7/6", "inf"]
    assert len(doc["AT"]) == 6 and len(doc["AT"][0]) == 8
    assert len(doc["G"]) == 8 and len(doc["BT"]) == 8
    assert all(isinstance(v, str) for row in doc["BT"] for v in row)
    for key in ("vandermonde_cond", "cond_AT", "cond_G", "cond_BT", "max_entry"):
        assert key in doc["metrics"]
    assert doc["metrics"]["vandermonde_cond"] == pytest.approx(76.64, abs=0.01)
    # the same points from the command line give the same algorithm as the catalog
    code, out2, _ = cli(capsys, "show", "F(6,3)", "--points", NOVA63, "--json")
    assert json.loads(out2)["AT"] == doc["AT"]


def test_show_nested_and_snap(capsys):
    code, out, _ = cli(capsys, "show", "F(4x2,3x3)", "--json")
    assert code == 0 and [a["spec"] for a in json.loads(out)["axes"]] == ["F(4,3)", "F(2,3)"]
    code, out, _ = cli(capsys, "show", "F(4,3)", "-p", "0,0.833,-0.833,1.167,-1.167", "--snap", "6", "--json")
    assert json.loads(out)["points"] == ["0", "5/6", "-5/6", "7/6", "-7/6", "inf"]


def test_verify_catalog(capsys):
    code, out, _ = cli(capsys, "verify", "F(8,3)/nova")
    assert code == 0 and "exact" in out and "1d-symbolic F(8,3)" in out
    code, out, _ = cli(capsys, "verify", "F(4,3)/nova", "--json")
    cert = json.loads(out)
    assert code == 0 and cert["verified"] is True and "2d-symbolic F(4x4,3x3)" in cert["proven"]
    assert cert["hash"] == algorithm("F(4,3)/nova").content_hash


def test_verify_file_round_trip_and_rejection(capsys, tmp_path):
    code, out, _ = cli(capsys, "show", "F(4,3)/nova", "--json")
    good = tmp_path / "good.json"
    good.write_text(out)
    assert cli(capsys, "verify", "--file", str(good))[0] == 0
    doc = json.loads(out)
    hand = tmp_path / "hand.json"  # only the matrices, numbers mixed with strings, as a user writes them
    hand.write_text(json.dumps({"AT": [[1, 1, 1, 0], [0, 1, -1, 1]], "G": [[1, 0, 0], [0.5, 0.5, 0.5],
                                                                            [0.5, -0.5, 0.5], [0, 0, 1]],
                                "BT": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]]}))
    assert cli(capsys, "verify", "-f", str(hand))[0] == 0
    doc["G"][2][1] = "1/3"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, out, err = cli(capsys, "verify", "--file", str(bad))
    assert code == 1 and "NOT exact" in out and "Traceback" not in err
    code, out, _ = cli(capsys, "verify", "--file", str(bad), "--json")
    assert code == 1 and json.loads(out)["verified"] is False


@pytest.mark.parametrize("args,fragment", [
    (["show", "F(0,3)"], "at least 1"),
    (["show", "F(6,3)", "-p", "0,1,1,2,-2,3,-3"], "appears twice"),
    (["show", "F(6,3)", "-p", "0,1,-1"], "needs 7 finite points"),
    (["show", "F(6,3)", "-p", "0,one,-1,2,-2,3,-3"], "'one' is not a point"),
    (["show", "F(40,3)"], "exceeds the maximum"),
    (["show", "F(6,3)/golden"], "not in the catalog"),
    (["show", "F(6,3)", "-p", "golden"], "not a point"),
    (["verify", "--file", "/nonexistent/t.json"], "cannot read"),
    (["export", "F(4,3)/nova", "--format", "pdf"], "unknown export format"),
    (["export", "F(4,3)/nova", "-o", "out.xyz"], "give --format"),
])
def test_bad_input_is_one_line_exit_2(capsys, args, fragment):
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_verify_file_that_is_not_a_transform(capsys, tmp_path):
    for content, fragment in (("not json", "is not JSON"), ('{"AT": [[1]]}', "lacks G, BT"), ("[1, 2]", "JSON object")):
        path = tmp_path / "t.json"
        path.write_text(content)
        code, _, err = cli(capsys, "verify", "--file", str(path))
        assert code == 2 and fragment in err


def test_usage_errors_exit_2(capsys):
    assert cli(capsys, "verify")[0] == 2
    assert cli(capsys, "frobnicate")[0] == 2


@pytest.mark.parametrize("fmt,suffix", [("json", ".json"), ("c", ".h"), ("npz", ".npz"), ("latex", ".tex"),
                                        ("markdown", ".md")])
def test_export_formats(capsys, tmp_path, fmt, suffix):
    path = tmp_path / "sub" / f"f43{suffix}"
    code, _, err = cli(capsys, "export", "F(4,3)/nova", "--format", fmt, "-o", str(path))
    assert code == 2 and "does not exist" in err and not path.parent.exists()  # a file's folder must exist
    path.parent.mkdir()
    code, _, err = cli(capsys, "export", "F(4,3)/nova", "--format", fmt, "-o", str(path))
    assert code == 0 and path.exists() and "wrote" in err
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    alg = algorithm("F(4,3)/nova")
    if fmt == "json":
        assert json.loads(path.read_text())["AT"] == alg.to_dict()["AT"]
    elif fmt == "npz":
        data = np.load(path)
        np.testing.assert_array_equal(data["G"], alg.matrices()[1])
        assert data["BT_exact"][0, 0] == str(alg.BT[0][0])
        assert np.isinf(data["points"][-1])
    elif fmt == "latex":
        text = path.read_text()
        assert "\\frac{5}{6}" in text and "\\begin{bmatrix}" in text
    elif fmt == "markdown":
        assert "| 0 | 5/6 | -5/6 | 7/6 | -7/6 | 0 |" in path.read_text()
    else:
        assert "novagen_f4_3_nova_AT[4][6]" in path.read_text()


def test_export_to_stdout_and_format_from_extension(capsys, tmp_path):
    code, out, _ = cli(capsys, "export", "F(2,3)/classic", "--format", "markdown")
    assert code == 0 and out.startswith("## F(2,3)/classic")
    path = tmp_path / "x.json"
    assert cli(capsys, "export", "F(2,3)/classic", "-o", str(path))[0] == 0
    assert json.loads(path.read_text())["spec"] == "F(2,3)"
    assert cli(capsys, "export", "F(2,3)/classic", "--format", "npz")[0] == 2
    code, out, _ = cli(capsys, "export", "F(2,3)/classic", "-o", str(tmp_path / "y.npz"), "--json")
    report = json.loads(out)
    assert code == 0 and report["format"] == "npz" and report["bytes"] == (tmp_path / "y.npz").stat().st_size


def test_failed_export_leaves_no_file(capsys, tmp_path):
    path = tmp_path / "f.h"
    code, _, _ = cli(capsys, "export", "F(6,3)", "-p", "0,1,1,2,-2,3,-3", "-o", str(path))
    assert code == 2 and not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_exported_c_header_computes_the_correlation(capsys, tmp_path):
    """A C program that includes the header runs F(4,3) in double and matches direct correlation."""
    header = tmp_path / "f43.h"
    assert cli(capsys, "export", "F(4,3)/nova", "--format", "c", "-o", str(header))[0] == 0
    src = tmp_path / "main.c"
    src.write_text(r"""
#include <stdio.h>
#include "f43.h"
int main(void) {
    double g[3] = {0.3, -1.2, 0.7}, d[6] = {1.0, 2.0, -0.5, 0.25, 3.0, -1.5}, U[6], V[6], y;
    double err = 0, errf = 0;
    for (int j = 0; j < 6; j++) {
        U[j] = 0; V[j] = 0;
        for (int k = 0; k < 3; k++) U[j] += novagen_f4_3_nova_G_f64[j][k] * g[k];
        for (int l = 0; l < 6; l++) V[j] += novagen_f4_3_nova_BT_f64[j][l] * d[l];
    }
    for (int i = 0; i < 4; i++) {
        double ref = 0, yf = 0;
        for (int k = 0; k < 3; k++) ref += g[k] * d[i + k];
        y = 0;
        for (int j = 0; j < 6; j++) {
            y += novagen_f4_3_nova_AT_f64[i][j] * U[j] * V[j];
            yf += novagen_f4_3_nova_AT[i][j] * U[j] * V[j];
        }
        err += (y - ref) * (y - ref); errf += (yf - ref) * (yf - ref);
    }
    printf("%d %.3e %.3e\n", NOVAGEN_F4_3_NOVA_ALPHA, err, errf);
    return !(err < 1e-24 && errf < 1e-10);
}
""")
    exe = tmp_path / "main"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True, cwd=tmp_path)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert result.stdout.split()[0] == "6"


def test_catalog_table_and_json(capsys):
    code, out, _ = cli(capsys, "catalog")
    assert code == 0
    for name in ("F(4,3)/nova", "F(6,3)/classic", "F(8,3)/integer"):
        assert name in out
    code, out, _ = cli(capsys, "catalog", "F(6,3)", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["F(6,3)/integer", "F(6,3)/classic", "F(6,3)/nova", "F(6,3)/kappa",
                                         "F(6,3)/transforms", "F(6,3)/best", "F(6,3)/best-dyadic",
                                         "F(6,3)/digits-int8", "F(6,3)/shapes-int8"]
    assert rows[2]["metrics"]["vandermonde_cond"] == pytest.approx(76.64, abs=0.01)
    assert rows[1]["provenance"]["family"] == "classic"
    assert rows[3]["provenance"]["campaign"] == "search/f6_3-kappa.toml"
    assert rows[3]["metrics"]["vandermonde_cond"] < rows[2]["metrics"]["vandermonde_cond"]


def test_console_script_has_no_traceback():
    beside = Path(sys.executable).parent / "novagen"  # this Python's novagen, not another one on PATH
    exe = str(beside) if beside.is_file() else shutil.which("novagen") or "novagen"
    result = subprocess.run([exe, "show", "F(0,3)"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "novagen: error: F(0,3): m and r must be at least 1, as in F(6,3)"
    ok = subprocess.run([exe, "verify", "F(6,3)/nova"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_python_dash_m_novagen_is_the_same_command(capsys):
    mod = subprocess.run([sys.executable, "-m", "novagen", "show", "F(4,3)/nova", "--json"], capture_output=True,
                         text=True)
    code, out, _ = cli(capsys, "show", "F(4,3)/nova", "--json")
    assert mod.returncode == code == 0 and json.loads(mod.stdout) == json.loads(out)
    bad = subprocess.run([sys.executable, "-m", "novagen", "show", "F(0,3)"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("novagen: error: F(0,3)")
