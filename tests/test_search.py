import itertools
import json
from fractions import Fraction

import numpy as np
import pytest

from novagen import algorithm, metrics
from novagen import pointsearch as S
from novagen.algebra import parse_spec
from novagen.cli import run
from novagen.errors import InputError, SpecError
from novagen.verify import Certificate


def kappa(alg):
    return metrics(alg)["vandermonde_cond"]


def test_f43_reaches_the_paper_value():
    res = S.search("F(4,3)", "vandermonde", max_denominator=6, seed=0)
    assert kappa(res.best) <= 14.6
    assert res.best == algorithm("F(4,3)/nova")  # the paper's set is the best symmetric one at denominators <= 6
    assert all(c.verified for c in res.candidates)
    sets = [frozenset(c.algorithm.points) for c in res.candidates]
    assert len(sets) == len(set(sets)), "candidates must be distinct point sets"
    scores = [c.score for c in res.candidates]
    assert scores == sorted(scores)


def test_f63_reaches_the_paper_value():
    res = S.search("F(6,3)", "vandermonde", max_denominator=6, seed=1)
    assert kappa(res.best) <= 76.7


def test_f83_bounds_at_denominator_12():
    """Beats the paper's 474.1 (its best at denominators <= 6), below 426 at denominators <= 12."""
    res = S.search("F(8,3)", "vandermonde", max_denominator=12, seed=0)
    assert kappa(res.best) < 426
    assert np.exp(res.continuous[0][0]) == pytest.approx(417.918, rel=1e-4)
    assert max(p.denominator for p in res.best.finite_points) <= 12


@pytest.mark.slow
def test_f83_bound_at_denominator_16():
    res = S.search("F(8,3)", "vandermonde", max_denominator=16, seed=0)
    assert kappa(res.best) < 420


@pytest.mark.slow
def test_lattice_phase_finds_the_global_best_at_denominator_12():
    """Brute force over every symmetric F(8,3) set with denominators <= 12 and |p| <= 1.5."""
    mags = np.array([float(v) for v in S.lattice(12, 1.5, positive=True)])
    combos = np.array(list(itertools.combinations(mags, 4)))
    best = np.inf
    for chunk in np.array_split(combos, 40):
        pts = np.concatenate([np.zeros((len(chunk), 1)), chunk, -chunk], axis=1)
        s = np.linalg.svd(pts[:, :, None] ** np.arange(9), compute_uv=False)
        best = min(best, float((s[:, 0] / s[:, -1]).min()))
    res = S.search("F(8,3)", "vandermonde", max_denominator=12, seed=3)
    assert kappa(res.best) == pytest.approx(best, rel=1e-12)


def test_deterministic_by_seed_and_workers():
    kw = dict(max_denominator=8, restarts=2, max_evaluations=1500, top=3)
    a = S.search("F(6,3)", "vandermonde", seed=5, **kw)
    b = S.search("F(6,3)", "vandermonde", seed=5, **kw)
    assert [c.algorithm for c in a.candidates] == [c.algorithm for c in b.candidates]
    assert a.evaluations == b.evaluations and a.continuous == b.continuous
    c = S.search("F(6,3)", "vandermonde", seed=5, workers=2, **kw)
    assert c.continuous == a.continuous and c.best == a.best


def test_dyadic_and_nonsymmetric_constraints():
    res = S.search("F(4,3)", "vandermonde", max_denominator=8, dyadic=True, seed=0, top=5)
    for c in res.candidates:
        assert all(p.denominator in (1, 2, 4, 8) for p in c.algorithm.finite_points)
    free = S.search("F(3,3)", "vandermonde", max_denominator=4, symmetric=False, seed=0, max_evaluations=3000)
    assert len(free.best.finite_points) == 4 and len(set(free.best.finite_points)) == 4


def test_transforms_objective_prefers_reciprocal_pairs_for_f63():
    # ARCHITECTURE.md: the amplification optimum puts points in ± reciprocal pairs; the classic set is optimal.
    res = S.search("F(6,3)", "transforms", max_denominator=4, seed=0)
    classic = metrics(algorithm("F(6,3)/classic"))["amplification_2d"]
    assert res.candidates[0].values["transforms"] == pytest.approx(classic, rel=1e-9)
    assert set(res.best.finite_points) == set(algorithm("F(6,3)/classic").finite_points)


