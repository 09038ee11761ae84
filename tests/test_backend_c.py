import shutil

import numpy as np
import pytest

import novagen
from novagen.backends.c import build, kernel_library
from novagen.backends.toolchain import BuildError, cache_dir
from novagen.errors import InputError
from novagen.layers import parse_layer
from novagen.reference import correlate_direct

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "novagen-cache"))


def alg_of(name):
    return novagen.algorithm(name) if "/" in name else novagen.algorithm(name, points="classic")


def rel_err(y, ref):
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


# fp32 error of each tile size against the float64 direct correlation (bounds well above measured)
TOL = {4: 2e-6, 6: 5e-6, 8: 2e-5, 9: 2e-5, 10: 2e-4}

CASES = [
    ("F(2,3)/classic", (2, 5, 9, 7, 3), 1),
    ("F(4,3)/nova", (1, 11, 13, 10, 17), 0),
    ("F(6,3)/nova", (2, 9, 15, 17, 19), 1),
    ("F(6,3)/classic", (1, 3, 8, 8, 8), 0),
    ("F(8,3)/nova", (3, 4, 12, 21, 5), 1),
    # three channel blocks in and out (a pair and one alone), tiles of alpha 10 and 8, and the pair's second
    # output block only partly real
    ("F(8,3)/nova", (1, 20, 14, 19, 21), 1),
    ("F(6,3)/nova", (1, 24, 13, 13, 12), 1),
    ("F(4,5)", (1, 6, 11, 14, 9), 2),
    # tiles of odd side (alpha 9): 14 = 2 x 7 whole tiles, then ragged ones; a channel block and a bit, in and out
    ("F(7,3)/best", (2, 18, 14, 14, 35), 1),
    ("F(7,3)/best", (1, 5, 17, 12, 7), 0),
]


@pytest.mark.parametrize("name,layer,pad", CASES)
def test_kernel_matches_direct_correlation(name, layer, pad):
    alg = alg_of(name)
    n, c, h, w, k = layer
    rng = np.random.default_rng(sum(layer))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, alg.r, alg.r)).astype(np.float32)
    kernel = novagen.compile(alg, target="c", layer=layer, padding=pad)
    y = kernel(x, wt)
    ref = correlate_direct(x, wt, pad)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert rel_err(y, ref) < TOL[alg.alpha]


