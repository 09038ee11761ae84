"""Hostile and mistaken input, driven through the CLI as a user would: every case answers with its exit
status and one line on stderr, no traceback, within seconds, and touches nothing outside its output."""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import novagen
from novagen.cli import run
from novagen.errors import InputError

REPO = Path(__file__).resolve().parent.parent


def snapshot(*folders: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every path under the folders with its type, mode and content (or link target)."""
    out = {}
    for folder in folders:
        for p in [folder, *folder.rglob("*")]:
            st_ = os.lstat(p)
            if stat.S_ISLNK(st_.st_mode):
                body: bytes | str = os.readlink(p)
            elif stat.S_ISREG(st_.st_mode):
                body = p.read_bytes()
            else:
                body = ""
            out[str(p)] = (stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), body)
    return out


def cli(capsys, *args):
    start = time.monotonic()
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err, time.monotonic() - start


def refused(capsys, tmp_path, *args, fragment="", code=2, seconds=10.0):
    """Run a command that must be refused: its status, one stderr line naming the problem, no traceback,
    fast, and nothing changed under tmp_path or in the repository's catalog."""
    before = snapshot(tmp_path, REPO / "verify", REPO / "search")
    got, _, err, took = cli(capsys, *args)
    assert got == code, (args, got, err)
    assert err.count("\n") == 1 and err.startswith("novagen: error: ") and "Traceback" not in err, err
    assert fragment in err, (fragment, err)
    assert len(err) < 400, "long values are shortened in messages"
    assert took < seconds, (args, took)
    assert snapshot(tmp_path, REPO / "verify", REPO / "search") == before
    return err


# ---------------------------------------------------------------------------------------------------
# output paths


def test_export_never_writes_through_a_link_a_fifo_or_a_device(capsys, tmp_path):
    target = tmp_path / "target.h"
    target.write_text("mine\n")
    (tmp_path / "link.h").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.h")
    (tmp_path / "dir.h").mkdir()
    for name, kind in (("link.h", "symbolic link"), ("fifo.h", "FIFO"), ("dir.h", "folder")):
        refused(capsys, tmp_path, "export", "F(4,3)/nova", "-o", tmp_path / name, "--force", fragment=kind)
    refused(capsys, tmp_path, "export", "F(4,3)/nova", "--format", "c", "-o", "/dev/full", "--force",
            fragment="character device")
    refused(capsys, tmp_path, "export", "F(4,3)/nova", "--format", "c", "-o", "/proc/novagen.h",
            fragment="/proc")
    refused(capsys, tmp_path, "export", "F(4,3)/nova", "-o", tmp_path / "missing" / "f.h", fragment="does not exist")
    assert not Path("/nonexistent_dir_novagen").exists()


def test_existing_files_need_force_and_keep_their_mode_new_files_follow_the_umask(capsys, tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "f43.h"
        code, _, _, _ = cli(capsys, "export", "F(4,3)/nova", "-o", path)
        assert code == 0 and stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o640)
        path.write_text("edited by hand\n")
        refused(capsys, tmp_path, "export", "F(4,3)/nova", "-o", path, fragment="--force")
        code, _, _, _ = cli(capsys, "export", "F(4,3)/nova", "-o", path, "--force")
        assert code == 0 and stat.S_IMODE(path.stat().st_mode) == 0o640 and "novagen" in path.read_text()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f43.h"]  # no temporary file left
    finally:
        os.umask(old)


def test_generate_refuses_to_clobber_and_writes_nothing_then(capsys, tmp_path):
    out = tmp_path / "build"
    out.mkdir()
    (out / "README.md").write_text("my project\n")
    refused(capsys, tmp_path, "generate", "F(4,3)/nova", "--target", "c", "-o", out,
            fragment="README.md exists: pass --force")
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]
    code, _, err, _ = cli(capsys, "generate", "F(4,3)/nova", "--target", "c", "-o", out, "--force")
    assert code == 0 and (out / "README.md").read_text() != "my project\n"
    assert stat.S_IMODE((out / "build.sh").stat().st_mode) & 0o111
    deep = tmp_path / "a" / "b"
    code, _, _, _ = cli(capsys, "generate", "F(2,3)/classic", "--target", "verilog", "--self-test",
                          "-o", deep)
    assert code == 0 and (deep / "run_sim.sh").exists()  # an output folder is created with its parents


