"""probekit.profiles: property tests of the profile metrics."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from probekit import profiles as P

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
profile = arrays(np.float64, st.integers(3, 40), elements=finite)


@given(profile)
def test_peak_layer_is_first_argmax(v):
    p = P.peak_layer(v)
    assert v[p] == v.max() and (v[:p] < v[p]).all()


@given(st.integers(0, 100), st.integers(1, 100))
def test_normalized_depth(layer, n):
    assert P.normalized_depth(layer, n) == layer / n


@given(profile)
@settings(max_examples=200)
def test_prominence_matches_scipy_for_interior_peaks(v):
    from scipy.signal import find_peaks as sp_find, peak_prominences
    ours = P.find_peaks(v)
    sp, _ = sp_find(v)
    assert [p.layer for p in ours] == list(sp)
    if len(sp):
        np.testing.assert_allclose([p.prominence for p in ours], peak_prominences(v, sp)[0])
    for p in ours:
        assert p.prominence > 0


@given(arrays(np.float64, st.integers(3, 40), elements=st.integers(-100, 100).map(float)),
       st.integers(-50, 50), st.sampled_from([0.25, 0.5, 1.0, 2.0, 8.0]))
def test_peaks_invariant_to_affine_maps(v, shift, scale):
    # integer-valued profiles and power-of-two scales: the map is exact in floating point
    a = P.find_peaks(v)
    b = P.find_peaks(v * scale + shift)
    assert [p.layer for p in a] == [p.layer for p in b]
    np.testing.assert_allclose([p.prominence * scale for p in a], [p.prominence for p in b], rtol=1e-6, atol=1e-6)


@given(profile)
def test_edge_peaks(v):
    with_edges = {p.layer for p in P.find_peaks(v, include_edges=True)}
    without = {p.layer for p in P.find_peaks(v)}
    assert without <= with_edges
    for p in with_edges - without:       # extra peaks sit on a plateau touching an edge
        assert (v[:p + 1] == v[p]).all() or (v[p:] == v[p]).all()
    if v[0] > v[1]:
        assert 0 in with_edges


def _bump(L, c, h, w):
    x = np.arange(L)
    return h * np.exp(-0.5 * ((x - c) / w) ** 2)


def test_double_peak_found_and_located():
    L = 80
    v = 0.55 + _bump(L, 14, 0.3, 3) + _bump(L, 29, 0.3, 4)
    half = np.full(L, 0.02)
    d = P.double_peak(v, v - half, v + half)
    assert d.found and abs(d.first - 14) <= 1 and abs(d.second - 29) <= 1 and 16 < d.valley < 27


def test_double_peak_needs_valley_below_both_cis():
    L = 40
    v = 0.6 + _bump(L, 10, 0.1, 2) + _bump(L, 25, 0.1, 2)
    narrow = np.full(L, 0.01)
    wide = np.full(L, 0.06)   # prominence 0.1 > half-width 0.06, but valley CI overlaps peaks' CIs
    assert P.double_peak(v, v - narrow, v + narrow).found
    assert not P.double_peak(v, v - wide, v + wide).found


@given(arrays(np.float64, st.integers(5, 30), elements=st.floats(0, 1)), st.floats(0.001, 0.5))
def test_double_peak_properties(v, hw):
    lo, hi = v - hw, v + hw
    d = P.double_peak(v, lo, hi)
    if d.found:
        assert d.first < d.valley < d.second
        assert hi[d.valley] < min(lo[d.first], lo[d.second])
        sig = {p.layer for p in P.significant_peaks(v, lo, hi)}
        assert {d.first, d.second} <= sig
    # a single-peaked (unimodal) profile never has a double peak
    u = np.sort(v)
    assert not P.double_peak(np.concatenate([u, u[::-1]]), np.concatenate([u, u[::-1]]) - hw,
                             np.concatenate([u, u[::-1]]) + hw).found


def test_anti_persistence_of_known_series():
    zig = np.array([0, 1] * 10, dtype=float)
    assert P.anti_persistence(zig) == pytest.approx(-1.0, abs=0.06)
    assert P.anti_persistence(np.arange(20.0) ** 2) > 0.5


def test_white_noise_differences_have_rho_minus_half():
    rng = np.random.default_rng(0)
    rhos = [P.anti_persistence(rng.standard_normal(80)) for _ in range(400)]
    assert np.mean(rhos) == pytest.approx(-0.5, abs=0.03)


@given(st.integers(0, 10_000))
@settings(max_examples=15, deadline=None)
def test_anti_persistence_null_is_calibrated_for_noise(seed):
    rng = np.random.default_rng(seed)
    L = 60
    trend = 0.6 + 0.2 * np.sin(np.linspace(0, 3, L))
    t = P.anti_persistence_test(trend + 0.02 * rng.standard_normal(L), n_surrogates=300, seed=seed)
    # white-noise differences alone give -0.5; the surrogates keep the trend's own (persistent)
    # differences, which pull the null's mean up (seen down to -0.30 on this trend)
    assert -0.65 < t.null_mean < -0.2
    assert 0 < t.p_value <= 1


def test_anti_persistence_test_rejects_true_zigzag_and_false_alarm_rate():
    rng = np.random.default_rng(1)
    L = 60
    trend = np.linspace(0.5, 0.8, L)
    zig = trend + 0.03 * np.array([1, -1] * (L // 2)) + 0.005 * rng.standard_normal(L)
    assert P.anti_persistence_test(zig, n_surrogates=500).p_value < 0.01
    # pure noise around a trend: rejections at 0.05 near 5%
    rej = [P.anti_persistence_test(trend + 0.03 * rng.standard_normal(L), n_surrogates=200, seed=i).p_value < 0.05
           for i in range(200)]
    assert np.mean(rej) < 0.1


def test_anti_persistence_layer_range():
    v = np.concatenate([np.linspace(0, 1, 20), 1 + 0.1 * np.array([1, -1] * 10)])
    t = P.anti_persistence_test(v, n_surrogates=200, layers=(20, 40))
    assert t.layers == (20, 40) and t.rho < -0.8


@given(st.integers(0, 1000))
@settings(max_examples=10, deadline=None)
def test_peak_order(seed):
    rng = np.random.default_rng(seed)
    L = 20
    a = _bump(L, 12, 0.3, 2)[None] + 0.01 * rng.standard_normal((200, L))
    b = _bump(L, 4, 0.3, 2)[None] + 0.01 * rng.standard_normal((200, L))
    o = P.peak_order(a, L, b, L)
    assert o.a_deeper and o.difference == pytest.approx(8 / L) and o.p_a_deeper == 1.0
    r = P.peak_order(b, L, a, L)
    assert not r.a_deeper and r.ci_high < 0


def test_bad_input():
    with pytest.raises(ValueError):
        P.peak_layer([np.nan, np.nan])
    with pytest.raises(ValueError):
        P.anti_persistence_test([1, 2, 3])
    with pytest.raises(ValueError):
        P.peak_order(np.zeros((10, 5)), 5, np.zeros((11, 5)), 5)


def test_double_peak_min_separation():
    v = np.array([0.5, 0.6, 0.9, 0.6, 0.9, 0.6, 0.5])
    hw = np.full(7, 0.02)
    assert P.double_peak(v, v - hw, v + hw).found
    assert not P.double_peak(v, v - hw, v + hw, min_separation=3).found


def test_short_profiles_get_a_real_surrogate_null():
    """9 layers (the back half of an 18-layer model): the trend must not interpolate the data."""
    rng = np.random.default_rng(3)
    for n in (5, 7, 9, 12):
        v = np.linspace(0.5, 0.8, n) + 0.03 * rng.standard_normal(n)
        resid = v - P.smooth_trend(v)
        assert np.abs(resid).max() > 1e-6, n
        t = P.anti_persistence_test(v, n_surrogates=500)
        assert t.null_sd > 0 and t.p_value < 1.0, (n, t)
