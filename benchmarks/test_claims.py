"""Every claim of the study, parametrized over (claim x model) — ids like
``test_claim[bogdan2025.item_peak_early-smollm2-135m]`` (see the root conftest).

* A model with expected rows of its own (the paper's Llama-3.2-3B / Llama-3.3-70B, the embedded models'
  ``measured`` regression rows) is judged against them; for the embedded models the paper's claim in
  normalised depth is also judged and written to the claims table as an audit.
* Any other model (``--model``, including ``NAME+random`` twins) is judged against the paper's rows in
  normalised depth.

Causal claims (``-k causal`` or ``--causal``; skipped otherwise) are judged on the paper-normalised rule for
every model, the embedded ones included (they have no measured regression rows).

Rows judged against the paper (the 3B/70B's own rows, or the paper's rows in normalised depth) give one of
three answers (``probekit.claims.claim.answer_claim``): *reproduced* passes, *contradicted* fails, *inconclusive*
is an ``xfail`` whose reason carries the power at the paper's size and the MDE at 80% power — an xfail, not
a skip, because the claim was measured and judged; the data just cannot settle it. The embedded models'
regression rows keep their own PASS/FAIL.
"""
from __future__ import annotations

import pytest

from probekit.claims.claim import REGRESSION, judge

from .conftest import record


def test_claim(claim_id, run, expected_table, study):
    rep, meas = run
    claim = study.claim(claim_id)
    own = expected_table[(expected_table.model == rep.model) & (expected_table.claim == claim.id)]
    has_any_own = (expected_table.model == rep.model).any()
    meas_c = meas[meas.claim == claim.id]
    if has_any_own and own.empty:
        if not getattr(claim, "optional", False):
            pytest.skip(f"no expected row states claim {claim.id!r} for {rep.model}")
        has_any_own = False        # a causal claim has no regression rows: judged on the paper's rule
    if meas_c.empty:
        pytest.fail(f"{rep.model}: claim {claim.id!r} produced no measurements")
    expected_c = expected_table[expected_table.claim == claim.id]
    verdicts = judge(meas_c, expected_c, study.claims, basis="own" if has_any_own else "paper-normalised")
    record(verdicts)
    if has_any_own and (own.provenance == "measured").all():
        # audit: the paper's claim in normalised depth (reported, not asserted)
        record(judge(meas_c, expected_c, study.claims, basis="paper-normalised"))
    failed = verdicts[~verdicts.passed]
    where = f"{rep.model} / {claim.id} ({verdicts.basis.iloc[0]})"
    detail = "; ".join(f"{r.metric}: {r.reason}" for r in failed.itertuples())
    a = verdicts.iloc[0]
    if a.answer in ("", REGRESSION):
        assert failed.empty, f"{where}: {detail}"
        return
    power = (f"power at the paper's size {a.power_at_paper:.2f}, MDE(80%) {a.mde80:.3g} vs the paper's "
             f"{a.paper_effect:.3g}")
    if a.answer == "contradicted":
        pytest.fail(f"{where}: contradicted: {a.answer_reason} ({power}); {detail}")
    if a.answer == "inconclusive":
        pytest.xfail(f"{where}: inconclusive: {a.answer_reason} ({power})")
    assert a.answer == "reproduced", f"{where}: unknown answer {a.answer!r}"
