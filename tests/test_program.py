from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import novagen
from novagen.program import (
    compile_matrix,
    is_power_of_two,
    naive_counts,
    program_report,
    programs,
    rowwise_counts,
    transform_cost,
)

NAMES = [f"F({m},3)/{fam}" for m in (2, 4, 6, 8) for fam in ("integer", "classic", "nova") if m != 2 or fam != "nova"]


@pytest.mark.parametrize("name", NAMES + ["F(4,5)"])
def test_programs_compute_the_matrices_exactly(name):
    alg = novagen.algorithm(name) if "/" in name else novagen.algorithm(name, points="classic")
    p = programs(alg)
    assert p.AT.matrix() == alg.AT and p.G.matrix() == alg.G and p.BT.matrix() == alg.BT
    x = [Fraction(i * i - 3, i + 2) for i in range(alg.alpha)]
    want = [sum(c * xi for c, xi in zip(row, x)) for row in alg.BT]
    assert p.BT.evaluate(x) == want


def test_counts_f63_nova_shared_below_naive():
    alg = novagen.algorithm("F(6,3)/nova")
    rep = program_report(alg)
    assert {k: v["shared"]["total"] for k, v in rep.items()} == {"AT": 30, "G": 18, "BT": 44}
    for v in rep.values():
        assert v["shared"]["total"] <= v["rowwise"]["total"] < v["naive"]["total"]
    cost = transform_cost(alg)
    assert cost["total"] == 2 * 8 * 44 + (8 + 6) * 30 == 1124
    assert cost["naive"]["total"] == 2 * 8 * 120 + 14 * 90
    assert cost["total"] == cost["adds"] + cost["muls"] + cost["shifts"]
    assert cost["input"]["total"] + cost["output"]["total"] == cost["total"]


def test_transform_cost_known_values_and_cache():
    got = {m: transform_cost(novagen.algorithm(f"F({m},3)/nova"))["total"] for m in (4, 6, 8)}
    assert got == {4: 472, 6: 1124, 8: 2650}
    alg = novagen.algorithm("F(8,3)/nova")
    first = transform_cost(alg)
    first["total"] = -1
    assert transform_cost(alg)["total"] == 2650


def test_integer_points_become_shifts_and_adds():
    p = compile_matrix([[1, 2, 0, -1], [0, 4, 1, 1], [Fraction(1, 2), 0, 0, 0]])
    c = p.counts()
    assert c["muls"] == 0 and c["shifts"] >= 2
    assert is_power_of_two(Fraction(1, 4)) and is_power_of_two(Fraction(-8)) and not is_power_of_two(Fraction(3))


def test_identity_and_zero_rows_cost_nothing():
    p = compile_matrix([[1, 0], [0, 0], [0, 1]])
    assert p.counts()["total"] == 0
    assert p.evaluate([Fraction(3), Fraction(5)]) == [3, 0, 5]


def test_c_lines_name_the_temporaries():
    p = programs(novagen.algorithm("F(2,3)/classic")).BT
    lines = p.c_lines([f"d{i}" for i in range(4)], [f"v{i}" for i in range(4)], "float")
    assert len([ln for ln in lines if ln.startswith("float t")]) == len(p.ops)
    assert all(ln.endswith(";") for ln in lines)


fractions = st.fractions(min_value=-4, max_value=4, max_denominator=6)
small = st.sampled_from([Fraction(0), Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(1, 2)]) | fractions


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda cols: st.lists(st.lists(small, min_size=cols, max_size=cols),
                                                      min_size=1, max_size=7)))
def test_random_matrices_compile_exactly(rows):
    p = compile_matrix(rows)
    assert p.matrix() == tuple(tuple(Fraction(c) for c in r) for r in rows)
    assert p.counts()["total"] <= rowwise_counts(rows)["total"] + len(rows)
    assert naive_counts(rows)["muls"] == len(rows) * len(rows[0])


@settings(max_examples=25, deadline=None)
@given(st.sets(st.fractions(min_value=-3, max_value=3, max_denominator=5), min_size=3, max_size=5))
def test_random_point_sets(points):
    alg = novagen.algorithm(f"F({len(points) - 1},3)", points=sorted(points))
    p = programs(alg)
    assert p.AT.matrix() == alg.AT and p.G.matrix() == alg.G and p.BT.matrix() == alg.BT


def test_show_prints_program_counts(capsys):
    from novagen.cli import run

    assert run(["show", "F(6,3)/nova"]) == 0
    out = capsys.readouterr().out
    assert "transform programs" in out and "= 44" in out and "= 1124" in out


def test_integer_programs_keep_every_constant_integer():
    """Integer-scaled transforms (rows of BT, columns of AT times their denominators' lcm) compile to
    programs whose constants are integers and which compute exactly the matrix; fractional matrices are
    refused."""
    from math import lcm

    from novagen.program import compile_matrix

    for name in ("F(4,3)/classic", "F(4,3)/nova", "F(6,3)/classic", "F(6,3)/nova"):
        alg = novagen.algorithm(name)
        B = [[c * lcm(*(x.denominator for x in row)) for c in row] for row in alg.BT]
        cols = list(zip(*alg.AT))
        e = [lcm(*(c.denominator for c in col)) for col in cols]
        A = [[c * s for c, s in zip(row, e)] for row in alg.AT]
        for M in (B, A):
            prog = compile_matrix(M, integer=True)
            assert prog.matrix() == tuple(tuple(Fraction(c) for c in row) for row in M)
            assert all(op.c.denominator == 1 for op in prog.ops), name
    with pytest.raises(ValueError):
        compile_matrix(novagen.algorithm("F(4,3)/nova").BT, integer=True)
