"""probekit.probes.stats: metrics, group permutations, p-values, group bootstrap."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from probekit.probes import stats as S


def test_column_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, r2_score
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (50, 4))
    s = rng.standard_normal((50, 4))
    m = S.column_metrics("binary", y, s)
    for j in range(4):
        assert m["accuracy"][j] == pytest.approx(accuracy_score(y[:, j], s[:, j] > 0))
        assert m["balanced_accuracy"][j] == pytest.approx(balanced_accuracy_score(y[:, j], s[:, j] > 0))
    yc = rng.standard_normal(50)
    sc = yc + rng.standard_normal(50)
    mc = S.column_metrics("continuous", yc, sc)
    assert mc["r"] == pytest.approx(np.corrcoef(yc, sc)[0, 1])
    assert mc["r2"] == pytest.approx(r2_score(yc, sc))


@given(st.integers(0, 10_000), st.sampled_from(["binary", "continuous"]))
@settings(max_examples=30, deadline=None)
def test_weighted_metrics_with_unit_weights_equal_plain(seed, kind):
    rng = np.random.default_rng(seed)
    n = 30
    y = rng.integers(0, 2, n).astype(float) if kind == "binary" else rng.standard_normal(n)
    if kind == "binary":
        y[:2] = [0, 1]
    s = rng.standard_normal((n, 3))
    w = S.weighted_metrics(kind, y, s, np.ones((1, n)))
    p = S.column_metrics(kind, np.repeat(y[:, None], 3, 1), s)
    for k in p:
        np.testing.assert_allclose(w[k][0], p[k], rtol=1e-9, atol=1e-12)


def test_weighted_metrics_equal_duplicated_rows():
    rng = np.random.default_rng(1)
    y = rng.standard_normal(20)
    s = rng.standard_normal((20, 2))
    w = rng.integers(0, 3, 20).astype(float)
    wm = S.weighted_metrics("continuous", y, s, w[None])
    idx = np.repeat(np.arange(20), w.astype(int))
    pm = S.column_metrics("continuous", np.repeat(y[idx][:, None], 2, 1), s[idx])
    for k in pm:
        np.testing.assert_allclose(wm[k][0], pm[k])


@given(st.integers(0, 10_000), st.integers(2, 12), st.integers(1, 5))
@settings(max_examples=40, deadline=None)
def test_group_level_permutations_keep_groups_intact(seed, n_groups, size):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), size)
    y = rng.integers(0, 2, n_groups)[groups]
    P, scheme = S.group_permutations(y, groups, 20, rng)
    assert scheme == "across_groups"
    for b in range(P.shape[1]):
        assert S.is_group_level(P[:, b], groups)
        assert P[:, b].sum() == y.sum()          # equal group sizes: class counts kept


@given(st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_within_group_permutations_keep_group_label_mix(seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(6), 5)
    y = rng.integers(0, 2, 30)
    y[:2] = [0, 1]     # not group-level
    P, scheme = S.group_permutations(y, groups, 10, rng)
    assert scheme == "within_groups"
    for g in range(6):
        for b in range(10):
            assert sorted(P[groups == g, b]) == sorted(y[groups == g])


def test_type_control_labels_are_consistent_per_type():
    rng = np.random.default_rng(0)
    types = np.array(list("aabbbccddeeffgghh"))
    y = rng.integers(0, 2, len(types))
    C = S.type_control_labels(y, types, 7, rng)
    for b in range(7):
        assert len(np.unique(C[:, b])) == 2
        for t in np.unique(types):
            assert len(np.unique(C[types == t, b])) == 1


def test_type_control_labels_when_every_first_occurrence_has_one_label():
    """A senses-style set: every word appears with both senses, its first sense first. The first-occurrence
    labels are all 0, so permuting them gave a constant control (balanced accuracy NaN in every cell)."""
    rng = np.random.default_rng(0)
    types = np.repeat([f"w{i}" for i in range(20)], 2)
    y = np.tile([0, 1], 20)
    C = S.type_control_labels(y, types, 9, rng)
    for b in range(9):
        assert len(np.unique(C[:, b])) == 2
        for t in np.unique(types):
            assert len(np.unique(C[types == t, b])) == 1


def test_type_control_labels_of_mixed_types_are_not_their_first_occurrence():
    """20 types seen with labels [1, 0] (1 first) and 10 types always 0: a mixed type's control label must
    come from a random occurrence, so the number of 1-labelled types varies between draws (with the first
    occurrence it was always 20 of 30)."""
    rng = np.random.default_rng(1)
    types = np.r_[np.repeat(np.arange(20), 2), np.arange(20, 30)]
    y = np.r_[np.tile([1, 0], 20), np.zeros(10, int)]
    C = S.type_control_labels(y, types, 40, rng)
    ones = [len(np.unique(types[C[:, b] == 1])) for b in range(40)]
    assert len(set(ones)) > 3 and 7 <= np.mean(ones) <= 13     # Binomial(20, 1/2) types, not always 20


def test_pvalues():
    null = np.array([0.1, 0.2, 0.3, 0.4])
    assert S.perm_pvalue(0.35, null[:, None])[0] == pytest.approx(2 / 5)
    assert S.perm_pvalue(0.5, null[:, None])[0] == pytest.approx(1 / 5)
    nullg = np.zeros((4, 2, 3))
    nullg[:, 1, 2] = null
    obs = np.full((2, 3), 0.35)
    pf = S.maxstat_pvalue(obs, nullg)
    assert np.allclose(pf, 2 / 5)
    assert (pf >= S.perm_pvalue(obs, nullg)).all()   # FWER p never below the per-cell p


@given(st.integers(0, 10_000))
@settings(max_examples=20, deadline=None)
def test_maxstat_dominates_percell(seed):
    rng = np.random.default_rng(seed)
    null = rng.standard_normal((50, 4, 3))
    obs = rng.standard_normal((4, 3)) + 1
    assert (S.maxstat_pvalue(obs, null) >= S.perm_pvalue(obs, null) - 1e-12).all()


def test_group_bootstrap_weights_resample_whole_groups():
    groups = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    W = S.group_bootstrap_weights(groups, 200, 0)
    assert W.shape == (200, len(groups))
    for g in range(10):
        blk = W[:, groups == g]
        assert (blk == blk[:, :1]).all()           # members of a group share a weight
    # total group draws per replicate = number of groups
    _, first = np.unique(groups, return_index=True)
    assert (W[:, first].sum(1) == 10).all()
    np.testing.assert_array_equal(W, S.group_bootstrap_weights(groups, 200, 0))


def test_chance_levels():
    y = np.array([1, 1, 1, 0])
    assert S.chance_level("binary", "accuracy", y) == 0.75
    assert S.chance_level("binary", "balanced_accuracy", y) == 0.5
    assert S.chance_level("continuous", "r", y) == 0.0


def test_binomial_bounds():
    assert S.binomial_lower(0, 100) == 0.0
    assert S.binomial_lower(5, 100) < 0.05 < S.binomial_upper(5, 100)
    assert S.binomial_lower(12, 100) > 0.05


# (k, n): (one-sided 95% lower, upper) as computed before any change to these functions
BINOMIAL_PINNED = {(0, 10): (0.0, 0.2588655508930522), (10, 10): (0.7411344491069478, 1.0),
                   (1, 20): (0.002561378776530283, 0.2161061642068473),
                   (3, 60): (0.013765157568283046, 0.12418721047743608),
                   (0, 500): (0.0, 0.005973551516349557), (25, 500): (0.03499847873037866, 0.06913607724453699),
                   (500, 500): (0.9940264484836504, 1.0)}


@pytest.mark.parametrize("k,n", list(BINOMIAL_PINNED))
def test_binomial_bounds_are_unchanged_and_agree_with_scipy_binomtest(k, n):
    from scipy.stats import binomtest
    lo, hi = S.binomial_lower(k, n), S.binomial_upper(k, n)
    assert (lo, hi) == BINOMIAL_PINNED[(k, n)]                     # bit for bit: the claims' rules read these
    if k == 0:
        assert hi == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-12)  # the closed forms at the edges
    if k == n:
        assert lo == pytest.approx(0.05 ** (1 / n), rel=1e-12)
    less = binomtest(k, n, alternative="less").proportion_ci(confidence_level=0.95, method="exact")
    greater = binomtest(k, n, alternative="greater").proportion_ci(confidence_level=0.95, method="exact")
    assert hi == pytest.approx(less.high, abs=1e-11) and lo == pytest.approx(greater.low, abs=1e-11)
    assert less.low == 0.0 and greater.high == 1.0


@given(st.integers(0, 10_000))
@settings(max_examples=20, deadline=None)
def test_permutations_within_strata_keep_per_stratum_counts(seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(24), 2)
    strata = groups % 6                  # groups nested in 6 "folds"
    y = rng.integers(0, 2, 24)[groups]
    P, scheme = S.group_permutations(y, groups, 15, rng, strata=strata)
    assert scheme == "across_groups_within_strata"
    for b in range(15):
        assert S.is_group_level(P[:, b], groups)
        for s_ in range(6):
            assert P[strata == s_, b].sum() == y[strata == s_].sum()
    with pytest.raises(ValueError, match="nested"):
        S.group_permutations(y, groups, 2, rng, strata=np.arange(48) % 5)
