"""probekit.profiles.metrics: the summaries and decision primitives, including their error rates."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from probekit.profiles import metrics as P
from probekit.profiles import simulate as sim

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
profile = arrays(np.float64, st.integers(3, 40), elements=finite)


@given(profile)
def test_peak_layer_is_first_argmax(v):
    p = P.peak_layer(v)
    assert v[p] == v.max() and (v[:p] < v.max()).all()


def _observed(truth, sd=0.02, rho=0.6, seed=0, kappa=1.0, n_boot=500):
    return sim.observe(truth, sd, np.random.default_rng(seed), rho=rho, kappa_true=kappa, n_boot=n_boot)


def test_simultaneous_band_covers_the_whole_truth_95_percent_of_the_time():
    truth = sim.bump(40, 0.4, 0.1, 0.1)
    cover = []
    for seed in range(200):
        v, reps = _observed(truth, seed=seed)
        b = P.simultaneous_band(v, reps)
        cover.append(bool(np.all((b.lo <= truth) & (truth <= b.hi))))
    # the percentile band of replicates around the observation: ~95% simultaneous coverage
    assert np.mean(cover) >= 0.9
    # pointwise intervals (c = 1.96) would cover far less often: the band is wider than that
    assert b.c > 2.2


def test_peak_summary_locates_a_planted_peak_and_bounds_its_gain():
    truth = sim.bump(30, 0.5, 0.08, 0.15)
    v, reps = _observed(truth, seed=1)
    ps = P.peak_summary(v, reps)
    assert abs(ps.layer - 15) <= 2 and ps.set_low <= 15 <= ps.set_high
    assert ps.gain_lo > 0.05 and ps.gain_lo <= ps.gain <= ps.gain_hi


def test_peak_gain_of_a_flat_profile_is_not_significant_despite_the_max_over_layers():
    # the naive bound (gain at the argmax layer minus its own pointwise spread) clears 0 far more often
    naive, ours = [], []
    for seed in range(150):
        v, reps = _observed(np.full(30, 0.5), seed=seed, rho=0.3)
        ps = P.peak_summary(v, reps)
        ours.append(ps.gain_lo > 0)
        g = reps[:, ps.gain_layer] - reps[:, 0]
        naive.append(v[ps.gain_layer] - v[0] - 1.96 * g.std() > 0)
    assert np.mean(ours) <= 0.06 and np.mean(naive) > 2 * np.mean(ours) + 0.05


def test_depth_centroid_sits_at_a_single_hump_and_is_nan_without_gain():
    for c in (0.2, 0.5, 0.7):
        assert P.depth_centroid(sim.bump(80, c, 0.05, 0.2)) == pytest.approx(c, abs=0.02)
    assert np.isnan(P.depth_centroid(np.linspace(1, 0, 20)))            # nothing above layer 0
    two = P.depth_centroid(sim.bump(80, 0.2, 0.04, 0.2) + sim.bump(80, 0.6, 0.04, 0.2, base=0))
    assert 0.3 < two < 0.5                                              # between two equal humps


def test_depth_difference_orders_planted_peaks_and_not_identical_ones():
    a, b = sim.bump(28, 0.45, 0.08, 0.15), sim.bump(28, 0.15, 0.08, 0.15)
    va, ra = _observed(a, seed=3)
    vb, rb = _observed(b, seed=4)
    dd = P.depth_difference(va, ra, vb, rb)
    assert dd.ci_low > 0 and dd.difference == pytest.approx(0.3, abs=0.08)
    vb2, rb2 = _observed(a, seed=5)
    same = P.depth_difference(va, ra, vb2, rb2)
    assert same.ci_low < 0 < same.ci_high


def test_double_peak_from_band_needs_a_valley_below_both_peaks():
    lo = np.array([0, .5, 0, 0, .5, 0], float)
    hi = lo + 0.1
    hi[2] = 0.3
    d = P.double_peak_from_band(lo, hi, min_separation=2)
    assert d.found and (d.first, d.valley, d.second) == (1, 3, 4) and d.margin == pytest.approx(0.4)
    hi[2] = hi[3] = 0.6                          # the valley's upper bound reaches the peaks' lower bounds
    assert not P.double_peak_from_band(lo, hi, 2).found
    assert not P.double_peak_from_band(lo, lo + 0.1, min_separation=4).found     # peaks too close


@given(arrays(np.float64, st.integers(5, 40), elements=st.floats(0, 1)), st.floats(0, 0.2))
def test_no_unimodal_profile_inside_its_band_is_a_double_peak(raw, half):
    # any unimodal truth lying inside the band makes a double peak impossible: the rule's error bound
    v = np.sort(raw)
    k = len(v) // 2
    f = np.concatenate([v[:k], np.sort(raw[k:])[::-1]]) if len(v) > 2 else v
    assert not P.double_peak_from_band(f - half, f + half, 2).found


def test_double_peak_rule_controls_false_positives_at_80_layers():
    truth = sim.bump(80, 0.35, 0.15, 0.15)
    found = [P.double_peak(*_observed(truth, seed=s, kappa=1.0), min_separation=10).found for s in range(100)]
    assert np.mean(found) <= 0.06
    two = sim.CHANCE + 0.25 * (np.exp(-0.5 * ((np.arange(80) / 80 - 0.175) / 0.04) ** 2)
                               + np.exp(-0.5 * ((np.arange(80) / 80 - 0.36) / 0.04) ** 2))
    d = P.double_peak(*_observed(two, seed=0), min_separation=10)
    assert d.found and 10 <= d.first <= 18 and 25 <= d.second <= 33


def test_anti_persistence_statistics():
    zig = np.array([0, 1] * 20, float)
    assert P.anti_persistence(zig) == pytest.approx(-1.0, abs=0.06)
    rng = np.random.default_rng(0)
    assert np.mean(P.anti_persistence(rng.standard_normal((400, 80)), axis=1)) == pytest.approx(-0.5, abs=0.03)


def test_anti_persistence_pivot_is_calibrated_and_has_power():
    rng = np.random.default_rng(1)
    fp = [P.anti_persistence_test(sim.bump(40, 0.5, 0.2, 0.2) + 0.02 * rng.standard_normal(40), n_sim=2000).p_value
          < 0.05 for _ in range(300)]
    assert np.mean(fp) <= 0.08                       # the old fixed-trend surrogate null rejected 13.6% here
    zz = [P.anti_persistence_test(sim.bump(40, 0.5, 0.2, 0.2) + 0.02 * sim.ar_noise(40, -0.6, rng),
                                  n_sim=2000).p_value < 0.05 for _ in range(100)]
    assert np.mean(zz) > 0.5
    with pytest.raises(ValueError, match="at least 7"):
        P.anti_persistence_test(np.zeros(5))


def test_bad_input():
    with pytest.raises(ValueError):
        P.peak_layer([])
    with pytest.raises(ValueError, match="replicates"):
        P.simultaneous_band(np.zeros(5), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="same number"):
        P.depth_difference(np.zeros(5), np.zeros((30, 5)), np.zeros(5), np.zeros((40, 5)))


def test_one_interval_level_in_the_code():
    """The interval level is one setting (``stats.LEVEL``): no module writes its own 95% quantiles."""
    import re
    from pathlib import Path

    import probekit
    from probekit.probes import stats
    assert stats.central() == (0.025, 0.975) and P.LEVEL is stats.LEVEL
    root = Path(probekit.__file__).parent
    bad = [f"{f.relative_to(root)}:{i}: {line.strip()}" for f in sorted(root.rglob("*.py"))
           for i, line in enumerate(f.read_text().splitlines(), 1)
           if re.search(r"\b0\.(025|975)\b|level: float = 0\.95", line)]
    assert not bad, "\n".join(bad)


def test_cross_consistency_sees_a_shared_zigzag_and_holds_its_size_under_independent_noise():
    rng = np.random.default_rng(7)
    trend = np.linspace(0.5, 0.7, 20)
    shared = 0.02 * (-1.0) ** np.arange(20)
    hit = P.cross_consistency(trend + shared + 0.01 * rng.standard_normal((4, 20)))
    assert hit.r > hit.null_hi and hit.p_value < 0.01
    ps = [P.cross_consistency(trend + 0.02 * rng.standard_normal((4, 20))).p_value for _ in range(300)]
    assert np.mean(np.array(ps) < 0.05) < 0.09          # 300 draws at an exact 5%: ~0.05 +- 0.013
    with pytest.raises(ValueError, match="2 experiments"):
        P.cross_consistency(np.zeros((1, 20)))


def test_unimodal_fit_is_the_least_squares_unimodal_profile():
    from scipy.optimize import isotonic_regression as iso
    rng = np.random.default_rng(3)
    for t in range(30):
        v = rng.normal(size=15) + 2 * np.sin(np.arange(15) / 2.5) * (t % 2)
        w = rng.uniform(0.5, 2, 15)
        f = P.unimodal_fit(v, w)
        d = np.diff(f)
        k = int(np.argmax(f))
        assert np.all(d[:k] >= -1e-12) and np.all(d[k:] <= 1e-12)          # rises, then falls
        brute = min(np.sum(w * (v - np.concatenate([iso(v[:m], weights=w[:m]).x if m else v[:0],
                                                   iso(v[m:], weights=w[m:], increasing=False).x
                                                   if m < 15 else v[:0]])) ** 2) for m in range(16))
        assert np.sum(w * (v - f) ** 2) == pytest.approx(brute, abs=1e-9)
    assert np.allclose(P.unimodal_fit(np.array([0, 1, 3, 2, 1.0])), [0, 1, 3, 2, 1])      # already unimodal


def test_dips_is_the_deepest_valley_between_two_peaks():
    x = np.array([[0, .5, .1, .2, .4, 0], [0, 1, 2, 3, 2, 1]], float)
    d = P.dips(x, 2)
    assert d[0] == pytest.approx(0.4 - 0.1) and d[1] <= 0       # a run up then down has no valley
    assert P.dips(x[:1], 3)[0] == pytest.approx(0.4 - 0.1)     # the peaks at layers 1 and 4: 3 apart
    assert P.dips(x[:1], 4)[0] <= 0.0                           # they may not pair any more


def _two_peaks(L, dip):
    from probekit.studies.bogdan2025.claims import _truth
    return _truth(("two_bumps", 14 / 80, 29 / 80, 0.05, dip), L, None, {})[0]


def test_dip_test_rejects_a_planted_double_peak_and_not_a_unimodal_profile():
    """At 80 layers, sd 0.02 and the truth's noise 1.5x the bootstrap's (the study's inflation 1.5): a valley
    0.20 below the lower peak is found in nearly every draw; a single bump (the null) rarely, never more than
    the test's 5% allows; the peaks found sit at the planted layers."""
    two, one = _two_peaks(80, 0.20), sim.bump(80, 0.35, 0.15, 0.15)
    hits, false = [], []
    for s in range(20):
        t = P.dip_test(*_observed(two, seed=s, kappa=1.5), min_separation=10, inflation=1.5)
        hits.append(t.rejected)
        if t.rejected:
            assert 10 <= t.first <= 18 and 25 <= t.second <= 33 and t.first < t.valley < t.second
        n = P.dip_test(*_observed(one, seed=100 + s, kappa=1.5), min_separation=10, inflation=1.5)
        false.append(n.rejected)
        assert 0 < n.p <= 1 and (n.p <= 0.05 or not n.rejected)
    assert np.mean(hits) >= 0.85 and np.mean(false) <= 0.1
    # without inflation the same null noise (1.5x the bootstrap's) makes the test reject far more often
    loose = [P.dip_test(*_observed(np.full(80, sim.CHANCE), seed=200 + s, kappa=3.0), 10, inflation=1.0).rejected
             for s in range(20)]
    assert np.mean(loose) >= 0.3


def test_one_sided_gain_bound_is_tighter_than_the_two_sided_band():
    v, r = _observed(sim.bump(28, 0.2, 0.08, 0.05), seed=1)
    g, lo1, layer = P.gain_lower_bound(v, r, inflation=1.5)
    ps = P.peak_summary(v, r, inflation=1.5)
    assert g == pytest.approx(ps.gain) and layer == ps.gain_layer and ps.gain_lo < lo1 < g
    c, lo, hi = P.depth_interval(v, r, inflation=1.5, one_sided=True)
    c2, lo2, hi2 = P.depth_interval(v, r, inflation=1.5)
    assert c == c2 and lo2 < lo < c < hi < hi2
