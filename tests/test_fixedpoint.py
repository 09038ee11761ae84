"""The fixed-point model: widths from exact range analysis hold the worst case, the integer pipeline
stays within its predicted bound of the float64 reference, bad input is refused."""

import numpy as np
import pytest

import novagen
from novagen.errors import InputError
from novagen.fixedpoint import FixedPointDesign, csd, csd_adders, design, layer_test_data, measure, signed_bits
from novagen.reference import correlate_direct

NAMES = ["F(2,3)/classic", "F(4,3)/classic", "F(4,3)/nova", "F(6,3)/classic", "F(6,3)/nova"]


@pytest.mark.parametrize("name", NAMES)
def test_scaled_transforms_are_integer_and_exact(name):
    alg = novagen.algorithm(name)
    des = FixedPointDesign(alg)
    for i, row in enumerate(alg.BT):
        assert [c * des.d[i] for c in row] == list(des.B[i])
    for u, row in enumerate(alg.AT):
        assert [c * e for c, e in zip(row, des.e)] == list(des.A[u])
    assert des.bt_program.matrix() == tuple(tuple(map(novagen.algebra.Fraction, r)) for r in des.B)


@pytest.mark.parametrize("name", NAMES)
def test_worst_case_input_reaches_but_fits_the_v_width(name):
    """The input that matches the signs of rows i and j of B̂ attains the bound; it fits the width and the
    width is not wasted (the bound needs its top magnitude bit)."""
    des = FixedPointDesign(novagen.algorithm(name), in_bits=8)
    B = np.array(des.B, dtype=object)
    l1 = np.abs(B).sum(axis=1)
    i = j = int(np.argmax(l1))
    tile = np.outer(np.sign(B[i]).astype(np.int64), np.sign(B[j]).astype(np.int64)) * -128
    V = des.input_transform(tile)
    assert abs(V[i, j]) == l1[i] * l1[j] * 128
    w = des.widths["v"]
    assert -(1 << (w - 1)) <= V[i, j] < (1 << (w - 1))
    assert abs(V[i, j]) >= 1 << (w - 2)
    assert signed_bits(127) == 8 and signed_bits(128) == 9


@pytest.mark.parametrize("name", NAMES)
def test_model_within_predicted_bound(name):
    alg = novagen.algorithm(name)
    shape = (2, 5, 11, 9, 4)
    x, w = layer_test_data(shape, 8, seed=1)
    des = FixedPointDesign(alg, in_bits=8, channels=5)
    yhat, y = des.run(x, des.transform_weights(w), 1)
    ref = correlate_direct(x.astype(float), w, 1)
    bound = des.error_bound(x, 1)
    err = np.abs(y - ref)
    assert y.shape == ref.shape == bound.shape[:1] + (4,) + bound.shape[2:]
    assert (err <= bound).all()
    assert err.max() > 0.005 * bound.max()          # the bound is not vacuous
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.1
    # Ŷ holds exact integers that fit the y width
    wy = des.widths["y"]
    assert all(-(1 << (wy - 1)) <= int(v) < (1 << (wy - 1)) for v in yhat.reshape(-1))


def test_more_coefficient_bits_less_error():
    alg = novagen.algorithm("F(4,3)/classic")
    e12 = measure(alg, (1, 4, 12, 12, 4), coef_bits=12)["rel_l2"]
    e20 = measure(alg, (1, 4, 12, 12, 4), coef_bits=20)["rel_l2"]
    assert e20 < e12 / 50


def test_bad_input():
    alg = novagen.algorithm("F(4,3)/classic")
    with pytest.raises(InputError, match="bits 'x'"):
        design(alg, "x")
    with pytest.raises(InputError, match="from 2 to 32"):
        FixedPointDesign(alg, in_bits=1)
    des = FixedPointDesign(alg, channels=2)
    with pytest.raises(InputError, match="weight_max"):
        des.transform_weights(np.full((1, 2, 3, 3), 2.0))
    with pytest.raises(InputError, match="8-bit"):
        des.run(np.full((1, 2, 6, 6), 300), des.transform_weights(np.zeros((1, 2, 3, 3))))


@pytest.mark.parametrize("c", [1, 3, 5, 7, 11, 23, 245, 1296, 16807, -5, -7, -16, 2**20 - 1])
def test_csd_digits(c):
    d = csd(abs(c))
    assert sum(s << k for k, s in d) == abs(c)
    ks = sorted(k for k, _ in d)
    assert all(b - a >= 2 for a, b in zip(ks, ks[1:]))  # canonic: no two adjacent nonzero digits
    assert csd_adders(c) >= len(d) - 1


@pytest.mark.parametrize("name,bits", [("F(2,3)/classic", 12), ("F(4,3)/classic", 18), ("F(4,3)/nova", 20),
                                       ("F(6,3)/classic", 24)])
def test_fixed_width_datapath_fits_rounds_and_stays_within_its_bound(name, bits):
    """Every rounded stage fits the datapath, the model stays within the bound that accounts for each
    rounding, and the rounding costs accuracy against the exact-width pipeline."""
    alg = novagen.algorithm(name)
    shape = (1, 6, 10, 11, 5)
    x, w = layer_test_data(shape, 8, seed=2)
    exact = FixedPointDesign(alg, in_bits=8, channels=6)
    uq = exact.transform_weights(w)
    des = FixedPointDesign(alg, in_bits=8, channels=6, datapath_bits=bits).for_weights(uq)
    assert all(des.widths[k] <= bits for k in ("z", "v", "m", "t", "y")) and sum(des.shifts.values()) > 0
    yhat, y = des.run(x, uq, 1)
    assert all(abs(int(v)) < 1 << (bits - 1) for v in yhat.reshape(-1))
    ref = correlate_direct(x.astype(float), w, 1)
    bound = des.error_bound(x, 1, uq)
    assert bound.shape == (1, 5, 10, 11) and (np.abs(y - ref) <= bound).all()
    _, y_exact = exact.run(x, uq, 1)
    assert np.linalg.norm(y - ref) > np.linalg.norm(y_exact - ref)
    # a wider datapath is at least as accurate
    wider = FixedPointDesign(alg, in_bits=8, channels=6, datapath_bits=bits + 6).for_weights(uq)
    assert np.linalg.norm(wider.run(x, uq, 1)[1] - ref) < np.linalg.norm(y - ref)


def test_datapath_rounding_is_round_half_up_and_weights_beyond_the_design_are_refused():
    from novagen.fixedpoint import rnd

    assert [rnd(v, 2) for v in (-6, -5, -2, -1, 0, 1, 2, 5, 6)] == [-1, -1, 0, 0, 0, 0, 1, 1, 2]
    alg = novagen.algorithm("F(2,3)/classic")
    des = FixedPointDesign(alg, channels=2, datapath_bits=12)
    small = des.for_weights(des.transform_weights(np.full((1, 2, 3, 3), 0.1)))
    with pytest.raises(InputError, match="exceed the ranges"):
        small.run(np.ones((1, 2, 4, 4), dtype=np.int64), des.transform_weights(np.full((1, 2, 3, 3), 0.9)))
    with pytest.raises(InputError, match="datapath bits"):
        FixedPointDesign(alg, datapath_bits=4)
