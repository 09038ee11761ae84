from fractions import Fraction

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from novagen import INF, Algorithm, Nested, algorithm, build, from_dict, parse_points, parse_spec
from novagen.algebra import MAX_ALPHA, Spec, normalize_points, round_fraction
from novagen.errors import PointsError, SpecError, TransformFileError
from novagen.metrics import metrics
from novagen.points import family_points
from novagen.reference import correlate_direct

F = Fraction


def bilinear_tensor_ok(alg: Algorithm) -> bool:
    """sum_j AT[i][j] G[j][k] BT[j][l] == [l == i + k]: the exact identity of a correct algorithm."""
    for i in range(alg.m):
        for k in range(alg.r):
            for l in range(alg.alpha):
                s = sum(alg.AT[i][j] * alg.G[j][k] * alg.BT[j][l] for j in range(alg.alpha))
                if s != (1 if l == i + k else 0):
                    return False
    return True


# --- specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,m,r", [
    ("F(6,3)", (6,), (3,)),
    (" F( 2 , 3 ) ", (2,), (3,)),
    ("f(4,5)", (4,), (5,)),
    ("F(4x4,3x3)", (4, 4), (3, 3)),
    ("F(4×2,3×3)", (4, 2), (3, 3)),
    ("F(2x2x2,3x3x3)", (2, 2, 2), (3, 3, 3)),
])
def test_parse_spec(text, m, r):
    spec = parse_spec(text)
    assert spec.m == m and spec.r == r
    assert parse_spec(str(spec)) == spec


def test_spec_str_and_alpha():
    spec = parse_spec("F(4×2,3×5)")
    assert str(spec) == "F(4x2,3x5)"
    assert spec.alpha == (6, 6)


