"""The one precision emulator: policies, rounding, per-operation emulation in NumPy, and the PyTorch
arrays running the same emulator (parity for every policy, integer and fp8 included)."""

import math

import ml_dtypes
import numpy as np
import pytest

from novagen import algorithm
from novagen.accuracy import layer_data
from novagen.errors import InputError
from novagen.precision import (
    POLICIES,
    Policy,
    Stage,
    direct_emulate,
    policy,
    round_to,
    winograd_emulate,
)
from novagen.reference import assemble, correlate_direct, input_tiles

SMALL = (1, 4, 10, 10, 3)
FP8 = {"fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2}


def _f16_transform(x, T):
    """T along the last axis in numpy float16, one rounded multiply and one rounded add at a time."""
    T = T.astype(np.float16)
    out = np.zeros((*x.shape[:-1], T.shape[0]), dtype=np.float16)
    for i in range(T.shape[0]):
        acc = np.zeros(x.shape[:-1], dtype=np.float16)
        for j in range(T.shape[1]):
            if T[i, j] != 0:
                acc = acc + T[i, j] * x[..., j]
        out[..., i] = acc
    return out


def _rows(x, T):
    """T along the second-to-last axis (the lab applies the row axis first)."""
    return np.swapaxes(_f16_transform(np.swapaxes(x, -1, -2), T), -1, -2)


def _f16_winograd(x, w, alg):
    """Pure fp16 Winograd written directly with numpy float16 arithmetic."""
    AT, G, BT = alg.matrices("float64")
    tiles, out = input_tiles(x.astype(np.float16), (alg, alg), "same")
    V = _f16_transform(_rows(tiles, BT), BT)
    U = _f16_transform(_rows(w.astype(np.float16), G), G)
    M = None
    for c in range(w.shape[1]):
        term = U[None, :, c, None, None] * V[:, c, None]
        M = term if M is None else M + term
    Y = _f16_transform(_rows(M, AT), AT)
    return assemble(Y, out)


@pytest.mark.parametrize("name", ["F(2,3)/classic", "F(4,3)/nova", "F(6,3)/classic"])
def test_fp16_pure_equals_numpy_float16_step_by_step(name):
    x, w = layer_data(SMALL, seed=1)
    alg = algorithm(name)
    y, counts = winograd_emulate(x, w, (alg, alg), policy("fp16-pure"), "same")
    ref = _f16_winograd(x, w, alg).astype(np.float64)
    assert np.array_equal(y, ref)
    assert counts["y"] == 0


@pytest.mark.parametrize("arrays", ["numpy", "torch"])
def test_fp32_transforms_equal_fp64_arithmetic_rounded_per_operation(arrays):
    """fp32 transforms run as fp32 adds of fp32-rounded products; that equals computing each product and
    sum in fp64 and rounding it to fp32, bit for bit: on float64 inputs that fp32 cannot hold, values
    spread over 2^±60, overflow to inf, NaN and signed zeros."""
    from novagen.precision.emulator import transform_axis
    from novagen.precision.numpy_arrays import NumpyArrays

    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 5, 8)) * np.exp2(rng.integers(-60, 60, (7, 5, 8)))
    x[0, 0, :] = [3e38, 3e38, -3e38, 1e-45, -0.0, 0.0, np.nan, 1.0]
    x[1, 1, :] = [-0.0] * 8
    T = algorithm("F(6,3)/best").matrices("float32")[2].astype(np.float64)
    want = np.empty_like(x)
    for i in range(T.shape[0]):  # the definition: each operation in fp64, rounded to fp32
        acc = np.zeros(x.shape[:-1])
        for j in np.flatnonzero(T[i]):
            acc = round_to(acc + round_to(x[..., j] * T[i, j], "fp32"), "fp32")
        want[..., i] = acc
    if arrays == "numpy":
        got = transform_axis(x, T, 2, "fp32", NumpyArrays())
    else:
        torch = pytest.importorskip("torch")
        from novagen.precision.torch_arrays import TorchArrays

        got = transform_axis(torch.from_numpy(x), T, 2, "fp32", TorchArrays(torch.float64)).numpy()
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_fp16_storage_fp32_compute_rounds_once_per_store():
    x, w = layer_data(SMALL, seed=2)
    alg = algorithm("F(4,3)/classic")
    y, _ = winograd_emulate(x, w, (alg, alg), policy("fp16"), "same")
    assert np.array_equal(y, y.astype(np.float16).astype(np.float64))  # stored as fp16
    # fp32 arithmetic on fp16 values, one storage rounding per stage: closer than pure fp16
    pure, _ = winograd_emulate(x, w, (alg, alg), policy("fp16-pure"), "same")
    exact = alg.conv2d(x, w, "same")
    assert np.linalg.norm(y - exact) < np.linalg.norm(pure - exact)


def test_direct_fp16_pure_equals_numpy_float16():
    x, w = layer_data(SMALL, seed=3)
    y, _ = direct_emulate(x, w, policy("fp16-pure"), "same")
    xp = np.pad(x.astype(np.float16), ((0, 0), (0, 0), (1, 1), (1, 1)))
    w16 = w.astype(np.float16)
    acc = None
    for c in range(w.shape[1]):
        for i in range(3):
            for j in range(3):
                term = w16[None, :, c, i, j, None, None] * xp[:, c:c + 1, i:i + 10, j:j + 10]
                acc = term if acc is None else acc + term
    assert np.array_equal(y, acc.astype(np.float64))


