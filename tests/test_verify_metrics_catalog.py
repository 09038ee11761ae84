import json
import shutil
from fractions import Fraction

import pytest

from novagen import Algorithm, algorithm, build, catalog_entries, metrics, verify
from novagen import catalog as catalog_mod
from novagen.algebra import Nested
from novagen.errors import CatalogError, PointsError, VerificationFailed

# --- metrics: the reference table of ARCHITECTURE.md ---------------------------------------------


@pytest.mark.parametrize("name,kappa,unit", [
    ("F(4,3)/integer", 42.5, 0.1),
    ("F(4,3)/nova", 14.5, 0.1),
    ("F(6,3)/integer", 2074.5, 0.1),
    ("F(6,3)/nova", 76.6, 0.1),
    ("F(6,3)/classic", 936.8, 0.1),
    ("F(8,3)/integer", 196_900, 100),
    ("F(8,3)/nova", 474.1, 0.1),
])
def test_vandermonde_cond_reference_table(name, kappa, unit):
    """ARCHITECTURE.md's table, each value to the digits it is printed with."""
    m = metrics(algorithm(name))
    assert m["vandermonde_cond"] == pytest.approx(kappa, abs=unit / 2)
    assert m["vandermonde_cond_2d"] == pytest.approx(m["vandermonde_cond"] ** 2)


def test_paper_improvement_factor_f83():
    ratio = metrics(algorithm("F(8,3)/integer"))["vandermonde_cond"] / metrics(algorithm("F(8,3)/nova"))[
        "vandermonde_cond"]
    assert ratio == pytest.approx(415, rel=0.01)
    assert ratio**2 == pytest.approx(172_484, rel=0.01)


def test_amplification_ranks_classic_f63_ahead_of_paper_set():
    # kappa(V) says the paper's set is 12x better; the transform-based amplification says the
    # opposite, as measured fp16 error does (ARCHITECTURE.md: 5.3e-2 vs 7.4e-3).
    classic, nova = metrics(algorithm("F(6,3)/classic")), metrics(algorithm("F(6,3)/nova"))
    assert nova["vandermonde_cond"] < classic["vandermonde_cond"] / 12
    assert classic["amplification_2d"] < nova["amplification_2d"]


def test_metric_values_f23():
    m = metrics(algorithm("F(2,3)/integer"))
    assert (m["nnz_AT"], m["nnz_G"], m["nnz_BT"]) == (6, 8, 8)
    assert m["max_entry"] == 1.0
    assert m["cond_AT"] == pytest.approx(1.0)
    # |AT col|^2 |G row|^2 |BT row|^2 summed: 1*1*2 + 2*(3/4)*2 + 2*(3/4)*2 + 1*1*2
    assert m["amplification"] == pytest.approx(10.0)


def test_nested_metrics_are_products():
    a, b = algorithm("F(4,3)/nova"), algorithm("F(2,3)/classic")
    ma, mb, mn = metrics(a), metrics(b), metrics(a.nest(b))
    for key in ("vandermonde_cond", "cond_AT", "cond_G", "cond_BT", "amplification", "nnz_BT"):
        assert mn[key] == pytest.approx(ma[key] * mb[key])
    assert metrics(a.nest(a))["amplification"] == pytest.approx(ma["amplification_2d"])


def test_metrics_without_points():
    alg = algorithm("F(4,3)/nova")
    bare = Algorithm.from_matrices(alg.AT, alg.G, alg.BT)
    m = metrics(bare)
    assert m["vandermonde_cond"] is None and m["cond_G"] == pytest.approx(metrics(alg)["cond_G"])


# --- verification --------------------------------------------------------------------------


def test_verify_certificate():
    cert = verify(algorithm("F(4,3)/nova"))
    assert cert.verified
    assert cert.proven == ("random-rational x8", "1d-symbolic F(4,3)", "2d-symbolic F(4x4,3x3)")
    assert cert.hash == algorithm("F(4,3)/nova").content_hash
    assert cert.to_dict()["algorithm"]["AT"][1][1] == "5/6"


def test_verify_large_alpha_skips_2d_by_default():
    cert = verify(algorithm("F(8,3)/nova"))
    assert cert.verified and not any("2d" in p for p in cert.proven)


def test_verify_nested():
    cert = verify(build("F(4x2,3x3)", "classic"))
    assert cert.verified
    assert "2d-symbolic F(4x2,3x3)" in cert.proven
    cert3 = verify(build("F(2x2x2,3x3x3)", "classic"))
    assert cert3.verified and "nesting of exact axes (Kronecker)" in cert3.proven


def _perturbed(alg: Algorithm, which: str, i: int, j: int) -> Algorithm:
    mats = {"AT": [list(r) for r in alg.AT], "G": [list(r) for r in alg.G], "BT": [list(r) for r in alg.BT]}
    mats[which][i][j] += Fraction(1, 3)
    return Algorithm.from_matrices(mats["AT"], mats["G"], mats["BT"])


