"""Judging a run (probekit.claims.verdicts): the untrained-twin rule on the verdict DataFrame."""
from __future__ import annotations

import pandas as pd

from probekit.claims import TWIN_COLUMNS, twin_verdicts


def _v(model, claim, passed, answer=None):
    row = {"model": model, "claim": "bogdan2025." + claim, "metric": claim + ".m", "unit": "", "value": 1.0,
           "ci_low": 0.0, "ci_high": 2.0, "basis": "paper-normalised", "passed": passed, "reason": ""}
    if answer is not None:
        row["answer"] = answer
    return row


def _table(rows) -> pd.DataFrame:
    t = twin_verdicts(pd.DataFrame(rows))
    assert list(t.columns) == TWIN_COLUMNS
    return t.set_index(["model", "twin", "claim"])


def test_a_positive_claim_counts_only_when_the_twin_fails():
    t = _table([
        _v("m", "item_peak_early", True), _v("m+random:0", "item_peak_early", True),          # twin passes too
        _v("m", "relations_deeper", True), _v("m+random:0", "relations_deeper", False),
        _v("m", "analogies_deeper", False), _v("m+random:0", "analogies_deeper", False),      # fails on the model
        _v("m", "shuffled_at_chance", True), _v("m+random:0", "shuffled_at_chance", True),    # a control
        _v("m", "shuffled_at_chance", True), _v("m+random:0", "shuffled_at_chance", True),
    ])
    got = t.reproduced.xs("m+random:0", level="twin").to_dict()
    assert got == {("m", "bogdan2025.item_peak_early"): False, ("m", "bogdan2025.relations_deeper"): True,
                   ("m", "bogdan2025.analogies_deeper"): False, ("m", "bogdan2025.shuffled_at_chance"): True}
    assert not t.loc[("m", "m+random:0", "bogdan2025.shuffled_at_chance"), "positive"]
    assert set(t.judged_on) == {"rule"}


def test_a_control_must_pass_on_both():
    t = _table([_v("m", "shuffled_at_chance", True), _v("m+random:0", "shuffled_at_chance", False)])
    assert not t.reproduced.item()


def test_with_answers_passing_means_reproduced():
    # every metric passes on both, but the twin's answer is inconclusive: the model's claim counts
    t = _table([_v("m", "relations_deeper", True, "reproduced"), _v("m+random:0", "relations_deeper", True, "inconclusive"),
                _v("m", "item_peak_early", True, "contradicted"), _v("m+random:0", "item_peak_early", False, "contradicted")])
    assert t.reproduced.to_dict() == {("m", "m+random:0", "bogdan2025.relations_deeper"): True,
                                      ("m", "m+random:0", "bogdan2025.item_peak_early"): False}
    assert set(t.judged_on) == {"answer"}


def test_twins_are_found_by_the_one_parser():
    t = _table([_v("m", "relations_deeper", True), _v("m+random:0", "relations_deeper", False),
                _v("m+random:3", "relations_deeper", True),
                _v("m+randomized", "relations_deeper", False),       # another model, not a twin of m
                _v("mm+random:0", "relations_deeper", False)])        # the twin of mm (not judged here)
    assert sorted(t.index) == [("m", "m+random:0", "bogdan2025.relations_deeper"),
                               ("m", "m+random:3", "bogdan2025.relations_deeper")]
    assert t.reproduced.tolist() == [True, False]


def test_only_the_paper_normalised_basis_is_compared():
    rows = [_v("m", "relations_deeper", True), dict(_v("m+random:0", "relations_deeper", True), basis="own")]
    assert twin_verdicts(pd.DataFrame(rows)).empty
    assert twin_verdicts(pd.DataFrame()).empty


def test_the_report_re_exports_the_judging_for_one_release():
    import probekit.claims as C
    import probekit.report as R
    assert R.all_verdicts is C.all_verdicts and R.measure_run is C.measure_run


def test_the_random_grammar_is_stated_once():
    """``NAME+random[:SEED]`` is read by models.registry.parse_random and written by random_name only: no
    module tests a name for "+random" by hand (a ``startswith``/``in`` test took ``m+randomized`` for a twin)."""
    import re
    from pathlib import Path

    from probekit.models.registry import parse_random, random_name
    assert parse_random(random_name("org/name", 12)) == ("org/name", 12)
    assert parse_random("m+randomized") == ("m+randomized", None)
    package = Path(__file__).resolve().parents[1] / "probekit"
    by_hand = re.compile(r"""["']\+random["']\s*(not\s+)?in\b|\+random["']\s*\)|\+random:\{""")
    found = [f"{p.relative_to(package)}:{i}" for p in package.rglob("*.py") if p.name != "registry.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if by_hand.search(line)]
    assert found == [], found
