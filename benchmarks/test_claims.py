"""Every claim of the study, parametrized over (claim x model) — ids like
``test_claim[bogdan2025.item_peak_early-smollm2-135m]`` (see the root conftest).

* A model with expected rows of its own (the paper's Llama-3.2-3B / Llama-3.3-70B, the embedded models'
  ``measured`` regression rows) is judged against them; for the embedded models the paper's claim in
  normalised depth is also judged and written to the claims table as an audit.
* Any other model (``--model``, including ``NAME+random`` twins) is judged against the paper's rows in
  normalised depth — a failure means the claim does not hold for that model.
"""
from __future__ import annotations

import pytest

from probekit.claim import judge

from .conftest import record


def test_claim(claim_id, run, expected_table, study):
    rep, meas = run
    claim = study.claim(claim_id)
    own = expected_table[(expected_table.model == rep.model) & (expected_table.claim == claim.id)]
    has_any_own = (expected_table.model == rep.model).any()
    meas_c = meas[meas.claim == claim.id]
    if has_any_own and own.empty:
        pytest.skip(f"no expected row states claim {claim.id!r} for {rep.model}")
    if meas_c.empty:
        pytest.fail(f"{rep.model}: claim {claim.id!r} produced no measurements")
    expected_c = expected_table[expected_table.claim == claim.id]
    verdicts = judge(meas_c, expected_c, study.claims, basis="own" if has_any_own else "paper-normalised")
    record(verdicts)
    if has_any_own and (own.provenance == "measured").all():
        # audit: the paper's claim in normalised depth (reported, not asserted)
        record(judge(meas_c, expected_c, study.claims, basis="paper-normalised"))
    failed = verdicts[~verdicts.passed]
    assert failed.empty, (f"{rep.model} / {claim.id} ({verdicts.basis.iloc[0]}): "
                          + "; ".join(f"{r.metric}: {r.reason}" for r in failed.itertuples()))
