"""The optional ``auc`` metric (issue 18 item 7): ROC AUC of the out-of-fold margins, its bootstrap-weighted
version, and the guarantee that asking for it changes no existing number."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from probekit.core.checks import ArgumentError
from probekit.probes import stats as S
from probekit.probes.grid import make_synthetic_acts, probe_grid


def _data(seed: int, n: int = 70, m: int = 6, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, m)).astype(float)
    s = rng.integers(-4, 5, (n, m)).astype(float) if ties else rng.standard_normal((n, m))
    s += 0.8 * y                                      # some signal, so AUC is not ~0.5 everywhere
    return y, s


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_auc_equals_sklearn(seed, ties):
    y, s = _data(seed, ties=ties)
    got = S.column_metrics("binary", y, s, ("auc",))["auc"]
    want = [roc_auc_score(y[:, j], s[:, j]) for j in range(y.shape[1])]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert S.column_metrics("binary", y[:, 0], s[:, 0], ("auc",))["auc"] == pytest.approx(want[0], abs=1e-12)


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_weighted_auc_equals_sklearn_on_repeated_rows(seed, ties):
    y, s = _data(seed, ties=ties)
    y = y[:, 0]
    W = np.random.default_rng(100 + seed).integers(0, 4, (9, len(y))).astype(float)
    got = S.weighted_metrics("binary", y, s, W, ("auc",))["auc"]
    for b in range(len(W)):
        rep = W[b].astype(int)
        want = [roc_auc_score(np.repeat(y, rep), np.repeat(s[:, c], rep)) for c in range(s.shape[1])]
        np.testing.assert_allclose(got[b], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ties", [True, False])
def test_weighted_auc_with_equal_weights_is_the_unweighted(ties):
    y, s = _data(7, ties=ties)
    y = y[:, 0]
    plain = S.column_metrics("binary", np.repeat(y[:, None], s.shape[1], 1), s, ("auc",))["auc"]
    for w in (1.0, 3.0):
        got = S.weighted_metrics("binary", y, s, np.full((2, len(y)), w), ("auc",))["auc"]
        np.testing.assert_allclose(got, np.broadcast_to(plain, got.shape), rtol=0, atol=1e-12)


def test_auc_edge_cases_and_chance():
    y = np.array([1, 1, 1, 0.0])
    assert np.isnan(S.column_metrics("binary", np.ones(4), np.arange(4.0), ("auc",))["auc"])   # one class
    W = np.array([[1, 1, 1, 0.0], [1, 1, 1, 1]])                                                # replicate 0: no negative
    a = S.weighted_metrics("binary", y, np.arange(4.0), W, ("auc",))["auc"]
    assert np.isnan(a[0, 0]) and a[1, 0] == 0.0
    assert S.column_metrics("binary", np.array([0, 1.0]), np.zeros(2), ("auc",))["auc"] == 0.5  # a tie counts half
    assert S.chance_level("binary", "auc", y) == 0.5
    assert S.metrics_for("binary", ("auc",)) == S.BINARY_METRICS + ("auc",)
    assert S.metrics_for("continuous", ("auc",)) == S.CONTINUOUS_METRICS       # AUC is for binary labels only
    assert "auc" not in S.column_metrics("binary", y, np.arange(4.0))             # opt-in
    with pytest.raises(ValueError, match="unknown optional metric 'roc'"):
        S.metrics_for("binary", ("roc",))


@pytest.fixture(scope="module")
def grids():
    acts = make_synthetic_acts(n_groups=24, per_group=4, d=24, n_layers=4, n_binary=2, n_continuous=1, seed=3)
    kw = dict(n_permutations=19, n_bootstrap=50, n_control=2, seed=5, n_jobs=1)
    return probe_grid(acts, **kw), probe_grid(acts, metrics=("auc",), **kw)


def test_adding_auc_changes_no_existing_number(grids):
    """Accuracy, balanced accuracy, r, r2: values, intervals, p-values, control, surface baseline all
    bit-identical with and without ``metrics=("auc",)``; the predictions too."""
    base, withauc = grids
    old = withauc.scores[withauc.scores.metric != "auc"].reset_index(drop=True)
    pd.testing.assert_frame_equal(base.scores, old, check_exact=True)
    pd.testing.assert_frame_equal(base.baselines, withauc.baselines[withauc.baselines.metric != "auc"]
                                  .reset_index(drop=True), check_exact=True)
    for name, p in base.predictions.items():
        np.testing.assert_array_equal(p.oof, withauc.predictions[name].oof)
    assert "metrics" not in base.meta and withauc.meta["metrics"] == ["auc"]


def test_auc_rows_are_complete_and_consistent(grids):
    base, withauc = grids
    a = withauc.scores[withauc.scores.metric == "auc"]
    binary = sorted(k for k, v in withauc.labels.items() if v.kind == "binary")
    assert sorted(a.label.unique()) == binary and len(a) == len(base.scores[base.scores.metric == "balanced_accuracy"])
    assert (a.chance == 0.5).all()
    for col in ("value", "ci_low", "ci_high", "p_value", "p_fwer", "control_value", "null_mean", "surface_baseline"):
        assert a[col].notna().all(), col
    assert ((a.ci_low <= a.value) & (a.value <= a.ci_high)).all()
    # the table's value is the AUC of the saved predictions; its replicates are what bootstrap_profiles redraws,
    # also from a grid run without it
    lab = binary[0]
    p = withauc.predictions[lab]
    prof = withauc.profile(lab, "resid_pre", "auc")
    direct = [roc_auc_score(p.y, p.oof[li, 0]) for li in prof.layer]
    np.testing.assert_allclose(prof.value, direct, atol=1e-6)
    reps_b = base.bootstrap_profiles(lab, "resid_pre", "auc")
    reps_a = withauc.bootstrap_profiles(lab, "resid_pre", "auc")
    np.testing.assert_array_equal(reps_a, reps_b)
    lo = np.nanquantile(reps_a, 0.025, 0)
    np.testing.assert_allclose(lo, prof.ci_low, atol=1e-6)


def test_auc_survives_save_and_load(grids, tmp_path):
    _, withauc = grids
    withauc.save(tmp_path / "r")
    from probekit.probes import ProbeResults
    back = ProbeResults.load(tmp_path / "r")
    pd.testing.assert_frame_equal(back.scores, withauc.scores)
    assert back.meta["metrics"] == ["auc"]


def test_unknown_metric_is_refused():
    acts = make_synthetic_acts(n_groups=8, per_group=3, d=8, n_layers=2, n_binary=1, n_continuous=0)
    with pytest.raises(ArgumentError, match="unknown optional metric 'roc_auc'"):
        probe_grid(acts, metrics=("roc_auc",), n_permutations=0, n_bootstrap=0)


def test_results_cache_key_unchanged_by_default_and_keyed_when_asked():
    from probekit.pipeline import _keyed_settings
    base = dict(n_splits=6, n_permutations=100, n_bootstrap=1000, control_task=True, seed=0)
    assert _keyed_settings(base) == _keyed_settings(dict(base, metrics=())) == base
    assert _keyed_settings(dict(base, metrics=("auc", "auc")))["metrics"] == ["auc"]


def test_auc_vs_ba_summaries():
    """benchmarks/calibration/auc_vs_ba.py's SNR ratios on a made-up pair of profiles: AUC with the same rise
    and half the replicate noise has twice BA's SNR, worth 4x the stimuli."""
    from benchmarks.calibration.auc_vs_ba import compare, derived
    rng = np.random.default_rng(0)
    v = np.array([0.52, 0.6, 0.8, 0.7, 0.6])
    noise = rng.standard_normal((400, 5)) * 0.02
    d = {"balanced_accuracy": derived(v, v + noise), "auc": derived(v, v + noise / 2)}
    c = compare(d)
    assert c["snr_ratio_median"] == pytest.approx(2.0) and c["stimuli_factor_per_layer"] == pytest.approx(4.0)
    assert c["gain_snr_ratio"] == pytest.approx(2.0) and d["auc"]["gain_layer"] == 2
    assert c["centroid_precision_ratio"] == pytest.approx(2.0, rel=0.15)     # the half-max threshold: not linear


def test_bootstrap_profiles_name_a_metric_the_label_lacks(grids):
    base, _ = grids
    with pytest.raises(KeyError, match="no metric 'auc' for the continuous label 'cont0'"):
        base.bootstrap_profiles("cont0", "resid_pre", "auc")
