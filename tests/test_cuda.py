"""CUDA target: every generated kernel compiles with nvcc without register spills; the kernel's stages,
run on the CPU through the library's host emulation, match the float64 reference; on a GPU, the
kernel itself does."""

import shutil
import subprocess

import numpy as np
import pytest

import novagen
from novagen.accuracy import layer_data
from novagen.backends import cuda
from novagen.backends.cuda.kernel import kernel_stats
from novagen.cli import run
from novagen.precision import policy, winograd_emulate
from novagen.reference import correlate_direct

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None and shutil.which("/usr/local/cuda/bin/nvcc") is None,
                                reason="nvcc (CUDA toolkit) is not installed")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "novagen-cache"))


def _check_stats(alg, dtype, stats):
    prefix = cuda.prefix(alg, dtype)
    assert set(stats) == {f"{prefix}_fused", f"{prefix}_weights", f"{prefix}_finish"}
    for st in stats.values():
        assert 0 < st.registers <= 255
        assert st.spill_stores == 0 and st.spill_loads == 0 and st.stack_bytes == 0, st
    # the fused kernel's blocks must fit the register file (64K registers per SM)
    assert stats[f"{prefix}_fused"].registers * cuda.layout(alg).warps * 32 <= 65536


@needs_nvcc
@pytest.mark.parametrize("name,dtype", [("F(2,3)/classic", "fp16"), ("F(4,3)/nova", "fp32"), ("F(6,3)/nova", "fp16")])
def test_libraries_build_without_spills(name, dtype):
    """The shared libraries (sm_80) the emulation tests below load: ptxas figures from the real build."""
    alg = novagen.algorithm(name)
    _check_stats(alg, dtype, kernel_stats(cuda.build(alg, dtype, "sm_80")))


@needs_nvcc
@pytest.mark.parametrize("name,arch", [("F(4,3)/nova", "sm_90"), ("F(6,3)/nova", "sm_90"), ("F(8,3)/best", "sm_90"),
                                       pytest.param("F(4,3)/classic", "sm_90", marks=pytest.mark.slow),
                                       pytest.param("F(6,3)/classic", "sm_80", marks=pytest.mark.slow),
                                       pytest.param("F(2,3)/classic", "sm_90", marks=pytest.mark.slow)])
def test_kernels_compile_without_spills(name, arch):
    alg = novagen.algorithm(name)
    _check_stats(alg, "fp16", cuda.ptxas_report(alg, "fp16", arch))


@needs_nvcc
@pytest.mark.parametrize("name,dtype,splits", [("F(2,3)/classic", "fp16", 1), ("F(4,3)/nova", "fp32", 1),
                                               ("F(6,3)/nova", "fp16", 2),
                                               pytest.param("F(8,3)/best", "fp16", 3, marks=pytest.mark.slow)])
def test_host_emulation_matches_reference(name, dtype, splits):
    """The kernel's stages on the CPU: fp16 or TF32 operands, split-K slices summed as the workspace does."""
    alg = novagen.algorithm(name)
    for shape in ((2, 19, 13, 17, 21), (1, 40, 9, 30, 70)):
        x, w = layer_data(shape, seed=3)
        bias = np.random.default_rng(4).standard_normal(shape[4]) * 0.1
        ref = correlate_direct(x, w, 1) + bias[None, :, None, None]
        y = cuda.emulate(alg, x, w, bias, dtype, splits=splits).astype(np.float64)
        emu, _ = winograd_emulate(x, w, [alg, alg], policy("fp16"), padding=1)
        bound = 1.5 * np.linalg.norm(emu + bias[None, :, None, None] - ref) / np.linalg.norm(ref)
        err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
        assert err <= bound, (shape, err, bound)
    # relu and no bias
    x, w = layer_data((1, 3, 7, 7, 5), seed=5)
    y = cuda.emulate(alg, x, w, None, dtype, padding=0, relu=True).astype(np.float64)
    ref = np.maximum(correlate_direct(x, w, 0), 0)
    assert y.shape == ref.shape and np.abs(y - ref).max() < 0.05 * np.abs(ref).max()


@needs_nvcc
def test_library_reports_its_layout():
    alg = novagen.algorithm("F(4,3)/nova")
    got = cuda.info(alg, "fp32")
    lay = cuda.layout(alg)
    assert (got["alpha"], got["m"], got["r"]) == (6, 4, 3)
    assert got["threads"] == 32 * lay.warps and got["kb"] == lay.kb
    assert got["smem_bytes"] == 36 * 256 * 8  # fp32 scratch and fp32 V (TF32 operands)
    assert cuda.info(alg, "fp16")["smem_bytes"] == 36 * 256 * 6


def test_generate_writes_cuda_project(tmp_path):
    out = tmp_path / "cuda"
    assert run(["generate", "F(4,3)/nova", "--target", "cuda", "--layer", "1,256,14,14,256", "--dtype", "fp16",
                "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    prefix = cuda.prefix(novagen.algorithm("F(4,3)/nova"), "fp16")
    assert names == sorted(["Makefile", "README.md", "build.sh", f"{prefix}.cu"])
    src = (out / f"{prefix}.cu").read_text()
    assert "wmma::mma_sync" in src and "typedef __half io_t" in src and f"{prefix}_conv2d" in src
    assert "256, 14, 14, 256" in (out / "README.md").read_text()


@pytest.mark.parametrize("args,needle", [
    (["--dtype", "fp8"], "dtype 'fp8'"),
    (["--arch", "sm_60"], "sm_70"),
    (["--bits", "8"], "--bits"),
])
def test_generate_bad_options(tmp_path, capsys, args, needle):
    out = tmp_path / "bad"
    assert run(["generate", "F(4,3)/nova", "--target", "cuda", "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("name,args,needle", [
    ("F(8,3)/nova", ["--dtype", "fp32"], "200 KiB of shared memory per block; sm_80 allows 163 KiB"),
    ("F(6,3)/nova", ["--arch", "sm_75"], "96 KiB of shared memory per block; sm_75 allows 64 KiB"),
])
def test_tiles_beyond_the_shared_memory_are_refused(capsys, tmp_path, name, args, needle):
    assert run(["generate", name, "--target", "cuda", "-o", str(tmp_path / "x"), *args]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_f83_fits_and_f103_does_not(tmp_path, capsys):
    assert run(["generate", "F(8,3)/nova", "--target", "cuda", "--arch", "sm_90", "--dtype", "fp32",
                "-o", str(tmp_path / "ok")]) == 0
    assert run(["generate", "F(10,3)", "--target", "cuda", "-o", str(tmp_path / "x")]) == 2
    assert "alpha = 12" in capsys.readouterr().err


@needs_nvcc
@pytest.mark.slow
def test_generated_build_script_builds(tmp_path):
    cuda.generate(novagen.algorithm("F(2,3)/classic"), tmp_path, dtype="fp32")
    proc = subprocess.run(["sh", str(tmp_path / "build.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 bytes spill stores" in proc.stderr
    assert list(tmp_path.glob("lib*.so"))


@pytest.mark.gpu
@pytest.mark.skipif(cuda.gpu_arch() is None, reason="no CUDA GPU visible to PyTorch")
def test_gpu_selftest():
    assert cuda.selftest(("F(2,3)/classic", "F(4,3)/nova", "F(6,3)/nova"), log=lambda *a: None)
