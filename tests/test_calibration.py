"""Every claim's decision rule keeps its false-positive rate under its nulls (the fast version of
``probekit calibrate``; the full table, 500 draws at 18/28/30/80 layers, is the command's job)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from probekit.claims import Inflation, calibration as Cal
from probekit.studies import load_study

STUDY = load_study("bogdan2025")


@pytest.fixture(scope="module")
def table():
    # 80 layers (the 70B claims' depth) and 28 (the 3B's); 60 draws per null cell
    return Cal.calibrate(STUDY, n_draws=60, depths=(28, 80), kinds=("null",), workers=2)


def test_every_claim_is_calibrated_on_several_nulls(table):
    for c in STUDY.claims:
        got = table[table.claim == c.id]
        assert got.scenario.nunique() >= 2, c.id
        assert set(got.n_layers) == {28, 80}, c.id


def test_null_rejection_rates_stay_at_5_percent_within_binomial_error(table):
    # a rate is a failure when its exact 95% interval lies wholly above 5%
    bad = Cal.exceeds(table)
    assert bad.empty, bad[["claim", "scenario", "n_layers", "rate", "ci_low"]].to_string()
    # and the pooled rate per claim, over every null cell, is itself at or below ~5%
    pooled = table.groupby("claim").apply(lambda g: g.n_effect.sum() / g.n_draws.sum(), include_groups=False)
    assert (pooled <= 0.06).all(), pooled.to_string()


def test_a_broken_rule_is_caught(monkeypatch):
    """The calibration can fail: the study's own items-early claim, run through ``calibrate_claim`` with its
    intervals narrowed (inflation 0.3 instead of the study's), declares an early peak for a centroid at the
    bound (the least-favourable null) far more often than 5%, and ``exceeds`` flags the cell."""
    import probekit.studies.bogdan2025.claims as BC
    claim = STUDY.claim("bogdan2025.item_peak_early")
    sc = next(s for s in claim.scenarios if s.name == "null_boundary_1.5x")
    ok = Cal.calibrate_claim(STUDY, claim, 28, sc, 40)
    monkeypatch.setattr(BC, "INFLATION", SimpleNamespace(depth=0.3, band=0.3))  # below 1: Inflation refuses it
    broken = Cal.calibrate_claim(STUDY, claim, 28, sc, 40)
    assert broken["rate"] > 0.2 and broken["rate"] > ok["rate"] + 0.15
    assert len(Cal.exceeds(pd.DataFrame([broken]))) == 1 and Cal.exceeds(pd.DataFrame([ok])).empty


def test_a_broken_dip_rule_is_caught(monkeypatch):
    """The double peak's dip test, broken two ways, through ``calibrate_claim``. Its null deflated (the
    replicates' deviations x0.3 instead of the study's band factor): the 3B's single-peaked and flat worlds read as
    double peaks, so the 3B absence is *contradicted* in most draws (the correct test: at most a few) and its
    single-peak rows stop passing. Its null centred on the observed profile instead of the unimodal fit
    (the valley kept in the null): the 70B's planted 0.20 valley is no longer found."""
    import probekit.studies.bogdan2025.claims as BC
    from probekit.profiles import metrics as P
    claim = STUDY.claim("bogdan2025.double_peak")
    three_b = {s.name: s for s in claim.contrasts["llama-3.2-3b"]}
    planted = next(s for s in claim.scenarios if s.name == "planted_dip_0.20")

    def cells():
        return [Cal.calibrate_claim(STUDY, claim, 28, three_b[n], 30, rule_model="llama-3.2-3b")
                for n in ("null_ar_1.5x", "planted_single_paper_1.5x")]

    ok_null, ok_single = cells()
    power = Cal.calibrate_claim(STUDY, claim, 28, planted, 30)
    assert ok_null["n_contradicted"] <= 4 and ok_single["n_contradicted"] <= 4 and ok_single["rate"] > 0.1
    assert power["rate"] >= 0.7
    with monkeypatch.context() as m:
        m.setattr(BC, "INFLATION", SimpleNamespace(depth=0.3, band=0.3))
        bad_null, bad_single = cells()
    assert bad_null["n_contradicted"] >= 20 and bad_single["n_contradicted"] >= 20 and bad_single["rate"] == 0
    monkeypatch.setattr(P, "unimodal_fit", lambda v, w=None: np.asarray(v, float))
    assert Cal.calibrate_claim(STUDY, claim, 28, planted, 30)["rate"] < power["rate"] - 0.4


def test_planted_effects_are_detected_somewhere():
    t = Cal.calibrate(STUDY, n_draws=40, depths=(80,), kinds=("planted",),
                      claims=["anti_persistence", "shuffled_at_chance", "relations_deeper"])
    power = t.groupby("claim").rate.max()
    assert (power > 0.3).all(), power.to_string()


def test_markdown_and_files(tmp_path, table):
    paths = Cal.write(table, tmp_path)
    md = paths["markdown"].read_text()
    assert "No null row(s) significantly above 5%" in md and "bogdan2025.double_peak" in md
    import pandas as pd
    assert list(pd.read_parquet(paths["parquet"]).columns) == Cal.COLUMNS