def test_write_files_removes_what_it_created_when_a_later_file_fails(tmp_path):
    from novagen.files import write_files

    (tmp_path / "b").mkdir()  # a folder where the second file should go: refused before anything is written
    with pytest.raises(InputError, match="b is a folder"):
        write_files(tmp_path, {"a": "1", "b": "2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_plot_paths_are_checked_before_the_study(capsys, tmp_path):
    (tmp_path / "plot.png").mkdir()
    refused(capsys, tmp_path, "accuracy", "F(4,3)/nova", "--layer", "1,4,8,8,4", "--plot", tmp_path / "plot.png",
            fragment="folder", seconds=5)
    refused(capsys, tmp_path, "accuracy", "F(4,3)/nova", "--layer", "1,4,8,8,4", "--plot", "/proc/x.png",
            fragment="/proc", seconds=5)


# ---------------------------------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize("points,fragment", [
    ("0,1,1e400", "exponent"), ("0,1,1e-400", "exponent"), ("0,1,1e999999999", "exponent"),
    ("0,1," + "9" * 200_000, "not a point"), ("0,1,1/0", "divides by zero"), ("0,1,2000000", "±1,000,000"),
    ("0,1,1/" + "3" * 45, "digits"), ("0," * 100 + "1", "at most 64"),
])
def test_points_are_bounded(capsys, tmp_path, points, fragment):
    refused(capsys, tmp_path, "show", "F(2,3)", "--points", points, fragment=fragment, seconds=3)


def test_transform_files_are_bounded(capsys, tmp_path):
    alg = novagen.algorithm("F(2,3)/classic").to_dict()
    bad = dict(alg, AT=[["1e999999999", "1", "1", "0"], ["0", "1", "-1", "1"]])
    (tmp_path / "exp.json").write_text(json.dumps(bad))
    refused(capsys, tmp_path, "verify", "--file", tmp_path / "exp.json", fragment="exponent", seconds=3)
    (tmp_path / "digits.json").write_text('{"AT": [[' + "9" * 200_000 + "]]}")
    refused(capsys, tmp_path, "verify", "--file", tmp_path / "digits.json", fragment="will not read", seconds=3)
    (tmp_path / "binary.json").write_bytes(bytes(range(256)) * 20)
    refused(capsys, tmp_path, "verify", "--file", tmp_path / "binary.json", fragment="not text")
    refused(capsys, tmp_path, "search", "--campaign", tmp_path / "binary.json", fragment="cannot read campaign")
    refused(capsys, tmp_path, "search", "--campaign", "nowhere.toml", fragment="novagen search --list")


@pytest.mark.parametrize("args,fragment", [
    (["search", "F(4,3)", "--max-denominator", "100000000"], "at most 1,000,000"),
    (["search", "F(4,3)", "--max-denominator", "5000"], "candidate rationals"),
    (["search", "F(4,3)", "--seed", "-1"], "--seed -1"),
    (["search", "F(4,3)", "--seed", "1e23"], "--seed"),
    (["search", "F(4,3)", "--seed", "abc"], "--seed"),
    (["search", "F(4,3)", "--restarts", "40"], "at most 12"),
    (["search", "F(4,3)", "--max-abs", "inf"], "--max-abs"),
    (["search", "F(4,3)", "--objective", "fp16 - cost"], "weights must be positive"),
    (["search", "F(4,3)", "--objective", "-2*cost"], "objective name"),
    (["search", "F(4,3)", "--objective", "int8-tap + fp8-e4m3 + bogus"], "unknown objective 'bogus'"),
    (["show", "F(4,3)", "--snap", "0", "--points", "0,1,-1,2"], "snap denominator"),
    (["show", "F(4,3)", "--snap", "0"], "snap"),
    (["show", "F(" + "9" * 5000 + ",3)"], "is not a spec"),
    (["accuracy", "F(4,3)/nova", "--seed", "-1"], "seed -1"),
    (["accuracy", "F(4,3)/nova", "--layer", "1,100000,1000,1000,100000"], "GiB"),
    (["accuracy", "F(4,3)/nova", "--layer", "1,8,8"], "N,C,H,W,K"),
    (["accuracy", "F(4,3)/nova", "--network", "digits", "--inputs", "0"], "--inputs"),
    (["generate", "F(4,3)/nova", "--target", "c", "--padding", "-3"], "padding -3"),
    (["generate", "F(4,3)/nova", "--target", "c", "--layer", "1,8,2,2,8", "--padding", "0"], "smaller than"),
    (["generate", "F(4,3)/nova", "--target", "hls", "--layer", "1,100000,1000,1000,100000"], "GiB"),
    (["generate", "F(4,3)/nova", "--target", "c", "--bits", "8"], "--bits is an option of hls, verilog"),
    (["hardware"], "Missing argument"),
    (["hardware", "F(4,3)/classic", "--channels", "0"], "channels"),
    (["nonsense"], "No such command"),
])
def test_numbers_and_usage_errors_are_one_line(capsys, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    refused(capsys, tmp_path, *args, fragment=fragment, seconds=5)


@pytest.mark.parametrize("args,fragment", [
    (["bench", "--target", "c", "--layer", "1,8,8,8,8", "--threads", "-3"], "--threads -3"),
    (["bench", "--target", "c", "--layer", "1,8,8,8,8", "--repeats", "100000"], "--repeats"),
    (["bench", "--target", "c", "--network", "vgg16", "--batch", "0"], "batch 0"),
])
def test_bench_numbers(capsys, tmp_path, args, fragment):
    pytest.importorskip("torch")
    refused(capsys, tmp_path, *args, fragment=fragment, seconds=20)


def test_tuning_database_paths(capsys, tmp_path):
    pytest.importorskip("tvm")
    args = ["tune", "F(2,3)/classic", "--layer", "1,8,8,8,8", "--trials", "1"]
    (tmp_path / "file").write_text("x")
    refused(capsys, tmp_path, *args, "--db", tmp_path / "file", fragment="not a folder", seconds=60)
    refused(capsys, tmp_path, *args, "--db", "/proc/novagen_db", fragment="cannot create", seconds=60)
    db = tmp_path / "db"
    db.mkdir()
    (db / "database_tuning_record.json").write_text('{"broken": \n[1, 2]\n')
    refused(capsys, tmp_path, *args, "--db", db, fragment="damaged", seconds=60)
    refused(capsys, tmp_path, *args[:4], "--trials", "0", "--db", tmp_path / "db2", fragment="trials 0", seconds=60)


def test_build_failures_have_their_own_status(capsys, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("CC", "false")
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    watched = tmp_path / "watched"
    watched.mkdir()
    err = refused(capsys, watched, "bench", "--target", "c", "--layer", "1,8,8,8,8", "-a", "F(2,3)/classic",
                  code=3, seconds=60)
    assert "compiler failed" in err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="0123456789eE+-./,x ;inf", max_size=40))
