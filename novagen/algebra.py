"""The exact algebra of Winograd (Cook–Toom) minimal filtering algorithms.

An F(m, r) algorithm computes m outputs of an r-tap correlation, y_i = sum_k g_k d_{i+k}, from an
input tile of alpha = m + r - 1 values with alpha multiplications:

    y = AT · [(G · g) ⊙ (BT · d)]

AT (m×alpha), G (alpha×r) and BT (alpha×alpha) follow from alpha interpolation points: alpha - 1
finite points plus the point at infinity (the default), or alpha finite points.  With
f_j = prod_{k != j} (p_j - p_k):

    AT[i][j] = p_j^i            G[j][k] = p_j^k / f_j        BT[j] = coefficients of prod_{k != j} (x - p_k)

and for the point at infinity the column e_{m-1} of AT, the row e_{r-1} of G and the coefficients of
prod_k (x - p_k) in BT.  This is the convention of wincnn and TVM (fractions in G, the first f made
positive), so the same points give the same matrices.  Everything here is exact (`Fraction`);
floats appear only in `Algorithm.matrices` and the reference convolutions it delegates to.

Multi-dimensional algorithms F(m×n, r×s) are `Nested`: one 1D algorithm per axis.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from novagen.errors import InputError, PointsError, SpecError, TransformFileError
from novagen.limits import MAX_TEXT, rational, short
from novagen.points import INF, Point, family_points, format_point, is_family, parse_point, parse_points

MAX_ALPHA = 32
"""Largest tile (alpha = m + r - 1) per axis: beyond it the symbolic proof and float metrics lose meaning."""

MAX_NDIM = 3

Matrix = tuple[tuple[Fraction, ...], ...]


# ---------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class Spec:
    """F(m, r) per axis: `m` outputs and `r` taps on each of `ndim` axes."""

    m: tuple[int, ...]
    r: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.m)

    @property
    def alpha(self) -> tuple[int, ...]:
        return tuple(m + r - 1 for m, r in zip(self.m, self.r))

    def axis(self, i: int) -> Spec:
        return Spec((self.m[i],), (self.r[i],))

    def __str__(self) -> str:
        return f"F({'x'.join(map(str, self.m))},{'x'.join(map(str, self.r))})"

    @classmethod
    def of(cls, m: int | Sequence[int], r: int | Sequence[int]) -> Spec:
        """Build and validate a spec from sizes (a single int means 1D)."""
        ms = (m,) if isinstance(m, numbers.Integral) else tuple(m)
        rs = (r,) if isinstance(r, numbers.Integral) else tuple(r)
        text = f"F({'x'.join(map(str, ms))},{'x'.join(map(str, rs))})"
        if len(ms) != len(rs):
            raise SpecError(f"{text}: m and r must have the same number of axes")
        if not 1 <= len(ms) <= MAX_NDIM:
            raise SpecError(f"{text}: 1 to {MAX_NDIM} axes are supported")
        for mi, ri in zip(ms, rs):
            if int(mi) < 1 or int(ri) < 1:
                raise SpecError(f"{text}: m and r must be at least 1, as in F(6,3)")
            if mi + ri - 1 > MAX_ALPHA:
                raise SpecError(
                    f"{text}: tile size alpha = m + r - 1 = {mi + ri - 1} exceeds the maximum {MAX_ALPHA}"
                )
        return cls(tuple(int(x) for x in ms), tuple(int(x) for x in rs))


_SPEC_RE = re.compile(r"^\s*[Ff]\s*\(\s*([0-9xX×\s]+?)\s*,\s*([0-9xX×\s]+?)\s*\)\s*$")


def parse_spec(text: str) -> Spec:
    """Parse "F(6,3)", "F(4x4,3x3)" or "F(4×2,3×3)"."""
    if not isinstance(text, str):
        raise SpecError(f"{short(repr(text))} is not a spec: write F(m,r) such as F(6,3)")
    match = _SPEC_RE.match(text) if len(text) <= MAX_TEXT else None
    if not match:
        raise SpecError(f"'{short(text)}' is not a spec: write F(m,r) such as F(6,3), or F(4x4,3x3) for 2D")

    def sizes(part: str) -> list[int]:
        items = [s.strip() for s in re.split(r"[xX×]", part)]
        if not all(s.isdigit() and len(s) <= 4 for s in items):
            raise SpecError(f"'{short(text)}' is not a spec: sizes must be whole numbers up to the tile limit, "
                            "as in F(6,3)")
        return [int(s) for s in items]

    return Spec.of(sizes(match.group(1)), sizes(match.group(2)))



def normalize_points(spec: Spec, points: Sequence[Point]) -> tuple[Point, ...]:
    """Check points against a 1D spec and put them in canonical form (point at infinity last).

    alpha - 1 finite points get the point at infinity added; alpha finite points are used as they are.
    """
    if spec.ndim != 1:
        raise SpecError(f"{spec} has {spec.ndim} axes; points belong to one axis")
    (alpha,) = spec.alpha
    finite = [p for p in points if p is not INF]
    n_inf = len(points) - len(finite)
    listed = ", ".join(format_point(p) for p in points)
    if n_inf > 1:
        raise PointsError(f"the point at infinity appears {n_inf} times in [{listed}]; it may appear once")
    seen: dict[Fraction, int] = {}
    for p in finite:
        if p in seen:
            raise PointsError(
                f"point {p} appears twice in [{listed}]: the points must be distinct "
                "(repeated points make the Vandermonde matrix singular)"
            )
        seen[p] = 1
    n = len(finite)
    if n_inf == 1 and n != alpha - 1:
        raise PointsError(
            f"{spec} with the point at infinity needs {alpha - 1} finite points, got {n}: [{listed}]"
        )
    if n_inf == 0 and n not in (alpha - 1, alpha):
        raise PointsError(
            f"{spec} needs {alpha - 1} finite points (the point at infinity is then added) "
            f"or {alpha} without it, got {n}: [{listed}]"
        )
    if n == alpha - 1:
        return (*finite, INF)
    return tuple(finite)



# ---------------------------------------------------------------------------------------------
# Cook–Toom construction


def _poly_from_roots(roots: Iterable[Fraction]) -> list[Fraction]:
    """Coefficients (lowest degree first) of prod (x - root)."""
    coeffs = [Fraction(1)]
    for root in roots:
        shifted = [Fraction(0), *coeffs]
        for i, c in enumerate(coeffs):
            shifted[i] -= root * c
        coeffs = shifted
    return coeffs


def cook_toom(m: int, r: int, points: Sequence[Point]) -> tuple[Matrix, Matrix, Matrix]:
    """AT, G, BT of F(m, r) for normalized points (see `normalize_points`)."""
    alpha = m + r - 1
    finite = [p for p in points if p is not INF]
    infinity = len(finite) == alpha - 1
    others = [[q for k, q in enumerate(finite) if k != j] for j in range(len(finite))]
    f = [math.prod((p - q for q in rest), start=Fraction(1)) for p, rest in zip(finite, others)]
    sign = [Fraction(1)] * len(finite)
    if f and f[0] < 0:
        sign[0] = Fraction(-1)

    def padded(coeffs: list[Fraction]) -> tuple[Fraction, ...]:
        return tuple(coeffs + [Fraction(0)] * (alpha - len(coeffs)))

    AT = [[p**i for p in finite] for i in range(m)]
    G = [[p**k / (s * fj) for k in range(r)] for p, fj, s in zip(finite, f, sign)]
    BT = [
        padded([s * c for c in _poly_from_roots(rest)]) for rest, s in zip(others, sign)
    ]
    if infinity:
        for i in range(m):
            AT[i].append(Fraction(int(i == m - 1)))
        G.append([Fraction(int(k == r - 1)) for k in range(r)])
        BT.append(padded(_poly_from_roots(finite)))
    return tuple(map(tuple, AT)), tuple(map(tuple, G)), tuple(map(tuple, BT))


# ---------------------------------------------------------------------------------------------
# Algorithms


def _frac(value: Any, where: str) -> Fraction:
    """A matrix entry: exact from integers and rational strings; a float is read as its shortest decimal
    (0.1 is 1/10, as a JSON file means it)."""
    if isinstance(value, float) and not isinstance(value, bool) and math.isfinite(value):
        value = repr(value)
    return rational(value, where, TransformFileError)


def as_matrix(rows: Any, label: str) -> Matrix:
    """An exact matrix from nested lists of numbers or rational strings."""
    if isinstance(rows, np.ndarray):
        rows = rows.tolist()
    if not isinstance(rows, (list, tuple)) or not rows or not all(isinstance(r, (list, tuple)) for r in rows):
        raise TransformFileError(f"{label} must be a non-empty list of rows")
    width = len(rows[0])
    if width == 0 or any(len(r) != width for r in rows):
        raise TransformFileError(f"{label} must be rectangular: rows have lengths {[len(r) for r in rows]}")
    return tuple(tuple(_frac(v, f"{label}[{i}][{j}]") for j, v in enumerate(r)) for i, r in enumerate(rows))


def _matrix_strings(mat: Matrix) -> list[list[str]]:
    return [[str(v) for v in row] for row in mat]


@dataclass(frozen=True)
class Algorithm:
    """An exact 1D bilinear algorithm F(m, r): y = AT · [(G · g) ⊙ (BT · d)].

    `points` is None for transforms given only as matrices (e.g. written by hand).
    """

    m: int
    r: int
    AT: Matrix
    G: Matrix
    BT: Matrix
    points: tuple[Point, ...] | None = None
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        alpha = self.m + self.r - 1
        shapes = {
            "AT": (len(self.AT), len(self.AT[0]) if self.AT else 0),
            "G": (len(self.G), len(self.G[0]) if self.G else 0),
            "BT": (len(self.BT), len(self.BT[0]) if self.BT else 0),
        }
        want = {"AT": (self.m, alpha), "G": (alpha, self.r), "BT": (alpha, alpha)}
        if shapes != want:
            got = ", ".join(f"{k} {a}×{b}" for k, (a, b) in shapes.items())
            need = ", ".join(f"{k} {a}×{b}" for k, (a, b) in want.items())
            raise TransformFileError(f"F({self.m},{self.r}) needs {need}; got {got}")

    @classmethod
    def from_points(cls, spec: Spec | str, points: str | Iterable[Any], *, snap: int | None = None,
                    name: str | None = None) -> Algorithm:
        """Cook–Toom construction from a 1D spec and points (a list, a string, or a family name)."""
        spec = parse_spec(spec) if isinstance(spec, str) else spec
        if spec.ndim != 1:
            raise SpecError(f"{spec} is {spec.ndim}D: use novagen.algorithm() for nested algorithms")
        if isinstance(points, str) and is_family(points):
            pts: tuple[Point, ...] = family_points(points, spec.alpha[0] - 1)
        else:
            pts = parse_points(points, snap)
        pts = normalize_points(spec, pts)
        AT, G, BT = cook_toom(spec.m[0], spec.r[0], pts)
        return cls(spec.m[0], spec.r[0], AT, G, BT, pts, name)

    @classmethod
    def from_matrices(cls, AT: Any, G: Any, BT: Any, *, points: Iterable[Any] | None = None,
                      name: str | None = None) -> Algorithm:
        """An algorithm from matrices as given (nothing is derived or corrected)."""
        at, g, bt = as_matrix(AT, "AT"), as_matrix(G, "G"), as_matrix(BT, "BT")
        pts = None if points is None else tuple(parse_point(p) for p in points)
        return cls(len(at), len(g[0]), at, g, bt, pts, name)

    @property
    def alpha(self) -> int:
        return self.m + self.r - 1

    @property
    def spec(self) -> Spec:
        return Spec((self.m,), (self.r,))

    @property
    def axes(self) -> tuple[Algorithm, ...]:
        return (self,)

    @property
    def finite_points(self) -> tuple[Fraction, ...] | None:
        if self.points is None:
            return None
        return tuple(p for p in self.points if p is not INF)

    @property
    def has_infinity(self) -> bool | None:
        return None if self.points is None else INF in self.points

    @property
    def label(self) -> str:
        return self.name or str(self.spec)

    def matrices(self, dtype: Any = "float64") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """AT, G, BT as NumPy arrays (each entry rounded once from its exact value)."""
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise InputError(f"dtype {short(repr(dtype))} is not a NumPy dtype: use float64, float32, float16 or "
                             "an ml_dtypes format such as bfloat16") from None
        if dt.kind not in "fiuV" and "float" not in dt.name:
            raise InputError(f"dtype {dt} is not a number format: use float64, float32, float16 or bfloat16")
        return tuple(_to_array(M, dt) for M in (self.AT, self.G, self.BT))  # type: ignore[return-value]

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the exact matrices: the identity of the transform."""
        body = json.dumps(
            {"m": self.m, "r": self.r, "AT": _matrix_strings(self.AT), "G": _matrix_strings(self.G),
             "BT": _matrix_strings(self.BT)},
            sort_keys=True, separators=(",", ":"),
        )
        return hashlib.sha256(body.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": str(self.spec),
            "name": self.name,
            "points": None if self.points is None else [format_point(p) for p in self.points],
            "AT": _matrix_strings(self.AT),
            "G": _matrix_strings(self.G),
            "BT": _matrix_strings(self.BT),
            "hash": self.content_hash,
        }

    def nest(self, *others: Algorithm) -> Nested:
        """The multi-dimensional algorithm with this one on the first axis."""
        return Nested((self, *others))

    def conv1d(self, x: np.ndarray, w: np.ndarray, padding: Any = "valid") -> np.ndarray:
        """Reference float64 1D correlation, x (N, C, L), w (K, C, r) -> (N, K, L')."""
        from novagen.reference import winograd_correlate

        return winograd_correlate(x, w, (self,), padding)

    def conv2d(self, x: np.ndarray, w: np.ndarray, padding: Any = "valid") -> np.ndarray:
        """Reference float64 2D correlation with F(m×m, r×r), x NCHW, w KCrr -> NKH'W'."""
        from novagen.reference import winograd_correlate

        return winograd_correlate(x, w, (self, self), padding)