@pytest.mark.parametrize("text,fragment", [
    ("F(0,3)", "at least 1"),
    ("F(6,0)", "at least 1"),
    ("G(6,3)", "not a spec"),
    ("F(6)", "not a spec"),
    ("F(6,3", "not a spec"),
    ("F(a,3)", "not a spec"),
    ("F(4x4,3)", "same number of axes"),
    (f"F({MAX_ALPHA},3)", "exceeds the maximum"),
    ("F(2x2x2x2,3x3x3x3)", "1 to 3 axes"),
])
def test_parse_spec_errors(text, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_spec(text)


# --- points --------------------------------------------------------------------------------


def test_parse_points_forms():
    assert parse_points("0, 3/5,-3/5 ,inf") == (F(0), F(3, 5), F(-3, 5), INF)
    assert parse_points("-0.6") == (F(-3, 5),)
    assert parse_points([0, F(1, 2), "-7/6", float("inf")]) == (F(0), F(1, 2), F(-7, 6), INF)
    assert parse_points(["∞", "Infinity"])[0] is INF
    assert parse_points([0.1])[0] == F(0.1)  # floats are taken as their exact binary value
    assert parse_points([0.1], snap=10)[0] == F(1, 10)
    assert parse_points("0.8333,-1.1667", snap=6) == (F(5, 6), F(-7, 6))


@pytest.mark.parametrize("text", ["0,abc,1", "0,1/0", "0,,1", "nan"])
def test_parse_points_rejects_non_numbers(text):
    with pytest.raises(PointsError, match="not a point"):
        parse_points(text)


@pytest.mark.parametrize("points,fragment", [
    ("0,1,1", "appears twice"),
    ("0,1,-1,inf,inf", "appears 2 times"),
    ("0,1", "needs 3 finite points"),
    ("0,1,-1,2,-2", "needs 3 finite points"),
    ("0,1,inf", "needs 3 finite points"),
])
def test_normalize_points_errors(points, fragment):
    with pytest.raises(PointsError, match=fragment):
        normalize_points(parse_spec("F(2,3)"), parse_points(points))


def test_infinity_added_and_moved_last():
    spec = parse_spec("F(2,3)")
    assert normalize_points(spec, parse_points("0,1,-1")) == (F(0), F(1), F(-1), INF)
    assert normalize_points(spec, parse_points("inf,0,1,-1")) == (F(0), F(1), F(-1), INF)
    assert normalize_points(spec, parse_points("0,1,-1,2")) == (F(0), F(1), F(-1), F(2))


def test_snap_that_merges_points_is_rejected():
    with pytest.raises(PointsError, match="appears twice"):
        Algorithm.from_points("F(2,3)", "0,0.49,0.51", snap=1)


def test_families():
    assert family_points("integer", 7) == tuple(map(F, (0, 1, -1, 2, -2, 3, -3)))
    assert set(family_points("classic", 7)) == {F(0), F(1), F(-1), F(2), F(-2), F(1, 2), F(-1, 2)}
    assert set(family_points("nova", 9)) == {F(0), F(2, 5), F(-2, 5), F(5, 6), F(-5, 6), F(1), F(-1), F(7, 6),
                                             F(-7, 6)}
    assert family_points("standard", 3) == family_points("integer", 3)
    with pytest.raises(PointsError, match="no set of 4"):
        family_points("nova", 4)
    with pytest.raises(PointsError, match="unknown point family"):
        family_points("golden", 4)


# --- construction against independent oracles ----------------------------------------------


POINT_SETS = [
    ("F(2,3)", "0,1,-1"),
    ("F(3,2)", "0,1,-1"),
    ("F(4,3)", "0,1,-1,2,-2"),
    ("F(4,3)", "0,5/6,-5/6,7/6,-7/6"),
    ("F(6,3)", "0,3/5,-3/5,1,-1,7/6,-7/6"),
    ("F(6,3)", "0,-1,1,1/2,-1/2,2,-2"),
    ("F(8,3)", "0,2/5,-2/5,5/6,-5/6,1,-1,7/6,-7/6"),
    ("F(4,5)", "0,-1,1,1/2,-2,-1/2,2"),
    ("F(2,7)", "0,-1,1,1/2,-2,-1/2,2"),
    ("F(3,3)", "-3,1/7,2,5"),
]


@pytest.mark.parametrize("spec,points", POINT_SETS)
def test_matches_wincnn(spec, points):
    wincnn = pytest.importorskip("wincnn")
    alg = Algorithm.from_points(spec, points)
    pts = [sympy.Rational(str(p)) for p in alg.finite_points]
    AT, G, BT, _ = wincnn.cookToomFilter(pts, alg.m, alg.r)
    for ours, theirs in ((alg.AT, AT), (alg.G, G), (alg.BT, BT)):
        assert [[sympy.Rational(str(v)) for v in row] for row in ours] == theirs.tolist()


@pytest.mark.tvm
@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (6, 3), (8, 3), (4, 5), (2, 7), (3, 3)])
def test_classic_family_matches_tvm(m, r):
    tvm = pytest.importorskip("tvm")
    from tvm.topi.nn import winograd_util

    n = m + r - 2
    theirs = winograd_util._interpolation_points(n)
    ours = family_points("classic", n)
    assert [float(p) for p in ours] == theirs.tolist()
    A, B, G = winograd_util._cook_toom_convolution(theirs, m, r)
    alg = Algorithm.from_points(f"F({m},{r})", "classic")
    AT, G2, BT = alg.matrices()
    np.testing.assert_allclose(AT, A.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(BT, B.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(G2, G, rtol=1e-12, atol=1e-12)
    assert tvm.__version__


@pytest.mark.parametrize("spec,points", POINT_SETS)
def test_bilinear_identity_holds(spec, points):
    assert bilinear_tensor_ok(Algorithm.from_points(spec, points))


def test_without_infinity_is_exact():
    alg = Algorithm.from_points("F(2,3)", "0,1,-1,2")
    assert alg.has_infinity is False
    assert bilinear_tensor_ok(alg)
    x = np.random.default_rng(1).standard_normal((1, 2, 9, 9))
    w = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    np.testing.assert_allclose(alg.conv2d(x, w), correlate_direct(x, w), rtol=1e-12, atol=1e-12)


def test_first_point_sign_convention():
    alg = Algorithm.from_points("F(2,3)", "0,1,-1")
    assert alg.BT[0] == (F(1), F(0), F(-1), F(0))
    assert alg.G[0] == (F(1), F(0), F(0))


# --- float64 reference convolution ---------------------------------------------------------


@pytest.mark.parametrize("name", [
    "F(2,3)/classic", "F(4,3)/nova", "F(6,3)/nova", "F(8,3)/nova", "F(8,3)/classic", "F(6,3)/integer",
])
@pytest.mark.parametrize("padding", ["valid", "same", 1, (2, 0)])
def test_conv2d_matches_direct_catalog(name, padding):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 19, 14))
    w = rng.standard_normal((5, 3, 3, 3))
    alg = algorithm(name)
    ref = correlate_direct(x, w, padding)
    y = alg.conv2d(x, w, padding)
    assert y.shape == ref.shape
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-10


