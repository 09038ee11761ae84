import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import novagen

ROOT = Path(__file__).resolve().parent.parent


def test_first_example_runs(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "01_first_transforms.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "F(6,3)/nova" in result.stdout and "76.6" in result.stdout and "936.8" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f6_3-classic.h", "f6_3-integer.h", "f6_3-nova.h",
                                                          "f6_3-own.h"]


@pytest.mark.slow
def test_non_editable_wheel_carries_the_catalog(tmp_path):
    """pip install . (not editable) must find the catalog inside the installed package."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
                   check=True, timeout=600)
    (wheel,) = wheels.glob("novagen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "novagen/_data/verify/f6_3-nova.json" in names
    assert "novagen/_data/templates/c/winograd_conv2d.c.j2" in names
    assert "novagen/_data/search/f8_3-kappa.toml" in names
    assert any(n.startswith("novagen/_data/templates/cuda/") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # the wheel's dependencies come from the running environment (a plain path line: its .pth files, such as
    # an editable novagen's, are not processed), after the venv's own site-packages that hold the wheel
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import novagen, novagen.catalog as c; print(novagen.__file__); "
                            "print(c.data_dir('verify'))"], capture_output=True, text=True, cwd=tmp_path, env=env,
                           check=True).stdout.split()
    assert where[0].startswith(str(venv)) and where[1].startswith(str(venv))
    out = subprocess.run([str(venv / "bin" / "novagen"), "catalog", "F(8,3)", "--json"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, check=True).stdout
    shipped = [e.name for e in novagen.catalog_entries("F(8,3)")]  # the source tree's verify/
    assert [r["name"] for r in json.loads(out)] == shipped and "F(8,3)/best" in shipped
    camp = subprocess.run([str(py), "-c", "from novagen.pointsearch import load_campaign as L; "
                           "print(L('f8_3-best.toml').path)"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, check=True).stdout
    assert camp.strip().startswith(str(venv)), "the campaigns ship inside the wheel"
    gen = subprocess.run([str(venv / "bin" / "novagen"), "generate", "F(4,3)/nova", "-o", str(tmp_path / "gen"),
                          "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout
    assert any(f.endswith(".c") for f in json.loads(gen)["files"])
    # an installed package's catalog is read-only: --write is refused before any search runs
    write = subprocess.run([str(venv / "bin" / "novagen"), "search", "--campaign", "f2_3-kappa.toml", "--write"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert write.returncode == 2 and "read-only" in write.stderr and write.stderr.count("\n") == 1
    assert not (site / "verify").exists()