@dataclass(frozen=True)
class Nested:
    """A multi-dimensional algorithm: one 1D algorithm per axis (Kronecker nesting)."""

    axes: tuple[Algorithm, ...]
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.axes) <= MAX_NDIM:
            raise SpecError(f"nested algorithms have 1 to {MAX_NDIM} axes, got {len(self.axes)}")

    @property
    def spec(self) -> Spec:
        return Spec(tuple(a.m for a in self.axes), tuple(a.r for a in self.axes))

    @property
    def label(self) -> str:
        return self.name or str(self.spec)

    @cached_property
    def content_hash(self) -> str:
        return hashlib.sha256("/".join(a.content_hash for a in self.axes).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"spec": str(self.spec), "name": self.name, "axes": [a.to_dict() for a in self.axes],
                "hash": self.content_hash}

    def conv(self, x: np.ndarray, w: np.ndarray, padding: Any = "valid") -> np.ndarray:
        """Reference float64 N-d correlation over the last len(axes) dimensions."""
        from novagen.reference import winograd_correlate

        return winograd_correlate(x, w, self.axes, padding)

    def conv2d(self, x: np.ndarray, w: np.ndarray, padding: Any = "valid") -> np.ndarray:
        if len(self.axes) != 2:
            raise SpecError(f"{self.spec} is {len(self.axes)}D; conv2d needs a 2D algorithm")
        return self.conv(x, w, padding)