@pytest.mark.parametrize("spec", ["F(2,3)", "F(4,3)", "F(6,3)", "F(8,3)", "F(4,5)", "F(2,7)", "F(3,2)"])
def test_conv2d_matches_direct_specs(spec):
    rng = np.random.default_rng(3)
    alg = build(spec, "classic")
    x = rng.standard_normal((2, 4, 23, 17))
    w = rng.standard_normal((3, 4, alg.r, alg.r))
    for padding in ("valid", "same"):
        ref = correlate_direct(x, w, padding)
        assert np.linalg.norm(alg.conv2d(x, w, padding) - ref) / np.linalg.norm(ref) < 1e-10


def test_non_square_nested():
    rng = np.random.default_rng(4)
    alg = build("F(4x2,3x3)", "classic")
    assert isinstance(alg, Nested) and alg.spec == Spec((4, 2), (3, 3))
    x = rng.standard_normal((1, 3, 13, 10))
    w = rng.standard_normal((2, 3, 3, 3))
    ref = correlate_direct(x, w, "same")
    assert np.linalg.norm(alg.conv2d(x, w, "same") - ref) / np.linalg.norm(ref) < 1e-10
    mixed = build("F(4x2,3x5)", "0,1,-1,1/2,-2;0,1,-1,2,-2")
    w2 = rng.standard_normal((2, 3, 3, 5))
    ref = correlate_direct(x, w2)
    assert np.linalg.norm(mixed.conv2d(x, w2) - ref) / np.linalg.norm(ref) < 1e-10


def test_conv1d_and_3d():
    rng = np.random.default_rng(5)
    alg = algorithm("F(6,3)/nova")
    x = rng.standard_normal((2, 3, 31))
    w = rng.standard_normal((4, 3, 3))
    np.testing.assert_allclose(alg.conv1d(x, w, "same"), correlate_direct(x, w, "same"), atol=1e-11)
    alg3 = algorithm("F(2x2x2,3x3x3)/classic")
    x3 = rng.standard_normal((1, 2, 7, 6, 5))
    w3 = rng.standard_normal((3, 2, 3, 3, 3))
    np.testing.assert_allclose(alg3.conv(x3, w3, "same"), correlate_direct(x3, w3, "same"), atol=1e-11)


def test_conv_shape_errors():
    alg = algorithm("F(4,3)/nova")
    from novagen.errors import InputError

    with pytest.raises(InputError, match="channels"):
        alg.conv2d(np.zeros((1, 3, 8, 8)), np.zeros((2, 4, 3, 3)))
    with pytest.raises(InputError, match="kernel"):
        alg.conv2d(np.zeros((1, 3, 8, 8)), np.zeros((2, 3, 5, 5)))
    with pytest.raises(InputError, match="smaller than the kernel"):
        alg.conv2d(np.zeros((1, 3, 2, 2)), np.zeros((2, 3, 3, 3)))