def test_weighted_objective():
    w = S.parse_objective("transforms + 0.5*vandermonde")
    assert [(wt, o.name) for wt, o in w.terms] == [(1.0, "transforms"), (0.5, "vandermonde")]
    ps = S.Space(parse_spec("F(4,3)"), True).point_set((Fraction(5, 6), Fraction(7, 6)))
    v = w.values(ps)
    assert w.score(ps) == pytest.approx(np.log(v["transforms"]) + 0.5 * np.log(v["vandermonde"]))


def test_verification_failures_are_dropped_and_counted(monkeypatch):
    from novagen.pointsearch import optimizer

    real = optimizer.verify
    calls = []

    def flaky(alg, **kw):
        calls.append(alg)
        cert = real(alg, **kw)
        if len(calls) == 1:  # the first (best) candidate "fails"
            return Certificate(cert.algorithm, cert.hash, False, (), 0.0, "injected failure")
        return cert

    monkeypatch.setattr(optimizer, "verify", flaky)
    res = S.search("F(4,3)", "vandermonde", max_denominator=6, seed=0, top=3)
    assert res.dropped == 1
    assert calls[0] not in [c.algorithm for c in res.candidates]
    assert len(res.candidates) == 3


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(spec="F(8,3)", max_denominator=1), "raise --max-denominator"),
    (dict(spec="F(8,3)", objective="speed"), "unknown objective 'speed'"),
    (dict(spec="F(8,3)", budget_seconds=0), "--budget-seconds must be positive"),
    (dict(spec="F(8,3)", max_evaluations=0), "--max-evaluations must be at least 1"),
    (dict(spec="F(8,3)", objective="2x*vandermonde"), "weight must be a number"),
])
def test_bad_input_fails_fast(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        S.search(**kwargs)


def test_nd_spec_is_rejected():
    with pytest.raises(SpecError, match="one axis"):
        S.search("F(4x4,3x3)")


def test_cli_json_contract(capsys):
    code = run(["search", "F(4,3)", "--max-denominator", "6", "--seed", "1", "--top", "3", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    for key in ("spec", "objective", "seed", "seconds", "best", "candidates", "evaluations",
                "dropped_by_verification"):
        assert key in doc
    assert doc["best"]["verified"] is True and doc["best"]["points"] == ["0", "5/6", "-5/6", "7/6", "-7/6", "inf"]
    assert len(doc["candidates"]) == 3 and doc["candidates"][0] == doc["best"]
    assert doc["best"]["metrics"]["vandermonde_cond"] == pytest.approx(14.5456, abs=1e-3)


def test_cli_bad_input_exit_2(capsys):
    assert run(["search", "F(8,3)", "--max-denominator", "1"]) == 2
    assert "raise --max-denominator" in capsys.readouterr().err
    assert run(["search", "F(8,3)", "--objective", "speed"]) == 2
    assert run(["search"]) == 2


@pytest.mark.parametrize("name", ["f4_3-kappa", "f4_3-best"])
def test_shipped_campaign_reproduces_its_catalog_entry(capsys, name):
    code = run(["search", "--campaign", f"search/{name}.toml", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["campaign"]["reproduces_catalog"] is True
    entry = name.replace("f4_3-", "F(4,3)/")
    assert algorithm(entry).content_hash == doc["best"]["hash"]


FINETUNE = ('name = "F(6,3)/digits-x"\nspec = "F(6,3)"\nkind = "finetune"\nnetwork = "digits"\n'
            'start = "F(6,3)/best"\nprecision = "int8-tap"\n')


def test_finetune_campaigns_are_checked(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text(FINETUNE.replace('"finetune"', '"anneal"'))
    with pytest.raises(InputError, match="kind 'anneal' is not one of search, finetune"):
        S.load_campaign(bad)
    bad.write_text(FINETUNE.replace('network = "digits"\n', ""))
    with pytest.raises(InputError, match="lacks 'network'"):
        S.load_campaign(bad)
    bad.write_text(FINETUNE.replace('"F(6,3)/best"', '"F(4,3)/best"'))
    with pytest.raises(InputError, match="start F\\(4,3\\)/best is not an F\\(6,3\\) algorithm"):
        S.load_campaign(bad)
    bad.write_text(FINETUNE + 'epochs = "two"\n')
    with pytest.raises(InputError, match="epochs = 'two' must be a whole number >= 0"):
        S.load_campaign(bad)
    bad.write_text(FINETUNE + "restarts = 4\n")  # a search setting
    with pytest.raises(InputError, match="unknown keys restarts for a finetune campaign"):
        S.load_campaign(bad)
    for extra, match in (('schedule = "step"', "schedule = 'step' is not one of constant, cosine"),
                         ("lr = 2", "lr = 2 must be a number between 0 and 1"),
                         ("threads = 0", "threads = 0 must be a whole number >= 1")):
        bad.write_text(FINETUNE + extra + "\n")
        with pytest.raises(InputError, match=match):
            S.load_campaign(bad)
    bad.write_text(FINETUNE + 'lr_points = 1e-3\nschedule = "cosine"\nthreads = 1\n')
    assert S.load_campaign(bad).settings["schedule"] == "cosine"
    bad.write_text(FINETUNE)
    camp = S.load_campaign(bad)
    assert camp.kind == "finetune" and camp.settings == {"network": "digits", "start": "F(6,3)/best",
                                                         "precision": "int8-tap"}


def test_shipped_fine_tuned_entries_match_their_campaigns():
    """Each fine-tuning campaign shipped in search/ has its entry in the catalog, written by that campaign
    with its settings, and the entry is the starting algorithm's spec with new points."""
    from novagen.catalog import catalog_entries

    camps = {c.name: c for c in S.shipped_campaigns() if c.kind == "finetune"}
    assert set(camps) >= {"F(4,3)/digits-int8", "F(6,3)/digits-int8", "F(8,3)/digits-fp16", "F(6,3)/shapes-int8"}
    entries = {e.name: e for e in catalog_entries()}
    for name, camp in camps.items():
        prov = entries[name].provenance
        assert prov["source"] == "finetune" and prov["campaign"] == f"search/{camp.path.name}"
        assert prov["settings"] == camp.settings and prov["machine"]["cpu"]
        assert prov["top1"]["finetuned"] > 0.9
        start = algorithm(camp.settings["start"])
        assert entries[name].algorithm.spec == start.spec and entries[name].algorithm.points != start.points
    # training differs with the thread count: the entries written since it is recorded say theirs
    assert entries["F(6,3)/shapes-int8"].provenance["machine"]["threads"] >= 1


def test_campaign_errors(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text('name = "F(4,3)/x"\nspec = "F(6,3)"\n')
    with pytest.raises(InputError, match="does not match"):
        S.load_campaign(bad)
    bad.write_text('name = "F(4,3)/x"\nspec = "F(4,3)"\nspeed = 3\n')
    with pytest.raises(InputError, match="unknown keys speed"):
        S.load_campaign(bad)
    with pytest.raises(InputError, match="does not exist"):
        S.load_campaign(tmp_path / "missing.toml")


# --- measured-error and cost objectives, Pareto mode ----------------------------------------------


def _point_set(alg):
    pts = alg.finite_points
    return S.PointSet(alg.m, alg.r, np.array([float(p) for p in pts]), len(pts) < alg.alpha, tuple(pts))


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_measured_objective_is_the_accuracy_lab_number(precision):
    """The search's error objective is novagen.accuracy's layer error of the balanced algorithm (up to
    the order of fp32 operations: the search runs fp32 stages through BLAS)."""
    from novagen.accuracy import layer_error

    alg = algorithm("F(4,3)/classic")
    x, w, _ = S.error_data(4, 3)
    lab = layer_error(alg, precision, x=x, w=w, balanced=True).rel_l2
    assert S.measured_error(_point_set(alg), precision) == pytest.approx(lab, rel=2e-2)
    float_only = S.PointSet(4, 3, _point_set(alg).points, True)  # the continuous phase's view
    assert S.measured_error(float_only, precision) == S.measured_error(_point_set(alg), precision)


def test_overflow_makes_the_measured_error_infinite():
    wide = S.PointSet(8, 3, np.array([0.0, 40, -40, 80, -80, 120, -120, 160, -160]), True)
    assert S.measured_error(wide, "fp16") == np.inf
    assert S.parse_objective("fp16").score(wide) == S.PENALTY


def test_fp16_search_beats_classic_and_paper_points_for_f43():
    res = S.search("F(4,3)", "fp16", max_denominator=6, seed=0, max_evaluations=1000, balanced=True)
    best = res.candidates[0].values["fp16"]
    classic = S.measured_error(_point_set(algorithm("F(4,3)/classic")), "fp16")
    nova = S.measured_error(_point_set(algorithm("F(4,3)/nova")), "fp16")
    assert best < 0.8 * classic and best < 0.5 * nova
    assert S.measured_error(_point_set(res.best), "fp16") == pytest.approx(best, rel=1e-6)
    # balanced: every row of G and BT has its largest entry in [1/2, 1); the proof covers these matrices
    for M in (res.best.G, res.best.BT):
        assert all(Fraction(1, 2) <= max(abs(v) for v in row) < 1 for row in M)
    assert res.candidates[0].verified and res.settings["balanced"] is True


def test_cost_objective_counts_the_transform_programs():
    from novagen.program import transform_cost

    obj = S.parse_objective("cost")
    assert obj.needs_exact and obj.continuous().name == "vandermonde"
    res = S.search("F(4,3)", "cost", max_denominator=4, seed=0, max_evaluations=400)
    cheapest = res.candidates[0]
    assert cheapest.values["cost"] == transform_cost(res.best)["total"]
    assert cheapest.values["cost"] <= transform_cost(algorithm("F(4,3)/classic"))["total"]
    weighted = S.parse_objective("fp16 + 0.5*cost")
    assert weighted.continuous().name == "fp16" and weighted.expensive


def test_nondominated():
    pts = [(3.0, 1.0), (1.0, 3.0), (2.0, 2.0), (2.5, 2.5), (1.0, 4.0), (4.0, 1.0)]
    assert S.nondominated(pts) == [1, 2, 0]


def test_pareto_front_fp16_against_cost():
    res = S.pareto("F(4,3)", "fp16", "cost", max_denominator=4, seed=0, max_evaluations=600,
                   weights=(0.0, 1.0, 4.0))
    vals = [p.values for p in res.front]
    assert len(vals) >= 2 and all(p.verified for p in res.front)
    assert vals == sorted(vals) and [c for _, c in vals] == sorted((c for _, c in vals), reverse=True)
    for a in vals:  # no front point dominates another
        assert not any(b[0] <= a[0] and b[1] <= a[1] and b != a for b in vals)
    refs = {p.reference: p for p in res.references}
    assert {"classic", "nova"} <= set(refs)
    assert vals[0][0] < refs["classic"].values[0] and vals[-1][1] <= refs["classic"].values[1]
    doc = res.to_dict()
    assert doc["objectives"] == ["fp16", "cost"] and len(doc["front"]) == len(vals)


def test_cli_pareto_json_and_errors(capsys):
    code = run(["search", "F(2,3)", "--objective", "fp16", "--pareto", "cost", "-d", "4",
                "--max-evaluations", "300", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["front"] and out["references"][0]["reference"] == "classic"
    assert run(["search", "F(2,3)", "--objective", "fp16", "--pareto", "fp16"]) == 2
    assert "second objective" in capsys.readouterr().err
    assert run(["search", "--campaign", "f4_3-kappa.toml", "--pareto", "cost"]) == 2


def test_package_level_call():
    import novagen

    res = novagen.search("F(2,3)", max_denominator=4, seed=0, max_evaluations=300)
    assert isinstance(res, S.SearchResult) and res.candidates[0].verified
    assert novagen.pareto is S.pareto and novagen.search is S.search
    assert res.history and res.history[-1][0] <= res.evaluations


@pytest.mark.slow
def test_a_finetune_campaign_runs_from_the_cli(capsys, tmp_path):
    """A fine-tuning campaign trains the digits network, fine-tunes it and prints the learned algorithm: its
    points and learned row scales rebuild the hash it reports, and it verifies."""
    pytest.importorskip("torch")
    from novagen.algebra import Algorithm
    from novagen.balancing import scale_taps
    from novagen.verify import verify

    camp = tmp_path / "f8_3-digits-test.toml"
    camp.write_text('name = "F(8,3)/digits-test"\nspec = "F(8,3)"\nkind = "finetune"\nnetwork = "digits"\n'
                    'start = "F(8,3)/best"\nprecision = "fp16"\nepochs = 1\nthreads = 1\n')
    import torch

    before = torch.get_num_threads()
    assert run(["search", "--campaign", str(camp), "--json"]) == 0
    assert torch.get_num_threads() == before  # the campaign's thread count held during its run only
    doc = json.loads(capsys.readouterr().out)
    assert doc["best"]["name"] == "F(8,3)/digits-test" and doc["campaign"]["reproduces_catalog"] is None
    plain = Algorithm.from_points("F(8,3)", [*doc["best"]["points"], "inf"])
    alg = scale_taps(plain, doc["balancing"]["log2_g"], doc["balancing"]["log2_b"])
    assert alg.content_hash == doc["best"]["hash"] and verify(alg).verified
    assert doc["top1"]["finetuned"] >= doc["top1"]["start"] - 0.01  # fine-tuning did not wreck the network