AnyAlgorithm = Algorithm | Nested


def round_fraction(x: Fraction, dtype: Any) -> Any:
    """The value of `dtype` nearest to x (ties to even), rounded once from the exact rational.

    Casting float64 to a narrower type would round twice; this checks the neighbours exactly.
    Works for IEEE-like binary formats, including ml_dtypes' bfloat16 and fp8 types.
    """
    dt = np.dtype(dtype)
    if dt == np.float64:
        return np.float64(float(x))
    if dt.kind != "f" and dt.kind != "V" and "float" not in dt.name:
        raise TypeError(f"round_fraction needs a floating dtype, not {dt}")
    uint = np.dtype(f"uint{8 * dt.itemsize}")
    with np.errstate(over="ignore", invalid="ignore"):
        first = np.array([float(x)]).astype(dt)
    bits = int(first.view(uint)[0])

    def value(b: int) -> Any:
        return np.array([b], dtype=uint).view(dt)[0]

    if not math.isfinite(float(first[0])):
        # Overflow: IEEE rounds to inf (NaN where the format has no inf) from max + ulp/2 on.
        top, below = float(value(bits - 1)), float(value(bits - 2))
        return first[0] if abs(x) >= Fraction(abs(top)) + Fraction(abs(top) - abs(below)) / 2 else value(bits - 1)
    best = None
    for b in (bits - 1, bits, bits + 1):
        if not 0 <= b < 2 ** (8 * dt.itemsize):
            continue
        v = value(b)
        fv = float(v)
        if not math.isfinite(fv):
            continue
        key = (abs(Fraction(fv) - x), b & 1)
        if best is None or key < best[0]:
            best = (key, v)
    return first[0] if best is None else best[1]