def test_a_calibration_cell_is_reproducible_across_processes():
    import subprocess
    import sys
    code = ("from probekit import calibration as Cal; from probekit.studies import load_study; s = load_study(); "
            "c = s.claim('double_peak'); print(Cal.calibrate_claim(s, c, 18, c.scenarios[0], 20)['n_effect'], "
            "Cal.calibrate_claim(s, c, 18, c.scenarios[-1], 20)['n_effect'])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env=dict(__import__("os").environ, PYTHONHASHSEED=str(h))).stdout for h in (1, 2)}
    assert len(outs) == 1, outs


def test_untrained_profiles_are_recorded_from_saved_runs(synthetic_replication, tmp_path):
    """The calibration's untrained null is rewritten from twin runs by studies.bogdan2025.untrained."""
    import json

    from probekit.studies.bogdan2025.claims import _truth
    from probekit.studies.bogdan2025.untrained import record
    run = tmp_path / "run"
    synthetic_replication.save(run)
    out = record([run], tmp_path / "untrained.json")
    prof = json.loads(out.read_text())["profiles"]
    assert set(prof) == {"items", "relations", "analogies"}          # buried is not in the synthetic run
    rel = prof["relations"]["resid_pre"]
    assert len(rel["mean"]) == len(rel["sd"]) == 40 and min(rel["sd"]) >= 0
    # the planted relations peak (layer 5 of 10) survives the resampling to 40 depths
    assert abs(int(np.argmax(rel["mean"])) / 40 - 0.5) <= 0.1
    # and the shipped file feeds the simulator at any depth
    f, sd = _truth(("untrained", "relations", "resid_pre"), 80, np.random.default_rng(0), {})
    assert f.shape == sd.shape == (80,)


def test_inflation_table_finds_the_refit_ratio(tmp_path):
    """Refit replicates that scatter twice as wide as the reweighting ones: the study's x1 interval covers
    far fewer than 95% of them, and about x2 is needed."""
    from probekit.claims.calibration import inflation_table
    rng = np.random.default_rng(0)
    L = 12
    base = 0.5 + 0.3 * np.exp(-0.5 * ((np.arange(L) - 4) / 2.0) ** 2)
    arrays = {}
    for e, shift in (("items", 0), ("relations", 3)):
        prof = np.roll(base, shift)
        arrays[f"m/{e}/resid_pre/profile"] = prof
        arrays[f"m/{e}/resid_pre/reweight"] = prof + 0.01 * rng.standard_normal((400, L))
        arrays[f"m/{e}/resid_pre/refit"] = prof - 0.01 + 0.02 * rng.standard_normal((400, L))
    np.savez(tmp_path / "n.npz", **arrays)
    t = inflation_table(tmp_path / "n.npz", 1.0, pairs=(("relations", "items"),)).set_index("statistic")
    assert set(t.index) == {"items.depth", "relations.depth", "relations_minus_items.depth", "items.band",
                            "relations.band"}
    assert (t.coverage_at_study < 0.9).all()
    assert t.loc["items.band", "sd_ratio"] == pytest.approx(2.0, rel=0.1)
    assert t.loc["items.band", "kappa_for_95"] == pytest.approx(2.0, rel=0.15)
    assert (t.layers == "all").all()
    # refits at a subset of the layers (the others NaN): band rows over that subset, no centroid rows
    ref = arrays["m/items/resid_pre/refit"].copy()
    ref[:, 6:] = np.nan
    arrays = {k.replace("m/", "p/"): v for k, v in arrays.items()} | {"p/items/resid_pre/refit": ref}
    np.savez(tmp_path / "p.npz", **arrays)
    p = inflation_table(tmp_path / "p.npz", Inflation(depth=1.0, band=2.5)).set_index("statistic")
    assert "items.depth" not in p.index and "relations_minus_items.depth" not in p.index
    assert p.loc["items.band", "layers"] == f"6/{L}" and p.loc["relations.band", "layers"] == "all"
    assert p.loc["items.band", "study_inflation"] == 2.5 and p.loc["relations.depth", "study_inflation"] == 1.0
    assert p.loc["items.band", "coverage_at_study"] >= 0.95 > p.loc["relations.depth", "coverage_at_study"]


def test_the_study_inflation_follows_its_rule_and_covers():
    """The registered factors are the rule written beside ``INFLATION`` in the study: per kind, the largest
    factor any measured row of that kind needs for 95% coverage of the refit replicates, rounded up to 0.05.
    So every measured statistic's interval covers its refits at >= 95% (the x1.5 of before covered 78-93%)."""
    t = Cal.inflation_table(STUDY.folder / "noise_measured.npz", STUDY.inflation)
    assert {"ci", "simultaneous band"} <= set(t.kind)
    for kind, g in t.groupby("kind"):
        assert STUDY.inflation.of(kind) == pytest.approx(np.ceil(g.kappa_for_95.max() / 0.05 - 1e-9) * 0.05), kind
    low = t[t.coverage_at_study < 0.95]
    assert low.empty, low.to_string()
    with pytest.raises(ValueError, match="widens"):
        Inflation(depth=0.9)
    with pytest.raises(ValueError, match="kinds are"):
        STUDY.inflation.of("band")