def test_bias_relu_small_tile_block_and_cached_weights():
    alg = novagen.algorithm("F(6,3)/nova")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 10, 20, 23)).astype(np.float32)
    w = rng.standard_normal((13, 10, 3, 3)).astype(np.float32)
    b = rng.standard_normal(13).astype(np.float32)
    kernel = novagen.compile(alg, padding=1, relu=True, tile_block=6, threads=2)
    ref = np.maximum(correlate_direct(x, w, 1) + b[None, :, None, None], 0)
    y1 = kernel(x, w, b)
    assert rel_err(y1, ref) < TOL[8]
    u = kernel._u
    y2 = kernel(x, w, b)
    assert kernel._u is u and np.array_equal(y1, y2)
    out = np.empty_like(y1)
    assert kernel(x, w, b, out=out) is out and np.array_equal(out, y1)
    with pytest.raises(InputError, match="out must be"):
        kernel(x, w, b, out=np.empty((1, 2), np.float32))
    w2 = w * 2
    assert rel_err(kernel(x, w2), np.maximum(correlate_direct(x, w2, 1), 0)) < TOL[8]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_per_thread_and_blocked_paths_agree_with_direct(layout):
    """Small U (C, K of a few dozen) runs each thread's chunks through all stages; large U (C = K = 256
    with F(4,3): 9.4 MB, more than four L2s), or a tile block set by hand, runs the stages over shared
    blocks.  Both, with several chunks or blocks and a ragged last one, bias and ReLU, in both layouts, match
    the float64 correlation."""
    import ctypes

    alg = novagen.algorithm("F(4,3)/nova")
    rng = np.random.default_rng(7)
    for n, c, h, w, k, tile_block in ((3, 24, 28, 44, 40, 0), (1, 256, 6, 7, 256, 0), (1, 12, 18, 34, 9, 8)):
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        kernel = novagen.compile(alg, padding=1, relu=True, threads=2, layout=layout, tile_block=tile_block)
        xin = x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x
        y = kernel(xin, wt, b)
        y = y.transpose(0, 3, 1, 2) if layout == "NHWC" else y
        ref = np.maximum(correlate_direct(x, wt, 1) + b[None, :, None, None], 0)
        assert rel_err(y, ref) < TOL[6]
        tiles = n * -(-h // 4) * -(-w // 4)
        chunk = kernel._fn("tile_block")(ctypes.byref(kernel._shape))
        if c != 256:  # several chunks (or blocks), the last one ragged (odd tile counts; chunks are multiples of
            # the micro-kernel's 6 or 8 rows): computed for its own tiles only
            assert tiles > 2 * chunk and tiles % chunk
        assert (kernel._fn("local_chunk")(ctypes.byref(kernel._shape)) > 0) == (c == 24)


def test_output_row_buffer_and_direct_stores_agree():
    """On the per-thread path NCHW outputs go through a row buffer of one tile row ([m][tw*m][kp], flushed by
    8x8 transposes, masked at a row's end); a row too wide for it (half an L2) stores the tiles straight to y.
    Both, with tile rows split between chunks and threads and a channel count that is not a multiple of 8,
    match the float64 correlation; the workspace holds the buffer only where it is used."""
    import ctypes

    rng = np.random.default_rng(11)
    alg = novagen.algorithm("F(6,3)/nova")
    for (n, c, h, w, k), buffered in (((3, 16, 20, 27, 13), True), ((1, 8, 7, 4000, 12), False)):
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        kernel = novagen.compile(alg, padding=1, relu=True, threads=2, layer=(n, c, h, w, k))
        ref = np.maximum(correlate_direct(x, wt, 1) + b[None, :, None, None], 0)
        assert rel_err(kernel(x, wt, b), ref) < TOL[8]
        chunk = kernel._fn("local_chunk")(ctypes.byref(kernel._shape))
        assert chunk > 0
        cp, kp = -(-c // 8) * 8, -(-k // kernel._fn("panel")()) * kernel._fn("panel")()
        rowbuf = 6 * -(-w // 6) * 6 * kp if buffered else 0
        # per thread: V and M of a chunk (64 Winograd points, one cache line of skew each), then the buffer
        assert kernel._fn("workspace_floats")(ctypes.byref(kernel._shape)) == 2 * (
            64 * (chunk * (cp + kp) + 2 * 16) + rowbuf) + 64


@pytest.mark.parametrize("name", ["F(4,3)/best", "F(6,3)/best", "F(7,3)/best"])
@pytest.mark.parametrize("isa", ["native", "avx2", "portable"])
def test_row_wise_transforms_on_both_paths(name, isa):
    """With AVX-512 the transforms go one window row and one output row at a time on channel pairs (16
    channels): inside the input (loads and an in-register transpose; alpha = 9 gathers its ninth column), at
    its edges (clipped, masked loads), then into the row buffer (per-thread path) or straight to NCHW (blocked
    path, tile block set); a third channel block alone, and builds for AVX2 or no vector ISA, take the
    whole-tile transforms.  With interior and ragged tiles, bias and ReLU, every build and both paths match the
    float64 correlation."""
    import ctypes

    from novagen.backends.c import FLAGS

    extra = {"native": (), "avx2": ("-mno-avx512f",), "portable": ("-mno-avx512f", "-mno-avx2", "-mno-fma")}[isa]
    alg = novagen.algorithm(name)
    rng = np.random.default_rng(5)
    n, c, h, w, k = 2, 40, 23, 30, 40
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    ref = np.maximum(correlate_direct(x, wt, 1) + b[None, :, None, None], 0)
    for tile_block in (0, 16):
        kernel = novagen.compile(alg, padding=1, relu=True, threads=2, tile_block=tile_block, flags=FLAGS + extra)
        assert rel_err(kernel(x, wt, b), ref) < TOL[alg.alpha]
        assert (kernel._fn("local_chunk")(ctypes.byref(kernel._shape)) > 0) == (tile_block == 0)


def _max_pool2(y: np.ndarray) -> np.ndarray:
    """2×2 stride-2 max pool of (N, K, H, W), floor."""
    n, k, h, w = y.shape
    return y[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, k, h // 2, 2, w // 2, 2).max(axis=(3, 5))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_the_fused_max_pool_matches_pooling_the_output(layout):
    """pool=2: y is the 2×2 stride-2 max pool of the output (odd sides: the last row and column dropped),
    from both paths (per-thread chunks, shared blocks of a large U), every even tile, and the AVX2 build; a
    tile of odd side cannot hold the windows and is refused."""
    from novagen.backends.c import FLAGS, Kernel

    rng = np.random.default_rng(11)
    for name, (n, c, h, w, k), extra in (("F(2,3)/classic", (2, 12, 15, 22, 20), ()),
                                        ("F(4,3)/nova", (1, 256, 13, 14, 256), ()),
                                        ("F(6,3)/best", (1, 24, 29, 19, 40), ()),
                                        ("F(4,3)/nova", (2, 16, 11, 9, 24), ("-mno-avx512f",))):
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        kernel = Kernel(alg_of(name), padding=1, relu=True, pool=2, threads=2, layout=layout, flags=FLAGS + extra)
        y = kernel(x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x, wt, b)
        y = y.transpose(0, 3, 1, 2) if layout == "NHWC" else y
        ref = _max_pool2(np.maximum(correlate_direct(x, wt, 1) + b[None, :, None, None], 0))
        assert y.shape == ref.shape == (n, k, h // 2, w // 2) and rel_err(y, ref) < TOL[8], name
    odd = Kernel(alg_of("F(3,3)/best"), pool=2)
    with pytest.raises(InputError, match="cannot fuse a 2x2 max pool: its 3x3 tiles"):
        odd(x, wt)
    with pytest.raises(InputError, match="needs an output of at least 2x2, got 1x5"):
        Kernel(alg_of("F(2,3)/classic"), padding=0, pool=2)(x[:, :, :3, :7], wt)


@pytest.mark.parametrize("name,layer,pad", [CASES[1], CASES[6], CASES[7], CASES[8]])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_avx2_and_portable_builds_match_direct(name, layer, pad, layout):
    """The kernel built as for an AVX2 machine (no AVX-512: 6x16 micro-kernel, masked AVX2 loads, one channel
    block per transform) and with no vector ISA at all (portable C fallbacks) computes the same layers; on a
    machine without AVX-512 the first is what every test runs anyway."""
    from novagen.backends.c import FLAGS, Kernel

    alg = alg_of(name)
    n, c, h, w, k = layer
    rng = np.random.default_rng(sum(layer))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, alg.r, alg.r)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    ref = np.maximum(correlate_direct(x, wt, pad) + b[None, :, None, None], 0)
    for extra in (("-mno-avx512f",), ("-mno-avx512f", "-mno-avx2", "-mno-fma")):
        kernel = Kernel(alg, padding=pad, relu=True, threads=2, layout=layout, flags=FLAGS + extra)
        xin = x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x
        y = kernel(xin, wt, b)
        y = y.transpose(0, 3, 1, 2) if layout == "NHWC" else y
        assert rel_err(y, ref) < TOL[alg.alpha], extra


def test_generated_transforms_match_matrices():
    alg = novagen.algorithm("F(6,3)/nova")
    AT, G, BT = alg.matrices("float64")
    kernel = novagen.compile(alg)
    rng = np.random.default_rng(2)
    d = rng.standard_normal((8, 8)).astype(np.float32)
    m = rng.standard_normal((8, 8)).astype(np.float32)
    g = rng.standard_normal((3, 3)).astype(np.float32)
    for got, want in ((kernel.transform_tile("input", d), BT @ d @ BT.T),
                      (kernel.transform_tile("output", m), AT @ m @ AT.T),
                      (kernel.transform_tile("filter", g), G @ g @ G.T)):
        assert np.allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_source_shows_shared_subexpressions():
    from novagen.backends.c import render
    from novagen.program import programs

    alg = novagen.algorithm("F(6,3)/nova")
    src = next(v for k, v in render(alg).items() if k.endswith(".c"))
    assert "BT 24/20/0" in src
    body = src.split("static inline void nv_bt(")[1].split("}")[0]
    assert body.count(" = ") == len(programs(alg).BT.ops) + 8 + 8


def test_cache_reuses_build_and_checks_key():
    alg = novagen.algorithm("F(2,3)/classic")
    first = build(alg)
    again = build(alg)
    assert again.cached and again.path == first.path and again.key == first.key
    (first.path.parent / "key.json").write_text('{"key": "tampered"}')
    rebuilt = build(alg)
    assert not rebuilt.cached and str(cache_dir()) in str(rebuilt.path)


def test_no_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc-novagen")
    monkeypatch.setenv("PATH", "/nonexistent")
    kernel_library.cache_clear()  # as in a fresh process: nothing built yet
    with pytest.raises(BuildError, match="no C compiler"):
        novagen.compile(novagen.algorithm("F(4,3)/nova"))


def test_bad_inputs():
    with pytest.raises(InputError, match="N,C,H,W,K"):
        parse_layer("1,2,3")
    with pytest.raises(InputError, match="target"):
        novagen.compile(novagen.algorithm("F(4,3)/nova"), target="fpga")
    kernel = novagen.compile(novagen.algorithm("F(4,3)/nova"), layer=(1, 2, 8, 8, 3))
    with pytest.raises(InputError, match="compiled for layer"):
        kernel(np.zeros((1, 2, 9, 8), np.float32), np.zeros((3, 2, 3, 3), np.float32))


def fp32_matrix_pipeline(alg, x, w, pad):
    """The same Winograd pipeline in NumPy float32 with each matrix entry rounded once."""
    from novagen import reference as R

    AT, G, BT = alg.matrices("float32")
    tiles, out = R.input_tiles(x, [alg, alg], pad)
    V = R.transform_input(tiles.astype(np.float32), [BT, BT]).astype(np.float32)
    U = R.transform_filter(w, [G, G]).astype(np.float32)
    M = np.einsum("kcab,ncijab->nkijab", U, V).astype(np.float32)
    return R.assemble(R.transform_output(M, [AT, AT]).astype(np.float32), out)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["F(2,3)/integer", "F(4,3)/integer", "F(4,3)/classic", "F(6,3)/integer",
                                  "F(6,3)/classic", "F(8,3)/classic", "F(8,3)/integer", "F(8,3)/nova"])
def test_generated_code_as_accurate_as_the_matrices(name):
    """On VGG-like shapes the kernel's error is that of fp32 arithmetic with the rounded matrices:
    sharing subexpressions costs no accuracy (also for the ill-conditioned integer points)."""
    alg = alg_of(name)
    rng = np.random.default_rng(3)
    for layer, pad in (((2, 37, 29, 31, 45), 1), ((1, 64, 28, 28, 64), 1), ((1, 3, 33, 30, 20), 0)):
        n, c, h, w, k = layer
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        ref = correlate_direct(x, wt, pad)
        y = novagen.compile(alg, layer=layer, padding=pad)(x, wt)
        assert rel_err(y, ref) < 1.5 * rel_err(fp32_matrix_pipeline(alg, x, wt, pad), ref) + 1e-7

def cli(capsys, *args):
    from novagen.cli import run

    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_generate_writes_buildable_kernel(capsys, tmp_path):
    import json
    import subprocess

    code, out, _ = cli(capsys, "generate", "F(6,3)/nova", "--target", "c", "--layer", "1,64,56,56,64",
                       "-o", str(tmp_path), "--json")
    assert code == 0
    files = {p.rsplit("/", 1)[1] for p in json.loads(out)["files"]}
    assert {"Makefile", "build.sh", "README.md"} <= files and sum(f.endswith((".c", ".h")) for f in files) == 2
    readme = (tmp_path / "README.md").read_text()
    assert "1, 64, 56, 56, 64" in readme and "BT: 24/20/0 = 44 (120)" in readme
    subprocess.run(["sh", str(tmp_path / "build.sh")], check=True, capture_output=True)
    assert any(p.suffix == ".so" for p in tmp_path.iterdir())


def test_cli_bench_json_contract(capsys):
    import json

    code, out, _ = cli(capsys, "bench", "--target", "c", "--layer", "1,16,12,12,16", "--algorithm", "F(4,3)/nova",
                       "--repeats", "1", "--json")
    assert code == 0
    doc = json.loads(out)
    assert {"cpu", "cores", "compiler", "sgemm_gflops"} <= set(doc["machine"])
    assert doc["baseline"]["name"] == "torch.nn.functional.conv2d" and doc["baseline"]["version"]
    (row,) = doc["layers"]
    assert row["shape"] == [1, 16, 12, 12, 16]
    assert set(row["candidates_ms"]) == {"F(4,3)/nova", "direct"}  # 16 channels: the direct kernel competes
    assert row["algorithm"] == min(row["candidates_ms"], key=row["candidates_ms"].get)
    assert row["ours_ms"] == row["candidates_ms"][row["algorithm"]]
    assert row["ratio"] == pytest.approx(row["baseline_ms"] / row["ours_ms"])
    assert max(row["rel_error_vs_baseline"].values()) < 1e-5
    assert doc["geomean_ratio"] == pytest.approx(row["ratio"])
    assert (row["gemm_stage_gflops"] is None) == (row["algorithm"] == "direct") and row["limit_ms"] > 0
    # auto runs the faster of the kernel and torch: never below torch
    assert row["auto"] == (row["algorithm"] if row["ours_ms"] < row["baseline_ms"] else "torch")
    assert row["auto_ratio"] == pytest.approx(max(row["ratio"], 1.0)) and doc["geomean_auto_ratio"] >= 1.0


def test_cli_bad_input(capsys):
    code, _, err = cli(capsys, "bench", "--layer", "1,2,3")
    assert code == 2 and "N,C,H,W,K" in err
    code, _, err = cli(capsys, "bench", "--network", "resnet7")
    assert code == 2 and "vgg16" in err
    code, _, err = cli(capsys, "generate", "F(6,3)/nova", "--target", "fpga", "-o", "/tmp/x")
    assert code == 2 and "target" in err


def test_network_layers_resnet18():
    from novagen.layers import network_layers

    layers = network_layers("resnet18", batch=2)
    assert [lay.shape for lay in layers] == [(2, 64, 56, 56, 64), (2, 128, 28, 28, 128), (2, 256, 14, 14, 256),
                                             (2, 512, 7, 7, 512)]
    assert [len(lay.names) for lay in layers] == [4, 3, 3, 3]
    assert layers[1].names == ("layer2.0.conv2", "layer2.1.conv1", "layer2.1.conv2")
    assert all(lay.padding == 1 for lay in layers)
    assert sum(len(lay.names) for lay in network_layers("vgg16")) == 13


@pytest.mark.parametrize("target", ["c", "tvm-llvm"])
def test_cli_bench_unknown_network(capsys, target):
    code, out, err = cli(capsys, "bench", "--target", target, "--network", "resnet7")
    assert code == 2 and not out
    assert "resnet7" in err and "vgg16" in err and "resnet18" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("name,pad", [("F(6,3)/nova", 1), ("F(4,5)", 0)])
def test_nhwc_layout(name, pad):
    alg = alg_of(name)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 13, 15, 19)).astype(np.float32)
    w = rng.standard_normal((10, 13, alg.r, alg.r)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    kernel = novagen.compile(alg, padding=pad, layout="NHWC", layer=(2, 13, 15, 19, 10))
    y = kernel(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), w, b)
    ref = (correlate_direct(x, w, pad) + b[None, :, None, None]).transpose(0, 2, 3, 1)
    assert y.shape == ref.shape and rel_err(y, ref) < TOL[alg.alpha]
    with pytest.raises(InputError, match="layout"):
        novagen.compile(alg, layout="CHWN")
