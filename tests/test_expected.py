"""The expected/ tables and the judging of claims."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probekit import claims as C
from probekit import expected as E


def _meas(model="m", L=30, **values):
    rows = []
    for metric, (claim, unit, v, lo, hi) in values.items():
        rows.append({"model": model, "n_layers": L, "claim": claim, "metric": metric, "unit": unit, "value": v,
                     "ci_low": lo, "ci_high": hi, "detail": ""})
    return pd.DataFrame(rows, columns=C.MEASUREMENT_COLUMNS)


def test_committed_tables_are_valid_and_paper_rows_match_the_code():
    table = E.load()
    assert set(table.provenance) <= {"paper", "measured"}
    committed = pd.read_parquet(E.expected_dir() / E.PAPER_FILE)
    pd.testing.assert_frame_equal(committed.drop(columns=["probekit_version"]),
                                  E.paper_rows().drop(columns=["probekit_version"]), check_dtype=False)
    # every paper row names its place in the paper; every measured row its version, date and basis
    assert (table[table.provenance == "paper"].source.str.contains("2501.07359|not a number from the paper")).all()
    meas = table[table.provenance == "measured"]
    assert (meas.source.str.contains("measured: probekit")).all()


def test_the_paper_numbers_are_there():
    p = E.paper_rows().set_index(["model", "metric"])
    assert tuple(p.loc[("llama-3.2-3b", "items.peak_layer"), ["low", "high"]]) == (2, 7)
    assert tuple(p.loc[("llama-3.2-3b", "relations.peak_layer"), ["low", "high"]]) == (8, 12)
    assert tuple(p.loc[("llama-3.2-3b", "analogies.peak_layer"), ["low", "high"]]) == (10, 15)
    assert tuple(p.loc[("llama-3.3-70b", "relations.first_peak_layer"), ["low", "high"]]) == (12, 16)
    assert tuple(p.loc[("llama-3.3-70b", "relations.second_peak_layer"), ["low", "high"]]) == (25, 33)
    assert p.loc[("llama-3.3-70b", "mean_rho_attn_back_half"), "expected"] == -0.33


def test_validate_reports_every_bad_row():
    bad = E.paper_rows().head(4).copy()
    bad.loc[0, "direction"] = "sideways"
    bad.loc[1, "provenance"] = "vibes"
    bad.loc[2, "source"] = " "
    bad.loc[3, "low"] = np.nan
    bad.loc[3, "direction"] = "greater"
    with pytest.raises(E.ExpectedTableError) as exc:
        E.validate(bad)
    msg = str(exc.value)
    assert "4 problem(s)" in msg and "sideways" in msg and "vibes" in msg and "empty source" in msg and "needs low" in msg


def test_judge_against_own_rows():
    table = E.paper_rows()
    ok = _meas("llama-3.2-3b", 28, **{"items.peak_layer": ("item_peak_early", "layer", 5, 3, 7)})
    v = C.judge(ok, table[table.claim == "item_peak_early"], basis="own")
    assert v.passed.all() and v.basis.iloc[0] == "own"
    late = _meas("llama-3.2-3b", 28, **{"items.peak_layer": ("item_peak_early", "layer", 9, 8, 12)})
    v = C.judge(late, table[table.claim == "item_peak_early"], basis="own")
    assert not v.passed.any() and "is not in [2, 7]" in v.reason.iloc[0]


def test_missing_metric_fails_rather_than_passing():
    table = E.paper_rows()
    other = _meas("llama-3.2-3b", 28, **{"items.peak_depth": ("item_peak_early", "depth", 0.1, 0, 0.2)})
    v = C.judge(other, table[table.claim == "item_peak_early"], basis="own")
    assert not v.passed.any() and "not measured" in v.reason.iloc[0]


def test_new_model_is_judged_in_normalised_depth():
    table = E.paper_rows()
    # 3B items: layers 2-7 of 28 -> depths [2/28, 8/28); a 56-layer model peaking at layer 6 (depth .107) passes
    m = _meas("new/model", 56, **{"items.peak_depth": ("item_peak_early", "depth", 6 / 56, 0, 1)})
    v = C.judge(m, table[table.claim == "item_peak_early"])
    assert v.basis.iloc[0] == "paper-normalised" and v.passed.all()
    m = _meas("new/model", 56, **{"items.peak_depth": ("item_peak_early", "depth", 16 / 56, 0, 1)})
    assert not C.judge(m, table[table.claim == "item_peak_early"]).passed.any()
    # 70B double-peak layers are converted too (12-16 of 80)
    dp = _meas("new/model", 40, **{"relations.double_peak_found": ("double_peak", "bool", 1, np.nan, np.nan),
                                   "relations.first_peak_layer": ("double_peak", "layer", 7, np.nan, np.nan),
                                   "relations.second_peak_layer": ("double_peak", "layer", 14, np.nan, np.nan)})
    v = C.judge(dp, table[(table.claim == "double_peak") & table.metric.str.startswith("relations")])
    assert v.passed.all(), v.reason.tolist()


def test_judge_on_ci_bound():
    table = E.paper_rows()
    rows = table[(table.metric == "shuffled_fwer_positive_rate") & (table.model == "llama-3.2-3b")]
    lucky = _meas("llama-3.2-3b", 28, **{"shuffled_fwer_positive_rate": ("shuffled_at_chance", "fraction", 0.11, 0.006, 0.4)})
    assert C.judge(lucky, rows, basis="own").passed.all()          # 1 of 9: consistent with 5%
    bad = _meas("llama-3.2-3b", 28, **{"shuffled_fwer_positive_rate": ("shuffled_at_chance", "fraction", 0.6, 0.3, 0.85)})
    assert not C.judge(bad, rows, basis="own").passed.any()


def test_measured_rows_round_trip(tmp_path):
    m = _meas("smollm2-135m", 30, **{
        "items.peak_layer": ("item_peak_early", "layer", 10, 7, 22),
        "relations.double_peak_found": ("double_peak", "bool", 0, np.nan, np.nan),
        "p_vs_null": ("anti_persistence", "p", 0.003, np.nan, np.nan),
        "mean_rho_attn_back_half": ("anti_persistence", "rho", -0.57, -0.5, -0.09),
        "shuffled_fwer_positive_rate": ("shuffled_at_chance", "fraction", 0.11, 0.006, 0.4)})
    assert E.write_measured(m, tmp_path).name == E.MEASURED_FILE
    rows = E.load(tmp_path)
    assert set(rows.provenance) == {"measured"} and len(rows) == 5
    assert C.judge(m, rows).passed.all()
    drift = m.copy()
    drift.loc[drift.metric == "items.peak_layer", "value"] = 25
    drift.loc[drift.metric == "p_vs_null", "value"] = 0.2
    v = C.judge(drift, rows).set_index("metric")
    assert not v.loc["items.peak_layer", "passed"] and not v.loc["p_vs_null", "passed"]
    # rewriting one model keeps the others' rows
    E.write_measured(m.assign(model="gemma3-270m", n_layers=18), tmp_path)
    assert set(E.load(tmp_path).model) == {"smollm2-135m", "gemma3-270m"}
    assert not list(tmp_path.glob("*.tmp"))
