"""The HLS target: a user's weights (npz, torch state dict, ONNX) become an engine whose C simulation (g++,
hls::stream and ap_int from hls4ml) equals novagen's fixed-point model bit for bit and torch.conv2d within
the predicted bound; the testbench checks itself; the parallelism knobs and a fixed-width datapath keep
that true."""

import json
import shutil
import subprocess

import numpy as np
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


def _trained_like(k, c, seed=0):
    """Weights shaped like a trained layer's: He-scaled, a few large ones, not uniform."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((k, c, 3, 3)) * np.sqrt(2.0 / (9 * c)) * rng.choice([0.5, 1, 3], size=(k, c, 1, 1))


def _sim(capsys, folder):
    capsys.readouterr()
    code = run(["hls-sim", str(folder), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_generate_from_npz_weights_and_csim_against_torch(tmp_path, capsys):
    w = _trained_like(16, 16)
    np.savez(tmp_path / "w.npz", conv=w)
    out = tmp_path / "d"
    assert run(["generate", "F(4,3)/classic", "--target", "hls", "--layer", "1,16,32,32,16", "--weights",
                str(tmp_path / "w.npz"), "-o", str(out)]) == 0
    prefix = hls.prefix(novagen.algorithm("F(4,3)/classic"))
    src = (out / f"{prefix}.cpp").read_text()
    assert "#pragma HLS DATAFLOW" in src and "m_axi port=u" in src and "hls::stream<xbeat_t>" in src
    assert "#include <hls_stream.h>" in (out / f"{prefix}.h").read_text() and "nv_stream" not in src
    assert not list(out.glob("ap_*.h")) and not list(out.glob("hls_*.h")), "headers must not be copied"
    assert not (out / "weights.h").exists()  # weights arrive through the port, not compiled in
    assert np.allclose(np.loadtxt(out / "data" / "w.txt").reshape(w.shape), w)
    code, rep = _sim(capsys, out)
    assert code == 0 and rep["passed"] and rep["testbench_exit"] == 0 and rep["mismatches"] == 0
    assert rep["outputs"] == 16 * 32 * 32 and rep["within_bound"] and "torch" in rep["reference"]
    assert 0 < rep["rel_l2_error"] < 0.01


def test_the_testbench_alone_fails_on_one_corrupted_output(tmp_path):
    out = tmp_path / "d"
    hls.generate(novagen.algorithm("F(2,3)/classic"), out, layer=(1, 3, 8, 8, 2), self_test=True)
    prefix = hls.prefix(novagen.algorithm("F(2,3)/classic"))
    exe = tmp_path / "tb"
    subprocess.run(["g++", "-O1", "-std=c++14", "-w", f"-I{hls.ap_types_dir()}", f"-I{out}",
                    str(out / f"{prefix}.cpp"), str(out / "tb.cpp"), "-o", str(exe)], check=True)
    ok = subprocess.run([str(exe)], cwd=out, capture_output=True, text=True)
    assert ok.returncode == 0 and "0 mismatches" in ok.stdout
    lines = (out / "data" / "y_expected.txt").read_text().splitlines()
    lines[37] = str(int(lines[37]) + 1)
    (out / "data" / "y_expected.txt").write_text("\n".join(lines) + "\n")
    bad = subprocess.run([str(exe)], cwd=out, capture_output=True, text=True)
    assert bad.returncode == 1 and "1 mismatches" in bad.stdout and "output 37" in bad.stderr


@pytest.mark.parametrize("name,layer,extra", [
    ("F(4,3)/classic", (2, 6, 13, 11, 8), ["--tiles-per-cycle", "2", "--channels-per-cycle", "4"]),
    ("F(2,3)/classic", (1, 5, 9, 7, 6), ["--tiles-per-cycle", "3", "--channels-per-cycle", "3", "--padding", "0"]),
    pytest.param("F(4,3)/nova", (1, 4, 10, 10, 4), ["--bits", "6", "--channels-per-cycle", "2"],
                 marks=pytest.mark.slow),
])
def test_parallel_engines_from_a_torch_state_dict_stay_bit_exact(tmp_path, capsys, name, layer, extra):
    torch = pytest.importorskip("torch")
    n, c, h, w, k = layer
    conv = torch.nn.Conv2d(c, k, 3)
    torch.nn.init.kaiming_normal_(conv.weight)
    torch.save({"features.0.weight": conv.weight.detach(), "features.0.bias": conv.bias.detach()},
               tmp_path / "model.pt")
    out = tmp_path / "d"
    assert run(["generate", name, "--target", "hls", "--layer", ",".join(map(str, layer)), "--weights",
                str(tmp_path / "model.pt") + ":features.0.weight", "-o", str(out), *extra]) == 0
    doc = json.loads((out / "design.json").read_text())
    pk = int(extra[extra.index("--channels-per-cycle") + 1])
    assert doc["channels_per_cycle"] == pk and doc["estimate"]["multipliers"] == (
        doc["tiles_per_cycle"] * pk * novagen.algorithm(name).alpha ** 2)
    src = (out / f"{doc['prefix']}.cpp").read_text()
    assert "cyclic factor=NV_PK dim=2" in src and "cyclic factor=NV_PK dim=1" in src
    code, rep = _sim(capsys, out)
    assert code == 0 and rep["passed"], rep


def test_fixed_width_datapath_is_bit_exact_and_within_its_bound(tmp_path, capsys):
    w = _trained_like(8, 6, seed=3)
    np.save(tmp_path / "w.npy", w)
    errors = {}
    for bits in ("20", "16"):
        out = tmp_path / bits
        assert run(["generate", "F(4,3)/classic", "--target", "hls", "--layer", "1,6,12,12,8", "--weights",
                    str(tmp_path / "w.npy"), "--datapath-bits", bits, "-o", str(out)]) == 0
        doc = json.loads((out / "design.json").read_text())
        assert all(doc["widths"][s] <= int(bits) for s in ("z", "v", "m", "t", "y"))
        code, rep = _sim(capsys, out)
        assert code == 0 and rep["passed"], rep
        errors[bits] = rep["rel_l2_error"]
    assert errors["16"] > errors["20"]


def test_bad_inputs(tmp_path, capsys):
    def fails(*args):
        code = run(["generate", "F(4,3)/classic", "--target", "hls", "--layer", "1,6,12,12,8", "-o",
                    str(tmp_path / "x"), *args])
        return code, capsys.readouterr().err
    code, err = fails()
    assert code == 2 and "--weights FILE" in err and "--self-test" in err
    np.savez(tmp_path / "two.npz", a=np.zeros((8, 6, 3, 3)), b=np.zeros((8, 6, 3, 3)))
    code, err = fails("--weights", str(tmp_path / "two.npz"))
    assert code == 2 and "2 4-D arrays" in err and "two.npz:NAME" in err
    code, err = fails("--weights", str(tmp_path / "two.npz") + ":c")
    assert code == 2 and "no array 'c'" in err
    np.save(tmp_path / "small.npy", np.zeros((8, 5, 3, 3)))
    code, err = fails("--weights", str(tmp_path / "small.npy"))
    assert code == 2 and "(8, 6, 3, 3)" in err
    code, err = fails("--self-test", "--channels-per-cycle", "3")
    assert code == 2 and "must divide the 8 output channels" in err
    assert not (tmp_path / "x").exists()
    assert run(["hls-sim", str(tmp_path)]) == 2
    assert "design.json" in capsys.readouterr().err