# --- serialization and values --------------------------------------------------------------


def test_dict_round_trip_and_hash():
    alg = algorithm("F(6,3)/nova")
    back = from_dict(alg.to_dict())
    assert back == alg and back.content_hash == alg.content_hash
    bare = from_dict({"AT": alg.to_dict()["AT"], "G": alg.to_dict()["G"], "BT": alg.to_dict()["BT"]})
    assert bare.points is None and bare.content_hash == alg.content_hash
    nested = algorithm("F(6x4,3x3)/nova")
    assert from_dict(nested.to_dict()) == nested


@pytest.mark.parametrize("data,fragment", [
    ([1, 2], "JSON object"),
    ({"AT": [[1]]}, "lacks G, BT"),
    ({"AT": [[1, 1, 1, 0], [0, 1, -1, 1]], "G": [[1, 0]], "BT": [[1]]}, "needs"),
    ({"AT": [[1, "x"]], "G": [[1]], "BT": [[1]]}, "not a number"),
    ({"AT": [[1, 2], [3]], "G": [[1]], "BT": [[1]]}, "rectangular"),
    ({**algorithm("F(2,3)/classic").to_dict(), "spec": "F(4,3)"}, r"shape of F\(2,3\)"),
])
def test_from_dict_errors(data, fragment):
    with pytest.raises(TransformFileError, match=fragment):
        from_dict(data)


def test_matrices_dtype():
    alg = algorithm("F(4,3)/nova")
    AT16, G16, BT16 = alg.matrices("float16")
    assert AT16.dtype == np.float16
    assert G16[1, 0] == np.float16(float(alg.G[1][0]))


@given(num=st.integers(-10**6, 10**6), den=st.integers(1, 10**6))
@settings(max_examples=200, deadline=None)
def test_round_fraction_is_nearest(num, den):
    x = F(num, den)
    for dt in (np.float16, np.float32):
        v = round_fraction(x, dt)
        if not np.isfinite(v):
            assert dt is np.float16 and abs(x) >= 65520  # fp16 overflows to inf from max + ulp/2 on
            continue
        bits = np.array([v]).view(np.uint16 if dt is np.float16 else np.uint32)[0]
        width = 16 if dt is np.float16 else 32
        for nb in (int(bits) - 1, int(bits) + 1):
            if not 0 <= nb < 2**width:
                continue
            u = np.array([nb], dtype=np.uint16 if dt is np.float16 else np.uint32).view(dt)[0]
            if np.isfinite(u):
                assert abs(F(float(v)) - x) <= abs(F(float(u)) - x)


# --- property-based: random distinct rational point sets -----------------------------------


rationals = st.builds(F, st.integers(-12, 12), st.integers(1, 8))


@st.composite
def point_sets(draw):
    m = draw(st.integers(1, 5))
    r = draw(st.integers(1, 4))
    n = m + r - 1 - draw(st.sampled_from([0, 1]))  # with or without the point at infinity
    pts = draw(st.lists(rationals, min_size=n, max_size=n, unique=True))
    return m, r, pts


@given(point_sets())
@settings(max_examples=60, deadline=None)
def test_random_point_sets_are_exact(case):
    m, r, pts = case
    alg = Algorithm.from_points(Spec.of(m, r), pts)
    assert bilinear_tensor_ok(alg)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, m + r + 3, m + r + 1))
    w = rng.standard_normal((2, 2, r, r))
    ref = correlate_direct(x, w)
    scale = max(1.0, np.linalg.norm(ref))
    # float64 error grows with the 2D conditioning of arbitrary points: allow it, never an O(1) wrong result
    tol = min(1e-2, max(1e-10, 1e-13 * (metrics(alg)["vandermonde_cond_2d"] or 1.0)))
    assert np.linalg.norm(alg.conv2d(x, w) - ref) / scale < tol
