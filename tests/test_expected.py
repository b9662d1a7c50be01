"""The expected/ tables and the judging of claims (probekit.claims.claim.judge)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probekit.core import expected as E
from probekit.claims.claim import MEASUREMENT_COLUMNS, judge
from probekit.studies import load_study

STUDY = load_study("bogdan2025")
PAPER = STUDY.paper_rows()
B = "bogdan2025."


def _meas(model="m", L=30, **values):
    rows = []
    for metric, (claim, unit, v, lo, hi) in values.items():
        rows.append({"model": model, "n_layers": L, "claim": B + claim, "metric": metric, "unit": unit, "value": v,
                     "ci_low": lo, "ci_high": hi, "interval": "ci", "detail": ""})
    return pd.DataFrame(rows, columns=MEASUREMENT_COLUMNS)


def _rows(claim, **kw):
    t = PAPER[PAPER.claim == B + claim]
    for k, v in kw.items():
        t = t[t[k] == v]
    return t


def test_committed_tables_are_valid_and_paper_rows_match_the_code():
    table = E.load(load_study().expected_dir)
    assert set(table.provenance) <= {"paper", "measured"}
    committed = pd.read_parquet(load_study().expected_dir / E.PAPER_FILE)
    pd.testing.assert_frame_equal(committed.drop(columns=["probekit_version"]),
                                  PAPER.drop(columns=["probekit_version"]), check_dtype=False)
    assert (table[table.provenance == "paper"].source.str.contains("2501.07359|not a number from the paper")).all()
    meas = table[table.provenance == "measured"]
    assert (meas.source.str.contains("measured: probekit")).all()
    # every row belongs to a claim of a study, and every claim of the study has paper rows
    assert table.claim.map(STUDY.owns).all()
    assert set(PAPER.claim) == {c.id for c in STUDY.claims}


def test_the_paper_numbers_are_there():
    p = PAPER.set_index(["model", "metric"])
    assert p.loc[("llama-3.2-3b", "items.depth"), "high"] == pytest.approx(8 / 28)
    assert tuple(p.loc[("llama-3.3-70b", "relations.first_peak_layer"), ["low", "high"]]) == (12, 16)
    assert tuple(p.loc[("llama-3.3-70b", "relations.second_peak_layer"), ["low", "high"]]) == (25, 33)
    assert p.loc[("llama-3.3-70b", "p_vs_null"), "high"] == 0.05
    assert STUDY.paper_ranges["analogies"][0]["low"] == 10


def test_validate_reports_every_bad_row():
    bad = PAPER.head(4).copy()
    bad.loc[0, "direction"] = "sideways"
    bad.loc[1, "provenance"] = "vibes"
    bad.loc[2, "source"] = " "
    bad.loc[3, "low"] = np.nan
    bad.loc[3, "direction"] = "greater"
    with pytest.raises(E.ExpectedTableError) as exc:
        E.validate(bad)
    msg = str(exc.value)
    assert "4 problem(s)" in msg and "sideways" in msg and "vibes" in msg and "empty source" in msg and "needs low" in msg


def test_a_claim_passes_only_when_every_rule_row_passes():
    ok = _meas("llama-3.2-3b", 28, **{"items.peak_gain": ("item_peak_early", "balanced_accuracy", 0.1, 0.02, 0.2),
                                      "items.depth": ("item_peak_early", "depth", 0.15, 0.1, 0.25)})
    v = judge(ok, _rows("item_peak_early"), STUDY.claims, basis="own")
    assert v.passed.all() and v.basis.iloc[0] == "own"
    # the point estimate is early but the CI reaches past layer 8 of 28: not established
    wide = ok.copy()
    wide.loc[wide.metric == "items.depth", "ci_high"] = 0.4
    v = judge(wide, _rows("item_peak_early"), STUDY.claims, basis="own").set_index("metric")
    assert v.loc["items.peak_gain", "passed"] and not v.loc["items.depth", "passed"]
    assert "ci_high 0.4 is not < 0.2857" in v.loc["items.depth", "reason"]
    # a gain whose selection-aware lower bound is not above 0 fails, whatever the point estimate
    flat = ok.copy()
    flat.loc[flat.metric == "items.peak_gain", "ci_low"] = -0.01
    assert not judge(flat, _rows("item_peak_early"), STUDY.claims, basis="own").passed.all()


def test_missing_metric_fails_and_a_nan_says_why():
    other = _meas("llama-3.2-3b", 28, **{"items.peak_value": ("item_peak_early", "balanced_accuracy", .8, .7, .9)})
    v = judge(other, _rows("item_peak_early"), STUDY.claims, basis="own")
    assert not v.passed.any() and set(v.reason) == {"not measured (experiment missing from the run?)"}
    nan = _meas("llama-3.3-70b", 80, **{"relations.first_peak_layer": ("double_peak", "layer", np.nan, np.nan,
                                                                       np.nan)})
    nan["detail"] = "no double peak found"
    v = judge(nan, _rows("double_peak", metric="relations.first_peak_layer"), STUDY.claims, basis="own")
    assert not v.passed.any() and v.reason.iloc[0] == "no double peak found"


def test_new_model_is_judged_in_normalised_depth():
    # 70B double-peak layers 12-16 of 80 -> depths [0.15, 0.2125): layer 7 of 40 (0.175) is inside
    dp = _meas("new/model", 40, **{"relations.double_peak_found": ("double_peak", "bool", 1, np.nan, np.nan),
                                   "relations.first_peak_layer": ("double_peak", "layer", 7, np.nan, np.nan),
                                   "relations.second_peak_layer": ("double_peak", "layer", 14, np.nan, np.nan)})
    rows = PAPER[(PAPER.claim == B + "double_peak") & PAPER.metric.str.startswith("relations")]
    v = judge(dp, rows, STUDY.claims)
    assert v.basis.iloc[0] == "paper-normalised" and v.passed.all(), v.reason.tolist()
    assert set(v.metric) == {"relations.double_peak_found", "relations.first_peak_layer@depth",
                             "relations.second_peak_layer@depth"}
    late = dp.copy()
    late.loc[late.metric == "relations.first_peak_layer", "value"] = 9          # depth 0.225: outside
    assert not judge(late, rows, STUDY.claims).passed.all()


def test_judge_on_ci_bound():
    rows = _rows("shuffled_at_chance", metric="shuffled_fwer_positive_rate", model="llama-3.2-3b")
    lucky = _meas("llama-3.2-3b", 28, shuffled_fwer_positive_rate=("shuffled_at_chance", "fraction", 0.11, 0.006, 0.4))
    assert judge(lucky, rows, STUDY.claims, basis="own").passed.all()          # 1 of 9: consistent with 5%
    bad = _meas("llama-3.2-3b", 28, shuffled_fwer_positive_rate=("shuffled_at_chance", "fraction", 0.6, 0.3, 0.85))
    assert not judge(bad, rows, STUDY.claims, basis="own").passed.any()


def test_measured_rows_round_trip(tmp_path):
    m = _meas("smollm2-135m", 30, **{
        "items.peak_layer": ("item_peak_early", "layer", 10, 7, 22),
        "relations.double_peak_found": ("double_peak", "bool", 0, np.nan, np.nan),
        "p_vs_null": ("anti_persistence", "p", 0.003, np.nan, np.nan),
        "mean_rho_attn_back_half": ("anti_persistence", "rho", -0.57, np.nan, np.nan),
        "items.argmax_spread": ("item_peak_early", "layer", 10, 3, 25)})
    m.loc[m.metric == "items.argmax_spread", "interval"] = "spread"          # a description: no regression row
    assert E.write_measured(m, tmp_path).name == E.MEASURED_FILE
    rows = E.load(tmp_path)
    assert set(rows.provenance) == {"measured"} and len(rows) == 4
    assert judge(m, rows, STUDY.claims).passed.all()
    drift = m.copy()
    drift.loc[drift.metric == "items.peak_layer", "value"] = 25
    drift.loc[drift.metric == "p_vs_null", "value"] = 0.2
    drift.loc[drift.metric == "mean_rho_attn_back_half", "value"] = -0.3
    v = judge(drift, rows, STUDY.claims).set_index("metric")
    assert not v.loc["items.peak_layer", "passed"] and not v.loc["p_vs_null", "passed"]
    assert not v.loc["mean_rho_attn_back_half", "passed"]                     # moved by more than 0.10
    # rewriting one model keeps the others' rows
    E.write_measured(m.assign(model="gemma3-270m", n_layers=18), tmp_path)
    assert set(E.load(tmp_path).model) == {"smollm2-135m", "gemma3-270m"}
    assert not list(tmp_path.glob("*.tmp"))