def _to_array(M: Matrix, dtype: Any) -> np.ndarray:
    return _rounded(M, np.dtype(dtype)).copy()


@lru_cache(maxsize=4096)
def _rounded(M: Matrix, dt: np.dtype) -> np.ndarray:
    """M with every entry rounded once from its exact value (cached by content: exact rounding is slow)."""
    if dt == np.float64 or dt.kind in "iu":
        return np.array([[float(v) for v in row] for row in M], dtype=np.float64).astype(dt)
    return np.array([[round_fraction(v, dt) for v in row] for row in M], dtype=dt)


def build(spec: Spec | str, points: str | Iterable[Any] = "classic", *, snap: int | None = None,
          name: str | None = None) -> AnyAlgorithm:
    """Construct an algorithm for any spec.

    For nD specs `points` is one set per axis separated by ';' (or a list of sets), or a single set
    or family name used on every axis.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.ndim == 1:
        return Algorithm.from_points(spec, points, snap=snap, name=name)
    if isinstance(points, str):
        per_axis: list[Any] = [p for p in points.split(";")] if ";" in points else [points] * spec.ndim
    else:
        seq = list(points)
        nested_lists = seq and all(isinstance(p, (list, tuple)) for p in seq)
        per_axis = seq if nested_lists else [seq] * spec.ndim
    if len(per_axis) != spec.ndim:
        raise PointsError(f"{spec} has {spec.ndim} axes but {len(per_axis)} point sets were given")
    axes = tuple(Algorithm.from_points(spec.axis(i), p, snap=snap) for i, p in enumerate(per_axis))
    return Nested(axes, name)


def from_dict(data: Any) -> AnyAlgorithm:
    """Read an algorithm from its JSON form (`to_dict`, `show --json`, or just AT, G, BT)."""
    if not isinstance(data, dict):
        raise TransformFileError("a transform must be a JSON object with keys AT, G and BT")
    if "certificate" in data and isinstance(data["certificate"], dict):
        data = data["certificate"].get("algorithm", data)
    if "algorithm" in data and isinstance(data["algorithm"], dict):
        data = data["algorithm"]
    if "axes" in data:
        axes = data["axes"]
        if not isinstance(axes, list) or not axes:
            raise TransformFileError("'axes' must be a non-empty list of 1D transforms")
        return Nested(tuple(_algorithm_from_dict(a) for a in axes), data.get("name"))
    return _algorithm_from_dict(data)


def _algorithm_from_dict(data: Any) -> Algorithm:
    if not isinstance(data, dict):
        raise TransformFileError("each transform must be a JSON object with keys AT, G and BT")
    missing = [k for k in ("AT", "G", "BT") if k not in data]
    if missing:
        raise TransformFileError(f"the transform lacks {', '.join(missing)} (it needs AT, G and BT)")
    points = data.get("points")
    try:
        pts = None if points is None else [parse_point(p) for p in points]
    except PointsError as exc:
        raise TransformFileError(f"points: {exc}") from None
    alg = Algorithm.from_matrices(data["AT"], data["G"], data["BT"], points=pts, name=data.get("name"))
    if "spec" in data:
        spec = parse_spec(str(data["spec"]))
        if spec != alg.spec:
            raise TransformFileError(f"the file says {data['spec']} but its matrices have the shape of {alg.spec}")
    return alg