def test_round_to_rounds_once_for_bf16_and_fp8():
    # 1 + 2^-8 + 2^-30 lies just above the bf16 midpoint; rounding through fp32 first would give 1
    assert round_to(np.array([1 + 2**-8 + 2**-30]), "bf16")[0] == 1 + 2**-7
    v = np.array([0.3, -1.7, 250.0])
    assert np.array_equal(round_to(v, "fp8_e5m2"), v.astype(ml_dtypes.float8_e5m2).astype(np.float64))
    assert np.isnan(round_to(np.array([1000.0]), "fp8_e4m3")[0])  # e4m3 has no inf
    assert np.isinf(round_to(np.array([70000.0]), "fp16")[0])


def test_policies_and_bad_input():
    assert "fp16" in POLICIES and policy("FP16").name == "fp16"
    with pytest.raises(InputError, match="precision 'fp12'.*fp16"):
        policy("fp12")
    with pytest.raises(InputError, match="int8 storage needs a scale"):
        Stage("int8", "fp32")
    with pytest.raises(InputError, match="int32 accumulation"):
        st = Stage("fp16")
        Policy("bad", st, st, st, Stage("fp32", "int32"), st)


def _norm(a):
    return float(np.linalg.norm(a))


@pytest.mark.parametrize("prec", sorted(POLICIES))
def test_torch_arrays_run_the_same_emulation_for_every_policy(prec):
    """The emulator on PyTorch tensors against NumPy float64: the same overflow counts, and results that
    differ by far less than the error they measure.  Transforms agree bit for bit; what differs is fp32
    channel sums (torch's matrix products against NumPy's sequential fp32 operations: the 1e-5 floor) and
    int8 scales computed in float32 against float64, which move a few codes across a rounding boundary
    (up to 6% of the measured error here)."""
    pytest.importorskip("torch")
    from novagen.precision.emulator import direct, winograd
    from novagen.precision.torch_arrays import TorchArrays, work_dtype

    x, w = layer_data((1, 6, 14, 14, 5), seed=4)
    ref = correlate_direct(x, w, "same")
    pol = policy(prec)
    ops = TorchArrays(work_dtype(pol))
    pads = ((1, 1), (1, 1))
    for alg_name in ("F(4,3)/nova", "F(6,3)/classic", "F(8,3)/best"):
        alg = algorithm(alg_name)
        y_np, c_np = winograd_emulate(x, w, (alg, alg), pol, "same")
        y_t, c_t = winograd(ops.asarray(x), ops.asarray(w), (alg, alg), pol, pads, ops)
        y_t = y_t.double().numpy()
        assert c_t == c_np
        if prec in ("fp16", "fp16-pure", "bf16", "bf16-pure", "fp8-e4m3", "fp8-e5m2"):
            assert np.array_equal(y_t, y_np)  # no scales computed in float32: bit for bit
        err = _norm(y_np - ref) / _norm(ref)
        assert _norm(y_t - y_np) / _norm(ref) <= 0.1 * err + 1e-5, (alg_name, err)
    y_np, c_np = direct_emulate(x, w, pol, "same")
    y_t, c_t = direct(ops.asarray(x), ops.asarray(w), pol, pads, ops)
    assert c_t == c_np
    err = _norm(y_np - ref) / _norm(ref)
    assert _norm(y_t.double().numpy() - y_np) / _norm(ref) <= 0.1 * err + 1e-5


@pytest.mark.parametrize("prec", ["int8", "int8-tap", "fp8-e4m3", "fp8-e4m3-tap", "fp8-e5m2"])
def test_scaled_policies_match_an_independent_quantization(prec):
    """int8 and fp8 policies against a quantization written here from their definition: transforms in
    fp64-exact arithmetic are close enough (fp32 compute) that quantizing them gives the same codes almost
    everywhere, so the emulated output must sit within a few quantization steps of it."""
    x, w = layer_data((1, 8, 12, 12, 4), seed=7)
    alg = algorithm("F(4,3)/classic")
    AT, G, BT = alg.matrices("float64")
    pol = policy(prec)
    tap = pol.input_transform.scale == "tap"
    fmt = pol.input_transform.store

    def quant(t, keep):
        amax = np.max(np.abs(t), axis=tuple(range(t.ndim - 2))) if keep else np.max(np.abs(t))
        if fmt == "int8":
            s = np.where(amax > 0, amax / 127, 1.0)
            return np.clip(np.rint(t / s), -127, 127) * s
        top = float(ml_dtypes.finfo(FP8[fmt]).max)
        s = np.where(amax > 0, amax / top, 1.0)
        return round_to(t / s, fmt) * s

    xs = x if fmt == "int8" else round_to(x, "fp16")
    ws = (quant(w, False) if fmt == "int8" else round_to(w, "fp16"))
    if fmt == "int8":
        xs = quant(x, False)
    tiles, out = input_tiles(xs, (alg, alg), "same")
    V = quant(np.einsum("ai,ncthij,bj->nctha b".replace(" ", ""), BT, tiles, BT), tap)
    U = quant(np.einsum("ai,kcij,bj->kcab", G, ws, G), tap)
    M = np.einsum("kcab,nctsab->nktsab", U, V)
    y_ref = assemble(np.einsum("ia,nktsab,jb->nktsij", AT, M, AT), out)
    y, counts = winograd_emulate(x, w, (alg, alg), pol, "same")
    assert not any(counts.values())
    exact = correlate_direct(x, w, "same")
    err = _norm(y - exact) / _norm(exact)
    assert _norm(y - y_ref) / _norm(exact) <= 0.25 * err, err
    assert not math.isnan(err)
