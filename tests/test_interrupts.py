"""Ctrl-C ends every command promptly with 130: no partial file, no orphan process, and a tuning database
that stays loadable and resumable."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from novagen.interrupts import run_interruptibly


def test_the_command_runs_in_a_worker_and_its_result_and_errors_come_back():
    import threading

    assert run_interruptibly(lambda: threading.current_thread().name) == "novagen-command"
    with pytest.raises(ZeroDivisionError):
        run_interruptibly(lambda: 1 / 0)


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "novagen", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _descendants(pid):
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _interrupt(proc, seconds=10.0):
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, err, time.monotonic() - start


def _wait_for(predicate, proc, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            pytest.fail(f"the command ended before it could be interrupted: {proc.communicate()}")
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_search_with_worker_processes_stops_and_leaves_no_orphans(tmp_path):
    proc = _start(["search", "F(8,3)", "--workers", "2", "--max-evaluations", "10000000", "--restarts", "12",
                   "--objective", "fp16"], tmp_path)
    assert _wait_for(lambda: len(_descendants(proc.pid)) >= 2, proc, 60), "the workers never started"
    children = _descendants(proc.pid)
    time.sleep(1.0)
    code, err, took = _interrupt(proc)
    assert code == 130 and err.strip().splitlines()[-1] == "novagen: interrupted" and took < 10, (code, err)
    assert "Traceback" not in err
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != "zombie"]


@pytest.mark.slow
@pytest.mark.tvm
def test_tvm_cuda_generation_stops_without_writing(tmp_path):
    pytest.importorskip("tvm")
    out = tmp_path / "out"
    proc = _start(["generate", "F(6,3)/nova", "--target", "tvm-cuda", "--layer", "8,512,56,56,512", "-o", str(out)],
                  tmp_path)
    time.sleep(12)  # TVM imported and the build under way
    assert proc.poll() is None, proc.communicate()
    code, err, took = _interrupt(proc)
    assert code == 130 and "novagen: interrupted" in err and "Traceback" not in err and took < 10, (code, err)
    assert not out.exists() or list(out.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] in (["out"], [])


@pytest.mark.slow
@pytest.mark.tvm
def test_tuning_stops_and_the_database_stays_loadable_and_resumable(tmp_path):
    pytest.importorskip("tvm")
    import novagen.tvm as nt

    db = tmp_path / "db"
    layer = "1,16,14,14,16"
    args = ["tune", "F(2,3)/classic", "--layer", layer, "--trials", "200", "--db", str(db)]
    proc = _start(args, tmp_path)
    records = db / "database_tuning_record.json"

    def some_records() -> bool:
        work = [p for p in tmp_path.glob(".novagen-*/database_tuning_record.json")]
        return bool(work) and work[0].read_text().count("\n") >= 2

    assert _wait_for(some_records, proc, 240), "no trial was measured"
    code, err, took = _interrupt(proc)
    assert code == 130 and "novagen: interrupted" in err and "Traceback" not in err and took < 10, (code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # the working copy is gone
    lines = records.read_text().splitlines()
    assert lines and all(json.loads(line) for line in lines)
    assert nt.load_tuned("F(2,3)/classic", (1, 16, 14, 14, 16), db) is not None  # loadable
    result = nt.tune("F(2,3)/classic", (1, 16, 14, 14, 16), db, trials=len(lines) + 1, builder="in-process",
                     runner="in-process")
    assert result.trials_before == len(lines) and result.trials_after >= len(lines) + 1  # resumable


@pytest.mark.slow
def test_whole_model_tuning_stops_and_the_database_stays_loadable_and_resumable(tmp_path):
    """`novagen tune-model` on an exported torch program: Ctrl-C mid-tuning gives 130 and whole records."""
    pytest.importorskip("tvm")
    torch = pytest.importorskip("torch")
    import novagen.tvm as nt

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1)).eval()
    x = torch.randn(1, 8, 12, 12)
    torch.export.save(torch.export.export(net, (x,)), str(tmp_path / "net.pt2"))
    db = tmp_path / "db"
    proc = _start(["tune-model", "net.pt2", "--trials", "400", "--db", str(db), "-a", "F(2,3)/classic"], tmp_path)

    def some_records() -> bool:
        work = list(tmp_path.glob(".novagen-*/database_tuning_record.json"))
        return bool(work) and work[0].read_text().count("\n") >= 2

    assert _wait_for(some_records, proc, 400), "no trial was measured"
    code, err, took = _interrupt(proc)
    assert code == 130 and "novagen: interrupted" in err and "Traceback" not in err and took < 10, (code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "net.pt2"]
    lines = (db / "database_tuning_record.json").read_text().splitlines()
    assert len(lines) >= 2 and all(json.loads(line) for line in lines)
    model = nt.prepare(*nt.import_model(tmp_path / "net.pt2"), "F(2,3)/classic")
    tuned = nt.tune_model(model, "llvm", db, trials=len(lines) + 1)
    after = (db / "database_tuning_record.json").read_text().splitlines()
    assert tuned.new_trials == 1 and after[:len(lines)] == lines and len(after) > len(lines)  # resumed
    ex = nt.compile_model(tuned, "llvm", db)
    with torch.no_grad():
        ref = net(x).numpy()
    assert abs(nt.run_model(ex, x.numpy()) - ref).max() < 1e-4 * abs(ref).max()


def test_abort_removes_temporaries_and_children(tmp_path):
    """The handler itself, in a child interpreter: a temporary file being written and a child process."""
    script = f"""
import subprocess, sys, time, os
from pathlib import Path
from novagen import files, interrupts
tmp = Path({str(tmp_path)!r}) / '.partial.tmp'
tmp.write_text('half')
files.TEMPORARIES.add(str(tmp))
child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
Path({str(tmp_path)!r}, 'child').write_text(str(child.pid))
interrupts.run_interruptibly(lambda: time.sleep(60))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "child"
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    child = int(pid_file.read_text())
    code, err, took = _interrupt(proc)
    assert code == 130 and err.strip() == "novagen: interrupted" and took < 5
    assert not (tmp_path / ".partial.tmp").exists()
    time.sleep(0.3)
    try:
        os.kill(child, 0)
        state = Path(f"/proc/{child}/stat").read_text().split()[2] if Path(f"/proc/{child}/stat").exists() else "X"
        assert state in ("Z", "X"), "the child process still runs"
    except ProcessLookupError:
        pass
