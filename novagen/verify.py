"""Proof that an algorithm computes the correlation it claims.

For symbolic g and d, AT·[(G·g) ⊙ (BT·d)] is expanded as a polynomial over the rationals (sympy's
sparse polynomial ring over QQ) and compared with the direct correlation sum_k g_k d_{i+k}, output by
output: equal polynomials mean equal for every input.  In 2D the same is done for the nested
algorithm, AT·[(G·g·Gᵀ) ⊙ (BT·d·B)]·A against the 2D correlation.  A quick exact check with random
rationals runs first so a wrong algorithm fails in milliseconds with a concrete counterexample.

The result is a `Certificate`: the exact matrices, their content hash, what was proven, how long it
took and with which versions.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import product
from typing import Any

import sympy
from sympy import QQ
from sympy.polys.rings import ring

from novagen.algebra import Algorithm, AnyAlgorithm, Matrix, Nested
from novagen.errors import InputError, VerificationFailed
from novagen.limits import seed as limits_seed
from novagen.limits import whole
from novagen.version import __version__

SYMBOLIC_2D_MAX_ALPHA = 8
"""2D symbolic proofs run for alpha <= 8 by default (alpha = 8 takes a few seconds)."""


@dataclass(frozen=True)
class Certificate:
    """What the verifier established about one algorithm."""

    algorithm: dict[str, Any]
    hash: str
    verified: bool
    proven: tuple[str, ...]
    seconds: float
    counterexample: str | None = None
    tools: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "hash": self.hash,
            "verified": self.verified,
            "proven": list(self.proven),
            "seconds": round(self.seconds, 4),
            "counterexample": self.counterexample,
            "tools": self.tools,
        }


def _matmul(A: Matrix | list, B: Matrix | list) -> list[list[Any]]:
    return [[sum((a * b for a, b in zip(row, col)), start=0 * row[0]) for col in zip(*B)] for row in A]


def _random_check(algs: tuple[Algorithm, ...], trials: int, seed: int) -> str | None:
    """Exact evaluation on random rational inputs; a description of the first mismatch, if any."""
    rng = random.Random(seed)

    def rand() -> Fraction:
        return Fraction(rng.randint(-9, 9), rng.randint(1, 9))

    for _ in range(trials):
        if len(algs) == 1:
            (a,) = algs
            g = [rand() for _ in range(a.r)]
            d = [rand() for _ in range(a.alpha)]
            U = [sum(gk * x for gk, x in zip(g, row)) for row in a.G]
            V = [sum(dl * x for dl, x in zip(d, row)) for row in a.BT]
            y = [sum(x * u * v for x, u, v in zip(row, U, V)) for row in a.AT]
            for i in range(a.m):
                want = sum(g[k] * d[i + k] for k in range(a.r))
                if y[i] != want:
                    return (f"y[{i}] = {y[i]} but the correlation is {want} for g = "
                            f"[{', '.join(map(str, g))}], d = [{', '.join(map(str, d))}]")
        else:
            a, b = algs
            g = [[rand() for _ in range(b.r)] for _ in range(a.r)]
            d = [[rand() for _ in range(b.alpha)] for _ in range(a.alpha)]
            U = _matmul(_matmul(a.G, g), list(zip(*b.G)))
            V = _matmul(_matmul(a.BT, d), list(zip(*b.BT)))
            M = [[u * v for u, v in zip(ur, vr)] for ur, vr in zip(U, V)]
            Y = _matmul(_matmul(a.AT, M), list(zip(*b.AT)))
            for i, j in product(range(a.m), range(b.m)):
                want = sum(g[k][l] * d[i + k][j + l] for k in range(a.r) for l in range(b.r))
                if Y[i][j] != want:
                    return f"y[{i}][{j}] = {Y[i][j]} but the 2D correlation is {want} on random input"
    return None


def _q(x: Fraction) -> Any:
    return QQ(x.numerator, x.denominator)


def _lin(row: tuple[Fraction, ...], syms: list[Any], zero: Any) -> Any:
    return sum((s * _q(c) for c, s in zip(row, syms) if c), start=zero)


def _symbolic_1d(a: Algorithm) -> str | None:
    R, *gens = ring([f"g{k}" for k in range(a.r)] + [f"d{i}" for i in range(a.alpha)], QQ)
    g, d = gens[: a.r], gens[a.r:]
    U = [_lin(row, g, R.zero) for row in a.G]
    V = [_lin(row, d, R.zero) for row in a.BT]
    M = [u * v for u, v in zip(U, V)]
    for i, row in enumerate(a.AT):
        y = _lin(row, M, R.zero)
        want = sum((g[k] * d[i + k] for k in range(a.r)), start=R.zero)
        if y != want:
            return f"y[{i}] - correlation = {_short(y - want)}"
    return None


def _symbolic_2d(a: Algorithm, b: Algorithm) -> str | None:
    names = [f"g{k}_{l}" for k in range(a.r) for l in range(b.r)]
    names += [f"d{i}_{j}" for i in range(a.alpha) for j in range(b.alpha)]
    R, *gens = ring(names, QQ)
    g = [gens[k * b.r:(k + 1) * b.r] for k in range(a.r)]
    off = a.r * b.r
    d = [gens[off + i * b.alpha: off + (i + 1) * b.alpha] for i in range(a.alpha)]

    def two_sided(left: Matrix, X: list[list[Any]], right: Matrix) -> list[list[Any]]:
        rows = [[_lin(tuple(left[p][k] for k in range(len(X))), [X[k][c] for k in range(len(X))], R.zero)
                 for c in range(len(X[0]))] for p in range(len(left))]
        return [[_lin(right[q], row, R.zero) for q in range(len(right))] for row in rows]

    U = two_sided(a.G, g, b.G)
    V = two_sided(a.BT, d, b.BT)
    M = [[u * v for u, v in zip(ur, vr)] for ur, vr in zip(U, V)]
    Y = two_sided(a.AT, M, b.AT)
    for i, j in product(range(a.m), range(b.m)):
        want = sum((g[k][l] * d[i + k][j + l] for k in range(a.r) for l in range(b.r)), start=R.zero)
        if Y[i][j] != want:
            return f"y[{i}][{j}] - 2D correlation = {_short(Y[i][j] - want)}"
    return None


def _short(poly: Any, limit: int = 160) -> str:
    text = str(poly.as_expr())
    return text if len(text) <= limit else text[:limit] + " ..."


def verify(alg: AnyAlgorithm, *, symbolic_2d: bool | None = None, trials: int = 8, seed: int = 0,
           strict: bool = True) -> Certificate:
    """Prove `alg` exact; returns a Certificate, or raises VerificationFailed (strict) when it is not.

    `symbolic_2d` None proves the 2D nesting when every axis has alpha <= 8.  With strict=False a
    failed proof returns a certificate with verified=False and the counterexample.
    """
    if not isinstance(alg, (Algorithm, Nested)):
        raise InputError(f"verify takes an algorithm (novagen.verify also takes a catalog name such as "
                         f"'F(6,3)/nova'), not {type(alg).__name__}")
    trials = whole("trials", trials, 0, 10_000)
    seed = limits_seed(seed)
    start = time.perf_counter()
    axes = alg.axes if isinstance(alg, Nested) else (alg,)
    pairs = [(axes[0], axes[1])] if len(axes) == 2 else [(axes[0], axes[0])] if len(axes) == 1 else []
    if symbolic_2d is None:
        symbolic_2d = bool(pairs) and all(a.alpha <= SYMBOLIC_2D_MAX_ALPHA for a in axes)
    proven: list[str] = []
    failure: str | None = None
    for a in dict.fromkeys(axes):
        where = f"{a.spec} axis: " if len(axes) > 1 else ""
        failure = _random_check((a,), trials, seed)
        failure = failure or _symbolic_1d(a)
        if failure:
            failure = where + failure
            break
        proven.append(f"1d-symbolic {a.spec}")
    if not failure:
        proven.insert(0, f"random-rational x{trials}")
        if symbolic_2d and pairs:
            a, b = pairs[0]
            failure = _random_check((a, b), 2, seed) or _symbolic_2d(a, b)
            if not failure:
                proven.append(f"2d-symbolic F({a.m}x{b.m},{a.r}x{b.r})")
        if not failure and (len(axes) > 2 or (len(axes) == 2 and not symbolic_2d)):
            proven.append("nesting of exact axes (Kronecker)")
    cert = Certificate(
        algorithm=alg.to_dict(),
        hash=alg.content_hash,
        verified=failure is None,
        proven=tuple(proven),
        seconds=time.perf_counter() - start,
        counterexample=failure,
        tools={"novagen": __version__, "sympy": sympy.__version__},
    )
    if failure and strict:
        raise VerificationFailed(f"{alg.label} is not exact: {failure}", cert)
    return cert
