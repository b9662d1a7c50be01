"""Causal claims (probekit.causal, probekit.studies.bogdan2025.causal): the one-pass read-out, the layer sets,
the randomization test and its three answers, judging only where a causal run is, calibration at exact size,
causal.json in the saved run, and the refusals."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import probekit
from probekit import causal as C
from probekit import pipeline
from probekit.claims import all_verdicts, judge
from probekit.claims.calibration import calibrate_claim
from probekit.claims.claim import SyntheticEvidence, by_metric
from probekit.extraction.interventions import Intervention, MeanAblation
from probekit.extraction.readout import loglik, readout, set_means
from probekit.models.testing import tiny_model
from probekit.probes.grid import probe_grid
from probekit.stimuli.experiments import Experiment
from probekit.studies import load_study
from probekit.studies.bogdan2025 import causal as SC

GROUPS = [f"q{i:02d}" for i in range(1, 13)]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", n_layers=12, d_model=32, seed=3)


@pytest.fixture(scope="module")
def small():
    """A 48-text slice of the relations set (12 quads) as an experiment, and a study-like object whose one
    causal claim ranks the peak set among 5 random sets."""
    exp = Experiment("relations", "relations", "relations, 12 quads", paper="", query=f"group in {GROUPS}",
                     primary=("related",))
    claim = SC.PeakLayersMatter("relations", C.LayerSetPlan("relations", n_random=5))

    class _Study:
        id = "test"
        claims = [claim]

        def experiment(self, name):
            assert name == "relations"
            return exp
    return exp, claim, _Study()


@pytest.fixture(scope="module")
def ran(model, small):
    exp, claim, study = small
    stim = exp.stimuli()
    res = probe_grid(probekit.extract(model, stim), ["related"], n_permutations=0, n_bootstrap=50,
                     control_task=False, surface_baseline=False, progress=False)
    res.meta["primary"] = ["related"]
    return C.run_causal(model, study, {"relations": res}, model.fingerprint), stim, res


# ----------------------------------------------------------------------------- the one-pass read-out

def test_readout_pools_as_extraction_and_scores_as_loglik(model, small):
    exp = small[0]
    stim = exp.stimuli()
    L = model.n_layers
    keys = [(l, c) for l in (0, 5, L - 1) for c in ("resid_pre", "attn_out", "mlp_out")]
    iv = Intervention((MeanAblation("mlp_out", [3, 4]),))
    for intervention in (None, iv):
        r = readout(model, stim, intervention, keys=keys)
        acts = probekit.extract(model, stim, intervention=intervention)
        for k in keys:
            np.testing.assert_allclose(r.pooled[k], acts.get(*k), rtol=1e-5, atol=1e-5, err_msg=str(k))
        np.testing.assert_array_equal(r.loglik, loglik(model, stim, intervention))


def test_set_means_are_the_computed_mean_ablation(model, small):
    stim = small[0].stimuli()
    mu = set_means(model, stim, [(l, "attn_out") for l in (2, 7)])
    given = readout(model, stim, MeanAblation("attn_out", [2, 7], means={l: mu[(l, "attn_out")] for l in (2, 7)}),
                    keys=[(11, "resid_pre")])
    computed = readout(model, stim, MeanAblation("attn_out", [2, 7]), keys=[(11, "resid_pre")])
    np.testing.assert_array_equal(given.pooled[(11, "resid_pre")], computed.pooled[(11, "resid_pre")])
    np.testing.assert_array_equal(given.loglik, computed.loglik)
    ablated = readout(model, stim, MeanAblation("attn_out", [2], means={2: mu[(2, "attn_out")]}),
                      keys=[(2, "attn_out")])
    np.testing.assert_allclose(ablated.pooled[(2, "attn_out")], np.broadcast_to(mu[(2, "attn_out")], (len(stim), 32)),
                               rtol=1e-6, atol=1e-6)


def test_readout_refuses_a_bad_key_before_any_pass(model, small):
    with pytest.raises(probekit.extraction.ExtractionError, match="not a"):
        readout(model, small[0].stimuli(), None, keys=[(99, "resid_pre")])


# ----------------------------------------------------------------------------- layer sets

def test_peak_window_and_random_sets():
    assert C.peak_window(11, 3, 30) == (10, 11, 12)
    assert C.peak_window(0, 3, 30) == (0, 1, 2)
    assert C.peak_window(29, 3, 30) == (26, 27, 28)          # never the last block: it cannot reach the read-out
    sets = C.random_sets(30, 3, 39, 0, (10, 11, 12))
    assert len(set(sets)) == 39 and (10, 11, 12) not in sets
    assert all(len(s) == 3 and list(s) == sorted(set(s)) and 0 <= min(s) and max(s) <= 28 for s in sets)
    assert sets == C.random_sets(30, 3, 39, 0, (10, 11, 12))
    assert sets != C.random_sets(30, 3, 39, 1, (10, 11, 12))
    with pytest.raises(ValueError, match="only 20 sets"):
        C.random_sets(8, 2, 39, 0, (0, 1))
    assert C.LayerSetPlan("x").k(18) == 2 and C.LayerSetPlan("x").k(30) == 3 and C.LayerSetPlan("x").k(80) == 8


def test_layer_set_test_on_a_tiny_model(model, ran):
    data, stim, res = ran
    t = data["tests"]["bogdan2025.relations_peak_layers_matter"]
    L = model.n_layers
    assert t["peak_layer"] == int(np.argmax(res.profile("related", "resid_pre", "balanced_accuracy").value))
    assert t["peak_set"] == list(C.peak_window(t["peak_layer"], 2, L)) and t["readout_layer"] == L - 1
    assert len(t["readout_values"]) == 6 and len(t["loglik_change"]) == 6 and t["forward_passes"] == 8
    assert t["random_sets"] == [list(s) for s in C.random_sets(L, 2, 5, 0, tuple(t["peak_set"]))]
    # the unablated read-out is the ordinary probe at the last layer, and the peak set's value is its profile's
    vals, _ = C.decodability(stim, {(L - 1, "resid_pre"): probekit.extract(model, stim).get(L - 1, "resid_pre")},
                             L, ["related"], [L - 1])
    assert t["ordinary_readout"] == pytest.approx(float(vals[0]), abs=1e-9)
    assert t["ordinary_readout"] == t["ordinary_profile"][L - 1]
    assert t["readout_values"][0] == t["peak_profile"][L - 1]
    # both profiles come from the read-out's folds: up to the first ablated block's input they are the same
    # numbers (the stream there is untouched), and both bands hold their profile
    first = min(t["peak_set"])
    assert t["peak_profile"][:first + 1] == t["ordinary_profile"][:first + 1]
    assert t["peak_profile"][first + 1:] != t["ordinary_profile"][first + 1:]
    for name in ("ordinary", "peak"):
        assert all(lo <= hi for lo, hi in zip(t[f"{name}_lo"], t[f"{name}_hi"]))
    assert json.loads(json.dumps(data)) == data                  # plain data: causal.json round-trips


def test_the_claim_measures_and_answers_a_run(ran, small):
    data, _, _ = ran
    claim = small[1]
    ev = SyntheticEvidence(12, model="tiny", causal=data)
    rows = by_metric(claim.measure(ev))
    t = data["tests"][claim.id]
    drop = t["ordinary_readout"] - np.asarray(t["readout_values"])
    k = int(np.sum(drop[1:] >= drop[0] - 1e-12))
    assert rows["relations.peak_ablation_exceed"]["value"] == k
    assert rows["relations.peak_ablation_p"]["value"] == pytest.approx((1 + k) / 6)
    assert rows["relations.random_sets"]["value"] == 5
    ans = claim.answer(False, rows)
    assert SC.rank_cuts(5) == (-1, 1)                # 5 sets: never reproduced; one as damaging contradicts
    assert ans["answer"] == ("contradicted" if k >= 1 else "inconclusive")
    assert ans["p_effect"] == pytest.approx((1 + k) / 6)


# ----------------------------------------------------------------------------- the rule and its answers

def test_rank_cuts_power_and_mde():
    assert SC.rank_cuts(39) == (1, 3)            # p <= 0.05 with <= 1 of 39; P(Bin(39, .01) >= 3) <= .05
    from scipy.stats import binom
    c_rep, c_con = SC.rank_cuts(39)
    assert (1 + c_rep) / 40 <= 0.05 < (2 + c_rep) / 40
    assert binom.sf(c_con - 1, 39, 0.01) <= 0.05 < binom.sf(c_con - 2, 39, 0.01)
    assert SC.rank_power(39, 0.99) == pytest.approx(binom.cdf(1, 39, 0.01))
    assert SC.rank_power(39, SC.rank_mde(39)) == pytest.approx(0.8, abs=1e-6)
    assert SC.rank_cuts(5)[0] == -1 and SC.rank_power(5, 0.999) == 0.0    # 5 sets cannot reach p <= 0.05
    assert C.rank_test(0.3, [0.1, 0.3, 0.5]) == (2, 0.75, pytest.approx(1 / 3))   # a tie counts against


def _ev(claim, drops):
    ev = SyntheticEvidence(30, model="m")
    ev.causal = {"tests": {claim.id: dict(readout_values=list(0.9 - np.asarray(drops)), ordinary_readout=0.9,
                                          loglik_change=list(-np.asarray(drops)), peak_set=[9, 10, 11],
                                          peak_layer=10, readout_layer=29, k=3, labels=["related"])}}
    return ev


@pytest.mark.parametrize("n_above, answer", [(0, "reproduced"), (1, "reproduced"), (2, "inconclusive"),
                                             (3, "contradicted"), (20, "contradicted")])
def test_three_answers(n_above, answer):
    study = load_study("bogdan2025")
    claim = study.claim("bogdan2025.relations_peak_layers_matter")
    rng = np.random.default_rng(0)
    rand = np.concatenate([rng.uniform(0.0, 0.1, 39 - n_above), rng.uniform(0.3, 0.4, n_above)])
    meas = pd.DataFrame(claim.measure(_ev(claim, np.concatenate([[0.2], rand]))))
    v = judge(meas, study.expected(), study.claims, "paper-normalised")
    v = v[v.claim == claim.id]
    assert len(v) == 1 and v.metric.iloc[0] == "relations.peak_ablation_p"
    assert v.answer.iloc[0] == answer, v.answer_reason.iloc[0]
    assert v.power_at_paper.iloc[0] == pytest.approx(SC.rank_power(39, SC.U0))
    assert 0.97 < v.mde80.iloc[0] < 0.99


def test_an_ordinary_run_does_not_judge_the_causal_claims():
    study = load_study("bogdan2025")
    ids = {c.id for c in study.claims if c.optional}
    assert ids == {"bogdan2025.relations_peak_layers_matter", "bogdan2025.items_peak_layers_matter"}
    claim = study.claim("bogdan2025.relations_peak_layers_matter")
    other = pd.DataFrame([dict(model="m", n_layers=30, claim="bogdan2025.buried_decodable",
                               metric="buried.deep_value", unit="balanced_accuracy", value=0.6, ci_low=0.55,
                               ci_high=0.65, interval="ci", detail="")])
    v = all_verdicts(other, study)
    assert not v.claim.isin(ids).any()
    both = pd.concat([other, pd.DataFrame(claim.measure(_ev(claim, np.r_[0.5, np.zeros(39)])))])
    v = all_verdicts(both, study)
    assert set(v[v.claim.isin(ids)].claim) == {claim.id}
    assert not v.claim.eq("bogdan2025.items_peak_layers_matter").any()


def test_calibration_is_exact_size_and_has_power():
    study = load_study("bogdan2025")
    claim = study.claim("bogdan2025.relations_peak_layers_matter")
    sc = {s.name: s for s in claim.scenarios}
    null = calibrate_claim(study, claim, 28, sc["null_exchangeable"], 4000)
    assert abs(null["rate"] - 0.05) < 0.012                # 2 of 40 ranks: exactly 5% without ties
    assert calibrate_claim(study, claim, 80, sc["null_exchangeable_coarse"], 2000)["rate"] <= 0.05 + 0.012
    assert calibrate_claim(study, claim, 28, sc["null_median"], 500)["rate"] == 0.0
    planted = calibrate_claim(study, claim, 28, sc["planted_u0.99"], 2000)
    assert abs(planted["rate"] - SC.rank_power(39, 0.99)) < 0.04


# ----------------------------------------------------------------------------- the saved run

def test_causal_json_round_trips_and_a_plain_run_drops_it(tmp_path, model, ran):
    data, _, res = ran
    rep = pipeline.Replication("tiny", 12, 32, (), model.fingerprint, results={"relations": res}, causal=data)
    rep.save(tmp_path / "run")
    assert pipeline.Replication.load(tmp_path / "run").causal == data
    bad = dict(data, fingerprint="other")
    (tmp_path / "run" / C.CAUSAL_FILE).write_text(json.dumps(bad))
    with pytest.raises(pipeline.SavedRunError, match="causal.json: unusable.*of weights 'other'"):
        pipeline.Replication.load(tmp_path / "run")
    pipeline.Replication("tiny", 12, 32, (), model.fingerprint, results={"relations": res}).save(tmp_path / "run")
    assert not (tmp_path / "run" / C.CAUSAL_FILE).exists()


def test_causal_refusals_before_any_work(model):
    with pytest.raises(ValueError, match="needs experiment 'relations'"):
        pipeline.replicate(model, ["items"], causal=True, store=False)
    shallow = tiny_model("llama", n_layers=6, d_model=32)
    with pytest.raises(ValueError, match="sets of 2 of 5 blocks"):
        pipeline.replicate(shallow, ["items", "relations"], causal=True, store=False)


def test_cli_refuses_causal_without_its_experiments(capsys):
    from probekit.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--causal", "--experiments", "items", "--model", "smollm2-135m", "--out", "/tmp/x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs experiment 'relations'" in err[0]


def test_position_means_and_their_ablation(model, small):
    """``set_means(by_position=True)`` is the hand mean at each token position over the texts that reach it,
    and the position-wise ablation writes row t at token t (what extraction then pools)."""
    import torch
    from probekit.extraction.batching import encode
    from probekit.extraction.interventions import InterventionError
    from probekit.models.adapters import adapter_for, blocks, sublayer
    stim = small[0].stimuli()
    pm = set_means(model, stim, [(4, "mlp_out")], by_position=True)[(4, "mlp_out")]
    enc = encode(model.tokenizer, stim, "last_token")
    seen = []
    h = sublayer(blocks(model.model)[4], adapter_for(model.model).mlp).register_forward_hook(
        lambda m, a, o: seen.append(o[0].detach().double()))
    try:
        for ids in enc.input_ids:
            with torch.inference_mode():
                model.model(input_ids=torch.tensor([ids]))
    finally:
        h.remove()
    n_pos = max(len(x) for x in enc.input_ids)
    assert pm.shape == (n_pos, 32)
    for t in (0, 1, n_pos - 1):
        rows = [s[t] for s in seen if len(s) > t]
        np.testing.assert_allclose(pm[t], torch.stack(rows).mean(0).numpy(), rtol=1e-4, atol=1e-5)
    iv = MeanAblation("mlp_out", [4], means={4: pm}, by_position=True)
    assert iv.key().startswith("posmean(mlp_out@4;means=")
    r = readout(model, stim, iv, keys=[(4, "mlp_out")])
    w = encode(model.tokenizer, stim, "target_mean").weights
    np.testing.assert_allclose(r.pooled[(4, "mlp_out")], np.array([wi @ pm[:len(wi)] for wi in w]), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(InterventionError, match="by_position needs the means"):
        MeanAblation("mlp_out", [4], by_position=True)
    with pytest.raises(InterventionError, match="cover 2 positions"):
        readout(model, stim, MeanAblation("mlp_out", [4], means={4: pm[:2]}, by_position=True), keys=[])


def test_the_causal_cache_is_keyed_by_what_it_computes(tmp_path, model, small, ran, monkeypatch):
    """A second run reads the cached causal data; a change of CAUSAL_VERSION (what a plan computes) or of
    the ordinary scores the peak comes from recomputes it."""
    _, _, study = small
    data, _, res = ran
    rep = pipeline.Replication("tiny", 12, 32, (), model.fingerprint, results={"relations": res})
    calls = []

    def fake(*a, **k):
        calls.append(1)
        return dict(data, causal_version=pipeline.CAUSAL_VERSION)
    monkeypatch.setattr(pipeline, "run_causal", fake)
    monkeypatch.setenv("PROBEKIT_CACHE", str(tmp_path))
    first = pipeline._causal(model, study, rep, True, None)
    assert pipeline._causal(model, study, rep, True, None) == first and len(calls) == 1
    assert len(list((tmp_path / "causal").glob("*.json"))) == 1
    pipeline._causal(model, study, rep, False, None)             # no store: no cache
    assert len(calls) == 2
    monkeypatch.setattr(pipeline, "CAUSAL_VERSION", C.CAUSAL_VERSION + 1)
    pipeline._causal(model, study, rep, True, None)
    assert len(calls) == 3
    res2 = type(res)(res.scores.assign(value=res.scores.value + 0.01), res.predictions, res.baselines, res.labels,
                     res.n_layers, res.components, res.meta)
    pipeline._causal(model, study, pipeline.Replication("tiny", 12, 32, (), model.fingerprint,
                                                        results={"relations": res2}), True, None)
    assert len(calls) == 4


@pytest.mark.parametrize("keyword, markexpr, flag, selected", [
    ("", "", False, False), ("smollm2", "embedded", False, False), ("causal", "", False, True),
    ("", "causal and smollm2", False, True), ("not causal", "", False, False), ("", "", True, True)])
def test_causal_claims_run_only_when_selected(keyword, markexpr, flag, selected):
    from types import SimpleNamespace
    from benchmarks.conftest import causal_selected
    cfg = SimpleNamespace(option=SimpleNamespace(keyword=keyword, markexpr=markexpr),
                          getoption=lambda name: flag)
    assert causal_selected(cfg) is selected


def test_the_claim_benchmarks_mark_the_causal_claims():
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_claims.py", "--collect-only", "-q",
                          "-m", "causal and smollm2", "-p", "no:cacheprovider"], cwd=root, capture_output=True,
                         text=True, timeout=300)
    ids = [line for line in out.stdout.splitlines() if "::test_claim[" in line]
    assert sorted(ids) == sorted(f"benchmarks/test_claims.py::test_claim[bogdan2025.{e}_peak_layers_matter-"
                                 f"smollm2-135m]" for e in ("relations", "items")), out.stdout[-2000:]