@pytest.mark.parametrize("name", ["F(2,3)/integer", "F(2,3)/classic", "F(4,3)/nova"])
def test_verification_rejects_every_single_entry_mutation(name):
    alg = algorithm(name)
    count = 0
    for which in ("AT", "G", "BT"):
        mat = getattr(alg, which)
        for i in range(len(mat)):
            for j in range(len(mat[0])):
                cert = verify(_perturbed(alg, which, i, j), strict=False, symbolic_2d=False)
                assert not cert.verified, f"{which}[{i}][{j}] mutation passed"
                assert cert.counterexample
                count += 1
    assert count == alg.m * alg.alpha + alg.alpha * alg.r + alg.alpha**2


def test_symbolic_proof_alone_rejects_mutations():
    # trials=0 skips the random check, so the symbolic expansion itself must catch the error
    alg = algorithm("F(2,3)/classic")
    for which, i, j in (("AT", 0, 0), ("G", 3, 2), ("BT", 1, 3)):
        cert = verify(_perturbed(alg, which, i, j), trials=0, strict=False)
        assert not cert.verified and "correlation" in cert.counterexample


def test_verify_strict_raises():
    bad = _perturbed(algorithm("F(2,3)/classic"), "G", 1, 1)
    with pytest.raises(VerificationFailed, match="not exact") as info:
        verify(bad)
    assert info.value.certificate.verified is False


# --- catalog -------------------------------------------------------------------------------


ENTRIES = catalog_entries()


def test_catalog_has_reference_entries():
    names = {e.name for e in ENTRIES}
    for m in (4, 6, 8):
        for fam in ("integer", "classic", "nova"):
            assert f"F({m},3)/{fam}" in names


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_certificate_rechecks(entry):
    """Each shipped certificate matches a fresh construction (balanced where its campaign says so, scaled as
    it learned for a fine-tuned entry) and re-proves."""
    from novagen.balancing import balance, scale_taps

    fresh = Algorithm.from_points(entry.algorithm.spec, list(entry.algorithm.points))
    if entry.provenance.get("settings", {}).get("balanced"):
        fresh = balance(fresh)
    if entry.provenance.get("source") == "finetune":  # the power-of-two row scales it learned
        fresh = scale_taps(fresh, entry.provenance["balancing"]["log2_g"], entry.provenance["balancing"]["log2_b"])
    recorded = entry.certificate["algorithm"]
    assert fresh.to_dict()["AT"] == recorded["AT"]
    assert fresh.to_dict()["G"] == recorded["G"]
    assert fresh.to_dict()["BT"] == recorded["BT"]
    assert fresh.content_hash == entry.certificate["hash"]
    cert = verify(fresh)
    assert cert.verified and cert.proven == tuple(entry.certificate["proven"])


def test_lookup_aliases_and_nested():
    assert algorithm("F(6, 3)/NOVA") == algorithm("F(6,3)/nova")
    assert algorithm("F(6,3)/standard") == algorithm("F(6,3)/integer")
    nested = algorithm("F(6x4,3x3)/nova")
    assert isinstance(nested, Nested) and nested.axes == (algorithm("F(6,3)/nova"), algorithm("F(4,3)/nova"))
    assert algorithm("F(6,3)") == algorithm("F(6,3)/classic")  # a spec without points is classic


def test_lookup_errors():
    with pytest.raises(CatalogError, match="entries for F\\(6,3\\)"):
        algorithm("F(6,3)/golden")
    with pytest.raises(CatalogError, match="not in the catalog"):
        algorithm("F(9,3)/nova")
    with pytest.raises(PointsError, match="catalog name"):
        algorithm("F(6,3)/nova", points="0,1,-1,2,-2,3,-3")


def test_damaged_catalog_file_is_reported(tmp_path, monkeypatch):
    src = catalog_mod.data_dir("verify")
    shutil.copy(src / "f4_3-nova.json", tmp_path / "f4_3-nova.json")
    doc = json.loads((tmp_path / "f4_3-nova.json").read_text())
    doc["certificate"]["algorithm"]["G"][1][0] = "1/2"
    (tmp_path / "f4_3-nova.json").write_text(json.dumps(doc))
    monkeypatch.setattr(catalog_mod, "data_dir", lambda kind: tmp_path)
    catalog_mod._entries.cache_clear()
    try:
        with pytest.raises(CatalogError, match="does not match its certificate"):
            catalog_entries()
    finally:
        monkeypatch.undo()
        catalog_mod._entries.cache_clear()


def test_write_entry_round_trip(tmp_path, monkeypatch):
    alg = Algorithm.from_points("F(3,3)", "0,1,-1,1/2")
    path = catalog_mod.write_entry(alg, "F(3,3)/mine", {"source": "test"}, tmp_path)
    assert path.name == "f3_3-mine.json"
    monkeypatch.setattr(catalog_mod, "data_dir", lambda kind: tmp_path)
    catalog_mod._entries.cache_clear()
    try:
        assert algorithm("F(3,3)/mine") == alg
    finally:
        monkeypatch.undo()
        catalog_mod._entries.cache_clear()
