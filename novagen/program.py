"""Transform programs: a transform matrix compiled to straight-line code with exact operation counts.

A `Program` computes y = M·x with a list of two-operand operations.  `compile_matrix` drops zero
terms, turns ±1 into plain adds and subtractions and powers of two into shifts, and shares common
subexpressions with a greedy two-term search across rows (Hartley, "Subexpression sharing in filters
using canonic signed digit multipliers", 1996): the pair u + ρ·v that occurs in most rows becomes a
temporary, repeatedly, until no pair occurs twice.  Symmetric points ±a need no special case: their
rows share the even and the odd partial sums, which the pair search finds.

Every backend emits from programs, and `transform_cost` gives the runtime cost of one 2D tile, so a
point search can weigh arithmetic against accuracy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import combinations
from math import gcd
from typing import Any

from novagen.algebra import Algorithm, Matrix, as_matrix

ZERO = -1
"""Output variable id of an all-zero row."""

KINDS = ("add", "sub", "neg", "mul", "shift")


def is_power_of_two(c: Fraction) -> bool:
    """|c| = 2^k for an integer k other than 0 (a shift in fixed point, exact in floating point)."""
    a = abs(c)
    if a == 1 or a == 0:
        return False
    n, d = a.numerator, a.denominator
    return (d == 1 and n & (n - 1) == 0) or (n == 1 and d & (d - 1) == 0)


@dataclass(frozen=True)
class Op:
    """One operation; its result is variable `n_inputs + index`.

    add: a + b, sub: a - b, neg: -a, mul and shift: c·a (shift when |c| is a power of two).
    """

    kind: str
    a: int
    b: int = ZERO
    c: Fraction = Fraction(1)


@dataclass(frozen=True)
class Program:
    """Straight-line code for y = M·x: variables 0..n_inputs-1 are the inputs, then one per op."""

    n_inputs: int
    ops: tuple[Op, ...]
    outputs: tuple[int, ...]

    def evaluate(self, xs: Sequence[Any], zero: Any = 0) -> list[Any]:
        """Run the program on any numbers that add and scale (Fractions for exact, arrays for speed)."""
        if len(xs) != self.n_inputs:
            raise ValueError(f"the program takes {self.n_inputs} inputs, got {len(xs)}")
        vals = list(xs)
        for op in self.ops:
            if op.kind == "add":
                vals.append(vals[op.a] + vals[op.b])
            elif op.kind == "sub":
                vals.append(vals[op.a] - vals[op.b])
            elif op.kind == "neg":
                vals.append(-vals[op.a])
            else:
                vals.append(vals[op.a] * _scalar_like(op.c, vals[op.a]))
        return [zero if o == ZERO else vals[o] for o in self.outputs]

    def matrix(self) -> Matrix:
        """The exact matrix the program computes (each variable tracked as a linear form)."""
        n = self.n_inputs
        basis = [tuple(Fraction(int(i == j)) for j in range(n)) for i in range(n)]
        forms = self.evaluate([_Form(b) for b in basis], zero=_Form(tuple(Fraction(0) for _ in range(n))))
        return tuple(f.coeffs for f in forms)

    def counts(self) -> dict[str, int]:
        """Operations by kind: adds (add, sub and neg), muls, shifts, and their total."""
        kinds = Counter(op.kind for op in self.ops)
        adds = kinds["add"] + kinds["sub"] + kinds["neg"]
        return {"adds": adds, "muls": kinds["mul"], "shifts": kinds["shift"],
                "total": adds + kinds["mul"] + kinds["shift"]}

    def c_lines(self, inputs: Sequence[str], outputs: Sequence[str], ctype: str,
                literal: Callable[[Fraction], str] | None = None) -> list[str]:
        """C statements: temporaries `ctype tN = ...;`, then `out = var;` for each output."""
        lit = literal or c_float
        names = list(inputs)
        lines = []
        for i, op in enumerate(self.ops):
            name = f"t{i}"
            a = names[op.a]
            if op.kind == "add":
                expr = f"{a} + {names[op.b]}"
            elif op.kind == "sub":
                expr = f"{a} - {names[op.b]}"
            elif op.kind == "neg":
                expr = f"-{a}"
            else:
                expr = f"{a} * {lit(op.c)}"
            lines.append(f"{ctype} {name} = {expr};")
            names.append(name)
        for out, o in zip(outputs, self.outputs):
            lines.append(f"{out} = {names[o] if o != ZERO else lit(Fraction(0))};")
        return lines


class _Form:
    """A linear form over the inputs, for reading back the matrix a program computes."""

    __slots__ = ("coeffs",)

    def __init__(self, coeffs: tuple[Fraction, ...]) -> None:
        self.coeffs = coeffs

    def __add__(self, other: _Form) -> _Form:
        return _Form(tuple(a + b for a, b in zip(self.coeffs, other.coeffs)))

    def __sub__(self, other: _Form) -> _Form:
        return _Form(tuple(a - b for a, b in zip(self.coeffs, other.coeffs)))

    def __neg__(self) -> _Form:
        return _Form(tuple(-a for a in self.coeffs))

    def __mul__(self, c: Fraction) -> _Form:
        return _Form(tuple(a * c for a in self.coeffs))


def _scalar_like(c: Fraction, value: Any) -> Any:
    return c if isinstance(value, (Fraction, int, _Form)) else float(c)


def c_float(c: Fraction) -> str:
    """A float literal for an exact constant (rounded once, to the nearest float32)."""
    import numpy as np

    v = float(np.float32(float(c)))
    text = repr(v)
    return f"{text}f" if ("." in text or "e" in text) else f"{text}.0f"


class _Builder:
    def __init__(self, n_inputs: int) -> None:
        self.n = n_inputs
        self.ops: list[Op] = []
        self.memo: dict[Op, int] = {}

    def emit(self, op: Op) -> int:
        if op not in self.memo:
            self.ops.append(op)
            self.memo[op] = self.n + len(self.ops) - 1
        return self.memo[op]

    def scale(self, c: Fraction, v: int) -> int:
        if c == 1:
            return v
        if c == -1:
            return self.emit(Op("neg", v))
        return self.emit(Op("shift" if is_power_of_two(c) else "mul", v, ZERO, c))


def _ratio(cu: Fraction, cv: Fraction) -> tuple[int, int]:
    """cv / cu as a reduced (numerator, denominator) pair: the same value as Fraction, far cheaper."""
    n, d = cv.numerator * cu.denominator, cv.denominator * cu.numerator
    if d < 0:
        n, d = -n, -d
    g = gcd(n, d)
    return (n // g, d // g)


def _pair_rank(item: tuple[tuple[int, int, tuple[int, int]], int]) -> tuple[Any, ...]:
    (u, v, (n, d)), count = item
    rho = Fraction(n, d)
    return (-count, abs(rho) != 1, not is_power_of_two(rho) and abs(rho) != 1, u, v, rho)


def _row_cost(coeffs: Sequence[Fraction]) -> int:
    scales = sum(abs(c) != 1 for c in coeffs)
    neg = all(c < 0 for c in coeffs) and scales == 0
    return len(coeffs) - 1 + scales + neg


def _emit_row(b: _Builder, row: dict[int, Fraction], integer: bool = False) -> int:
    """Emit sum(c·v), factoring out the constant that makes the row cheapest (integer: only a common
    integer factor, so that every intermediate of an integer row stays an integer)."""
    if not row:
        return ZERO
    terms = sorted(row.items())
    if integer:
        g = Fraction(gcd(*(int(c) for _, c in terms)))
        factors = [Fraction(1), Fraction(-1)] + ([g, -g] if g != 1 else [])
    else:
        factors = [Fraction(1), Fraction(-1)] + sorted({s * abs(c) for _, c in terms for s in (1, -1)} - {1, -1})
    best = min(factors, key=lambda f: (_row_cost([c / f for _, c in terms]) + (f != 1), abs(f) != 1))
    scaled = [(v, c / best) for v, c in terms]
    positive = [t for t in scaled if t[1] > 0]
    first = positive[0] if positive else next((t for t in scaled if abs(t[1]) != 1), scaled[0])
    rest = [t for t in scaled if t is not first]
    negate_at_end = first[1] == -1
    acc = b.scale(abs(first[1]) if negate_at_end else first[1], first[0])
    for v, c in rest:
        c = -c if negate_at_end else c
        term = b.scale(abs(c), v)
        acc = b.emit(Op("add" if c > 0 else "sub", acc, term))
    if negate_at_end:
        acc = b.scale(Fraction(-1), acc)
    return b.scale(best, acc)


def _pair_keys(row: dict[int, Fraction]) -> set[tuple[int, int, tuple[int, int]]]:
    """The two-term patterns (u, v, cv/cu) of a row, u < v."""
    return {(u, v, _ratio(cu, cv)) for (u, cu), (v, cv) in combinations(sorted(row.items()), 2)}


def _int_pair_keys(row: dict[int, Fraction]) -> set[tuple[int, int, tuple[int, int]]]:
    """The patterns (base, other, integer ratio) of an integer row: cu·base + cv·other = cu·(base + ρ·other)
    with ρ = cv/cu an integer (the pair is oriented so that it is; pairs with no integer ratio are skipped)."""
    keys = set()
    for (u, cu), (v, cv) in combinations(sorted(row.items()), 2):
        for base, other, cb, co in ((u, v, cu, cv), (v, u, cv, cu)):
            n, d = _ratio(cb, co)
            if d == 1:
                keys.add((base, other, (n, d)))
                break
    return keys


@lru_cache(maxsize=4096)
def _compile(M: Matrix, integer: bool = False) -> Program:
    n = len(M[0])
    b = _Builder(n)
    rows = [{j: c for j, c in enumerate(row) if c != 0} for row in M]
    keys_of = _int_pair_keys if integer else _pair_keys
    row_keys = [keys_of(row) for row in rows]
    counts: Counter[tuple[int, int, tuple[int, int]]] = Counter(k for keys in row_keys for k in keys)
    while True:
        shared = [item for item in counts.items() if item[1] >= 2]
        if not shared:
            break
        (u, v, nd), _ = min(shared, key=_pair_rank)
        rho = Fraction(*nd)
        sv = b.scale(abs(rho), v)
        t = b.emit(Op("add" if rho > 0 else "sub", u, sv))
        for i, row in enumerate(rows):
            if (u, v, nd) in row_keys[i]:
                cu = row.pop(u)
                del row[v]
                row[t] = row.get(t, 0) + cu
                counts.subtract(row_keys[i])
                row_keys[i] = keys_of(row)
                counts.update(row_keys[i])
    done: dict[tuple[tuple[int, Fraction], ...], int] = {}
    outputs = []
    for row in rows:
        key = tuple(sorted(row.items()))
        if key not in done:
            done[key] = _emit_row(b, row, integer)
        outputs.append(done[key])
    return Program(n, tuple(b.ops), tuple(outputs))


def compile_matrix(M: Any, integer: bool = False) -> Program:
    """Straight-line program for y = M·x (M exact: Fractions, ints or strings such as "5/6").

    integer=True (M must be an integer matrix): every constant of the program is an integer too, so
    integer inputs give integer intermediates: the form fixed-point hardware needs.
    """
    mat = as_matrix(M, "M")
    if integer and any(c.denominator != 1 for row in mat for c in row):
        raise ValueError("compile_matrix(integer=True) needs an integer matrix: scale its rows or columns first")
    return _compile(mat, integer)


def naive_counts(M: Any) -> dict[str, int]:
    """Cost of the dense matrix product: every entry multiplied, every row summed."""
    mat = as_matrix(M, "M")
    rows, cols = len(mat), len(mat[0])
    return {"adds": rows * (cols - 1), "muls": rows * cols, "shifts": 0, "total": rows * (2 * cols - 1)}


def rowwise_counts(M: Any) -> dict[str, int]:
    """Cost row by row with zeros dropped and ±1, powers of two made cheap, but nothing shared."""
    mat = as_matrix(M, "M")
    adds = muls = shifts = 0
    for row in mat:
        nz = [c for c in row if c != 0]
        adds += max(len(nz) - 1, 0) + (bool(nz) and all(c == -1 for c in nz))
        muls += sum(abs(c) != 1 and not is_power_of_two(c) for c in nz)
        shifts += sum(is_power_of_two(c) for c in nz)
    return {"adds": adds, "muls": muls, "shifts": shifts, "total": adds + muls + shifts}


@dataclass(frozen=True)
class TransformPrograms:
    """The three programs of a 1D algorithm: AT (output), G (filter), BT (input)."""

    AT: Program
    G: Program
    BT: Program


def programs(alg: Algorithm) -> TransformPrograms:
    """Programs for AT, G and BT of a 1D algorithm."""
    return TransformPrograms(_compile(alg.AT), _compile(alg.G), _compile(alg.BT))


def _scaled(counts: dict[str, int], k: int) -> dict[str, int]:
    return {key: v * k for key, v in counts.items()}


def _sum(*parts: dict[str, int]) -> dict[str, int]:
    return {key: sum(p[key] for p in parts) for key in ("adds", "muls", "shifts", "total")}


@lru_cache(maxsize=4096)
def _transform_cost(alg: Algorithm) -> dict[str, Any]:
    p = programs(alg)
    a, m = alg.alpha, alg.m
    inp = _scaled(p.BT.counts(), 2 * a)
    out = _scaled(p.AT.counts(), a + m)
    naive = _sum(_scaled(naive_counts(alg.BT), 2 * a), _scaled(naive_counts(alg.AT), a + m))
    return {**_sum(inp, out), "input": inp, "output": out, "naive": naive,
            "per_output": _sum(inp, out)["total"] / (m * m)}


def transform_cost(alg: Algorithm) -> dict[str, Any]:
    """Operations of the runtime transforms of one 2D tile: the input transform (BT on α columns and
    α rows) plus the output transform (AT on α columns, then m rows).

    Keys: adds, muls, shifts, total; `input`, `output` and `naive` (dense products) as dicts of the same
    keys; per_output = total / m².  Cached per algorithm.
    """
    cost = _transform_cost(alg)
    return {k: dict(v) if isinstance(v, dict) else v for k, v in cost.items()}


def program_report(alg: Algorithm) -> dict[str, dict[str, dict[str, int]]]:
    """Per matrix (AT, G, BT): the program's counts, the row-by-row counts and the dense counts."""
    p = programs(alg)
    return {name: {"shared": getattr(p, name).counts(), "rowwise": rowwise_counts(M), "naive": naive_counts(M)}
            for name, M in (("AT", alg.AT), ("G", alg.G), ("BT", alg.BT))}
