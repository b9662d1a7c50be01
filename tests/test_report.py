"""Reports: figures, claims tables and atomic writes on a small synthetic Replication (no model)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from probekit.claims import all_verdicts, measure_run
from probekit.core import expected as E
from probekit.report import render as R

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
@pytest.fixture(scope="module")
def rep(synthetic_replication):
    return synthetic_replication


@pytest.fixture(scope="module")
def meas(rep):
    return measure_run(rep)


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def test_plot_profiles_writes_valid_pngs(rep, tmp_path):
    one = dataclasses.replace(rep, results={"items": rep.results["items"]})      # 3 components + overview
    paths = R.plot_profiles(one, tmp_path)
    assert {p.name for p in paths} == {f"synth-10l_items_{c}.png" for c in rep.results["items"].components} \
        | {"synth-10l_overview.png"}
    for p in paths:
        assert p.stat().st_size > 1000 and _is_png(p)
    assert sorted(tmp_path.iterdir()) == sorted(paths), "temporary files left behind"


def test_paper_ranges_come_from_the_study():
    from probekit.studies import load_study
    rng = load_study("bogdan2025").paper_ranges
    assert {(r["low"], r["high"], r["n_layers"]) for r in rng["items"]} == {(2, 7, 28)}
    assert {(r["low"], r["high"], r["n_layers"]) for r in rng["relations"]} == {(8, 12, 28), (12, 16, 80),
                                                                                  (25, 33, 80)}
    # on a 56-layer model the 3B range 2-7 covers layers [4, 16): the judge's [l/L, (l+1)/L) convention
    assert R._range_in_layers(rng["items"][0], 56) == (4.0, 16.0)


def test_profile_summary_finds_the_planted_peak(rep):
    s = R.profile_summary(rep.results["relations"], R._experiment(rep, "relations"), "resid_pre")
    assert s["peak_layer"] == 5 and s["peak_ci_low"] <= 5 <= s["peak_ci_high"]
    assert s["peak_gain_ci"][0] > 0                  # a planted peak clears the selection-aware bound
    assert 0 <= s["layer0_value"] <= 1 and not np.isnan(s["selectivity_at_peak"])


def _verdict(model, claim, metric, passed, value=1.0, basis="own", reason=None):
    return {"model": model, "claim": "bogdan2025." + claim, "metric": metric, "unit": "layer", "value": value,
            "ci_low": value - 1, "ci_high": value + 1, "interval": "ci", "judged": "value", "direction": "range", "low": 2, "high": 7, "expected": 4.5,
            "tolerance": np.nan, "provenance": "paper", "basis": basis, "passed": passed,
            "reason": reason or f"value {value} {'is' if passed else 'is not'} in [2, 7]", "source": "test"}


def test_claims_markdown_one_row_per_model_and_claim_with_fail_reason():
    v = pd.DataFrame([
        _verdict("m1", "item_peak_early", "items.peak_layer", True, 4),
        _verdict("m1", "relations_deeper", "relations.peak_layer", False, 20, reason="value 20 is not in [8, 12]"),
        _verdict("m1", "relations_deeper", "relations_minus_items.depth", True, 0.3),
        _verdict("m2", "item_peak_early", "items.peak_layer", False, 9),
        _verdict("m2", "item_peak_early", "items.peak_depth", False, 0.3, basis="paper-normalised"),
    ])
    md = R.claims_markdown(v)
    own, audit = md.split("Paper-normalised audit")
    table = [l for l in own.split("<details>")[0].splitlines() if l.startswith(("| m1 ", "| m2 "))]
    assert len(table) == 3                                    # m1 x 2 claims + m2 x 1 claim
    rel = next(l for l in table if "relations_deeper" in l)
    assert "FAIL" in rel and "value 20 is not in [8, 12]" in rel
    assert "`relations_minus_items.depth`" in rel            # the claim object's key metric
    assert "Two-item relations peak deeper than items" in rel  # the claim object's title
    assert "PASS" in next(l for l in table if "m1" in l and "item_peak_early" in l)
    assert len([l for l in audit.split("<details>")[0].splitlines() if l.startswith(("| m1 ", "| m2 "))]) == 1


def test_write_claims_table_is_atomic_and_round_trips(tmp_path, monkeypatch):
    v = pd.DataFrame([_verdict("m1", "item_peak_early", "items.peak_layer", False, 9)])
    paths = R.write_claims_table(v, tmp_path)
    assert paths["claims"].read_text().startswith("# Claims")
    pd.testing.assert_frame_equal(pd.read_parquet(paths["verdicts"]), v)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claims.md", "verdicts.parquet"]

    # a crash while writing keeps the old file and leaves no temporary file
    old = paths["claims"].read_text()

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(R, "claims_markdown", boom)
    with pytest.raises(RuntimeError):
        R.write_claims_table(v.assign(model="m2"), tmp_path)
    assert paths["claims"].read_text() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claims.md", "verdicts.parquet"]
    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(RuntimeError):
        R.atomic_write_parquet(v, tmp_path / "verdicts.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claims.md", "verdicts.parquet"]


def test_write_report_on_synthetic_replication(rep, meas, tmp_path):
    out = R.write_report(rep, tmp_path / "synth", measurements=meas)
    d = tmp_path / "synth"
    for name in ("replication.json", "scores.parquet", "measurements.parquet", "verdicts.parquet", "claims.md",
                 "report.md"):
        assert (d / name).stat().st_size > 0, name
    v = pd.read_parquet(d / "verdicts.parquet")
    # no own rows for a synthetic model: the paper-normalised audit only, one row per expected paper claim
    assert set(v.basis) == {"paper-normalised"} and set(v.model) == {"synth-10l"}
    report = (d / "report.md").read_text()
    assert "figures/synth-10l_overview.png" in report and "| relations | resid_pre | 5 |" in report
    assert "shuffled_at_chance" in report and "relations_eats" not in set(rep.results)
    names = {p.name for p in out["figures"]}
    assert names == {f"synth-10l_{e}_{c}.png" for e in ("items", "relations", "analogies") for c in rep.results["items"].components} \
        | {"synth-10l_overview.png"}
    assert all(p.stat().st_size > 1000 and _is_png(p) for p in out["figures"])
    assert not [p for p in d.rglob("*") if p.name.endswith(".tmp")]


def test_all_verdicts_own_plus_audit(meas, tmp_path):
    import dataclasses as dc

    from probekit.studies import load_study
    study = load_study("bogdan2025")
    E.write_measured(meas, tmp_path)                  # regression rows of the synthetic model itself
    E.write_paper(study, tmp_path)
    v = all_verdicts(meas, dc.replace(study, expected_path=tmp_path))
    assert set(v.basis) == {"own", "paper-normalised"}
    cr = R.claim_rows(v)
    assert not cr.duplicated(["basis", "model", "claim"]).any()
    own_cr = cr[cr.basis == "own"].set_index("claim")
    # a run judged against its own measured CIs passes its peak claims (the shuffled-control row keeps its
    # fixed 0.02 bound, which 20 permutations of 120 rows need not meet)
    # (analogies_deeper needs the pair-only controls, which the synthetic run does not have: not measured)
    assert own_cr.loc[["bogdan2025." + c for c in ("item_peak_early", "relations_deeper")], "passed"].all()
    assert "bogdan2025.analogies_deeper" not in set(own_cr.index)
    # regression rows answer "regression"; the paper-normalised audit gives one of the three answers
    from probekit.claims.claim import ANSWERS, REGRESSION
    assert (cr[cr.basis == "own"].answer == REGRESSION).all()
    audit = cr[cr.basis == "paper-normalised"]
    assert audit.answer.isin(ANSWERS).all() and audit.answer_reason.str.len().gt(0).all()
    md = R.claims_markdown(v)
    assert "Against the paper:" in md and "Regression against the models' own measured references" in md


def test_twin_table_renders_the_twin_verdicts():
    """The rule itself is tested on the DataFrame (tests/test_verdicts.py); here: one line per judged row."""
    v = pd.DataFrame([
        _verdict("m", "relations_deeper", "relations.peak_gain", True, basis="paper-normalised"),
        _verdict("m+random:0", "relations_deeper", "relations.peak_gain", False, basis="paper-normalised"),
        _verdict("m", "item_peak_early", "items.peak_gain", True, basis="paper-normalised"),
        _verdict("m+random:0", "item_peak_early", "items.peak_gain", True, basis="paper-normalised"),
    ])
    md = R.twin_markdown(v)
    assert "| m | m+random:0 | `bogdan2025.relations_deeper` | PASS | fail | **yes** |" in md
    assert "| m | m+random:0 | `bogdan2025.item_peak_early` | PASS | PASS | no |" in md
    assert R.twin_markdown(v[v.model == "m"]) == ""                 # no twin: no section


def test_a_metric_means_the_same_in_every_claim_that_reports_it(meas):
    # judge() looks metrics up by name: two claims reporting one name must report one thing
    dup = meas[meas.duplicated("metric", keep=False)]
    for metric, g in dup.groupby("metric"):
        assert g[["value", "ci_low", "ci_high", "interval"]].astype(str).nunique().max() == 1, metric