def test_any_points_text_is_answered_quickly(capsys, text):
    start = time.monotonic()
    code = run(["show", "F(2,3)", "--points", text, "--json"])
    _, err = capsys.readouterr()
    assert code in (0, 2) and time.monotonic() - start < 5
    assert code == 0 or (err.count("\n") == 1 and "Traceback" not in err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="0123456789,x-+e. ", max_size=30))
def test_any_layer_text_is_answered_quickly(capsys, text):
    start = time.monotonic()
    code = run(["accuracy", "F(2,3)/classic", "--layer", text, "--precision", "fp32", "--no-baseline", "--json"])
    _, err = capsys.readouterr()
    assert code in (0, 2) and time.monotonic() - start < 10
    assert code == 0 or (err.count("\n") == 1 and "Traceback" not in err)


# ---------------------------------------------------------------------------------------------------
# streams and the Python API


@pytest.mark.parametrize("unbuffered", [True, False])
def test_stdout_errors_and_closed_pipes(tmp_path, unbuffered):
    """A full disk is one line on stderr whether stdout is unbuffered (the write fails) or, as it is by
    default when redirected, block-buffered (only the final flush fails)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    with open("/dev/full", "w") as sink:
        full = subprocess.run([sys.executable, "-m", "novagen", "show", "F(2,3)", "--json"], stdout=sink,
                              stderr=subprocess.PIPE, text=True, env=env)
    assert full.returncode == 2 and full.stderr.count("\n") == 1 and "No space left" in full.stderr
    piped = subprocess.run(f"{sys.executable} -m novagen catalog | head -c 10", shell=True, capture_output=True,
                           text=True)
    assert "Traceback" not in piped.stderr and piped.stdout


def test_python_api_raises_novagens_errors():
    assert novagen.verify("F(4,3)/nova").verified
    with pytest.raises(InputError, match="--seed abc"):
        novagen.search("F(2,3)", seed="abc")
    with pytest.raises(InputError, match="float7"):
        novagen.algorithm("F(2,3)").matrices("float7")
    with pytest.raises(InputError, match="real numbers"):
        novagen.algorithm("F(2,3)").conv2d(np.ones((1, 1, 4, 4), complex), np.ones((1, 1, 3, 3)))
    with pytest.raises(InputError, match="real numbers"):
        novagen.algorithm("F(2,3)").conv2d(np.array([[[["a"] * 4] * 4]]), np.ones((1, 1, 3, 3)))
    with pytest.raises(InputError, match="verify takes an algorithm"):
        novagen.verify(3)


def test_installed_catalog_is_not_written(monkeypatch, tmp_path):
    from novagen import catalog

    monkeypatch.setattr(catalog, "PACKAGE_DIR", tmp_path / "site-packages" / "novagen")
    with pytest.raises(InputError, match="read-only"):
        catalog.source_catalog()
