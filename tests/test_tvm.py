"""The TVM backend: Winograd conv2d modules against the float64 direct correlation, and bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import novagen  # noqa: E402
from novagen import tvm as nt  # noqa: E402
from novagen.accuracy import layer_error  # noqa: E402
from novagen.errors import InputError  # noqa: E402
from novagen.reference import correlate_direct  # noqa: E402

pytestmark = pytest.mark.tvm


def _data(layer: tuple[int, ...], r: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n, c, h, w, k = layer
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
    return x, wt


def _run(alg: str, layer: tuple[int, ...], padding: int, layout: str, weights: str = "precomputed",
         dtype: str = "float32") -> tuple[float, float]:
    """Relative L2 error of the TVM module against fp64 direct, and the accuracy lab's emulated fp32 error
    of the same algorithm on the same data (what fp32 arithmetic allows for it)."""
    a = novagen.algorithm(alg)
    x, wt = _data(layer, a.r)
    conv = nt.Conv2d(alg, layer, padding=padding, layout=layout, weights=weights, dtype=dtype)
    xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = conv(xin.astype(dtype), wt).astype(np.float64)
    if layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    ref = correlate_direct(x, wt, padding)
    assert y.shape == ref.shape
    emulated = layer_error(alg, "fp32", shape=layer, x=x, w=wt, padding=padding).rel_l2
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref)), emulated


# odd spatial sizes (partial tiles on both axes), batch 2, channel counts the schedule vectorizes
CASES = [
    ("F(2,3)/classic", (2, 8, 11, 9, 16), 1, "NCHW", "precomputed"),
    ("F(4,3)/nova", (2, 8, 11, 9, 16), 0, "NHWC", "precomputed"),
    ("F(4,3)/nova", (2, 16, 13, 7, 8), 1, "NCHW", "graph"),
    pytest.param("F(6,3)/nova", (2, 8, 15, 10, 16), 1, "NCHW", "graph", marks=pytest.mark.slow),
    ("F(6,3)/nova", (2, 8, 9, 11, 8), 0, "NHWC", "precomputed"),
    pytest.param("F(8,3)/nova", (1, 8, 17, 12, 8), 1, "NHWC", "graph", marks=pytest.mark.slow),
    ("F(4,5)/kappa", (2, 8, 12, 11, 16), 1, "NCHW", "precomputed"),
]


@pytest.mark.parametrize("alg,layer,padding,layout,weights", CASES)
def test_matches_direct_float64(alg: str, layer: tuple[int, ...], padding: int, layout: str, weights: str) -> None:
    err, emulated = _run(alg, layer, padding, layout, weights)
    # as accurate as fp32 allows for this algorithm (the accuracy lab's emulated fp32 error), with margin
    assert err < max(4 * emulated, 1e-6), f"{alg} {layout} {weights}: relative error {err:.2e} ({emulated:.2e})"


def test_odd_channel_counts() -> None:
    """C and K that no vector width divides still give the right answer (scalar loops)."""
    assert _run("F(2,3)/classic", (1, 3, 7, 6, 5), 1, "NCHW")[0] < 5e-6


def test_fp16_storage_fp32_accumulation() -> None:
    err = _run("F(4,3)/nova", (1, 16, 10, 10, 8), 1, "NHWC", dtype="float16")[0]
    assert 1e-5 < err < 5e-3, f"fp16 storage: relative error {err:.2e}"


def test_transform_constants_folded() -> None:
    """No zero term and no factor ±1 reaches the code: the input transform multiplies only by the
    constants of the BT program (the classic F(4,3) BT has 12 zero entries)."""
    from novagen.program import compile_matrix

    alg = novagen.algorithm("F(4,3)/classic")
    mod = nt.conv2d_module(alg, (1, 8, 8, 8, 8), schedule=None)
    text = mod.script()
    assert not re.search(r"T\.float32\(0(\.0)?\) \*|\* T\.float32\(0(\.0)?\)", text)
    assert not re.search(r"\* T\.float32\(-?1\.0\)", text)
    btd = text[text.index('T.sblock("BTd")'):text.index('T.sblock("V")')]
    consts = {float(v) for v in re.findall(r"\* T\.float32\(([-0-9.e]+)\)", btd)}
    expected = {float(op.c) for op in compile_matrix(alg.BT).ops if op.kind in ("mul", "shift")}
    assert consts and consts <= expected


def test_transform_weights_matches_exact_g() -> None:
    alg = novagen.algorithm("F(4,3)/nova")
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    u = nt.transform_weights(alg, w, "float64")
    g = np.array([[float(v) for v in row] for row in alg.G])
    assert u.shape == (6, 6, 3, 4)
    np.testing.assert_allclose(u[:, :, 1, 2], g @ w[2, 1] @ g.T, rtol=1e-12)


def test_module_shape_and_symbol() -> None:
    mod = nt.conv2d_module("F(6,3)/nova", (1, 16, 14, 14, 32), padding=1, layout="NHWC")
    func = mod["main"]
    assert [tuple(int(d) for d in p.shape) for p in func.params] == [
        (1, 14, 14, 16), (8, 8, 16, 32), (1, 14, 14, 32)]
    assert str(func.attrs["global_symbol"]).startswith("novagen_F_6_3_nova_1x16x14x14x32")


@pytest.mark.parametrize("kwargs,match", [
    ({"layout": "NCWH"}, "layout"),
    ({"dtype": "int8"}, "dtype"),
    ({"weights": "lazy"}, "weights"),
    ({"padding": -1}, "padding"),
    ({"layer": (1, 8, 2, 2, 8), "padding": 0}, "smaller than"),
    ({"layer": "1,8,8"}, "N,C,H,W,K"),
])
def test_bad_input(kwargs: dict, match: str) -> None:
    args = {"layer": (1, 8, 8, 8, 8), **kwargs}
    with pytest.raises(InputError, match=match):
        nt.conv2d_module("F(4,3)/nova", **args)


def test_bad_weights_and_input_shape() -> None:
    conv = nt.Conv2d("F(2,3)/classic", (1, 8, 6, 6, 8), padding=1)
    x, w = _data((1, 8, 6, 6, 8), 3)
    with pytest.raises(InputError, match="weights"):
        conv(x, w[:, :4])
    with pytest.raises(InputError, match="x must be"):
        conv(x[:, :4], w)
    with pytest.raises(InputError, match="2D conv"):
        nt.conv2d_module(novagen.algorithm("F(4x4,3x3)/nova"), (1, 8, 6, 6, 8))
