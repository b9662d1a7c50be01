"""The scaling contrast: what the paper reports as emerging in the 70B (double peak, attention
anti-persistence) it reports absent in the 3B. The 3B's own rows state that absence, each with a gate
(a peak to have; attention that carries information) so that a model with no signal — an untrained
copy — cannot pass it, and the calibration runs those rows on their own scenarios."""
from __future__ import annotations

import numpy as np
import pytest

from probekit.claims import calibration as Cal
from probekit.profiles import simulate as sim
from probekit.claims.claim import SyntheticEvidence, judge, measure
from probekit.studies import load_study

STUDY = load_study("bogdan2025")
RESID, ATTN = "resid_pre", "attn_out"


def _verdict(claim_id: str, ev) -> tuple[bool, list[str]]:
    claim = STUDY.claim(claim_id)
    v = judge(measure([claim], ev), STUDY.expected()[lambda d: d.claim == claim.id], [claim])
    assert set(v.basis) == {"own"} and len(v), "the 3B must be judged on its own rows"
    return bool(v.passed.all()), list(v[~v.passed].metric)


def _profiles(truth_of, exps, component, sd=0.01, seed=0, L=28, rho=0.6):
    rng = np.random.default_rng(seed)
    ev = SyntheticEvidence(L, model="llama-3.2-3b")
    for e in exps:
        ev.profiles[(e, component)] = sim.observe(truth_of(e, L), sd, rng, rho=rho, n_boot=300)
    return ev


def test_the_3b_has_its_own_rows_for_both_70b_claims():
    exp = STUDY.expected()
    for claim in ("double_peak", "anti_persistence"):
        own = exp[(exp.claim == f"bogdan2025.{claim}") & (exp.model == "llama-3.2-3b")]
        assert len(own) >= 2, claim


@pytest.mark.parametrize("world, passes, failing", [
    ("single", True, []),
    ("flat", False, ["relations.peak_gain", "analogies.peak_gain"]),
    ("double", False, ["relations.double_peak_found", "analogies.double_peak_found"]),
])
def test_3b_double_peak_rule_passes_one_peak_only(world, passes, failing):
    def truth(e, L):
        if world == "flat":
            return np.full(L, 0.5)
        if world == "single":
            return sim.bump(L, 10 / 28, 0.08, 0.2)
        x = np.arange(L) / L
        return 0.5 + 0.3 * (np.exp(-0.5 * ((x - 0.2) / 0.05) ** 2) + np.exp(-0.5 * ((x - 0.7) / 0.05) ** 2))
    ok, bad = _verdict("bogdan2025.double_peak", _profiles(truth, ("relations", "analogies"), RESID, sd=0.005))
    assert ok is passes and bad == failing


@pytest.mark.parametrize("world, passes, failing", [
    ("trend", True, []),                          # information, no zig-zag
    ("flat", False, ["attn_mean.best_value"]),    # no information: absence says nothing
    ("zigzag", False, ["p_vs_null"]),             # the 70B's effect is there
])
def test_3b_anti_persistence_rule_needs_information_and_no_zigzag(world, passes, failing):
    exps = ("items", "relations", "analogies", "buried")

    def truth(e, L):
        if world == "flat":
            return np.full(L, 0.5)
        t = sim.bump(L, 0.6, 0.3, 0.15)
        return t + (0.04 * (-1.0) ** np.arange(L) if world == "zigzag" else 0)
    ok, bad = _verdict("bogdan2025.anti_persistence", _profiles(truth, exps, ATTN, sd=0.01, rho=0.0))
    assert ok is passes and bad == failing


def test_contrast_rules_are_calibrated_and_alternatives_are_not_nulls():
    t = Cal.calibrate(STUDY, n_draws=30, depths=(28,), claims=["double_peak", "anti_persistence"],
                      kinds=("null", "alternative"))
    c = t[t.rule_model == "llama-3.2-3b"]
    assert set(c.claim) == {"bogdan2025.double_peak", "bogdan2025.anti_persistence"}
    assert {"null", "alternative"} <= set(c.kind)
    assert Cal.exceeds(c).empty
    # an alternative row is a miss rate, never read as a false-positive rate
    assert Cal.exceeds(c[c.kind == "alternative"].assign(ci_low=0.9)).empty
    assert "rows of llama-3.2-3b" in Cal.markdown(t)
