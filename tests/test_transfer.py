"""probekit.probes.transfer: train on one set, test on a disjoint one."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probekit.core.activations import COMPONENTS, ActivationSet
from probekit.probes.grid import ProbeInputError
from probekit.probes.transfer import TRANSFER_COLUMNS, transfer_scores

N_LAYERS, D = 4, 48


def _sets(seed=0, n_a=60, n_b=90, frames_a=2, signal=(0.0, 0.0, 2.0, 2.0)):
    """Noun sets A (``frames_a`` rows per noun), A' (the same nouns, one fresh row each) and B (other
    nouns). 'shared': one direction, the same in every set, carrying the label from layer 2 on.
    'specific': carried only by each noun's own private direction (a probe can learn the train nouns,
    nothing carries over to new nouns). 'rating': continuous, shared direction."""
    rng = np.random.default_rng(seed)
    d_shared, d_rating = rng.standard_normal((2, D)) / np.sqrt(D) * 4

    def nouns(n):
        return {"shared": rng.permutation(np.arange(n) % 2), "specific": rng.permutation(np.arange(n) % 2),
                "rating": rng.uniform(1, 7, n), "words": rng.standard_normal((n, D)),
                "private": rng.standard_normal((n, D)) / np.sqrt(D) * 3}

    def make(nn, tag, frames):
        n = len(nn["shared"])
        w = np.repeat(np.arange(n), frames)
        arrays = {}
        for l in range(N_LAYERS):
            for c in COMPONENTS:
                X = nn["words"][w] + 0.5 * rng.standard_normal((len(w), D))
                X += signal[l] * (2 * nn["shared"][w] - 1)[:, None] * d_shared[None, :]
                X += signal[l] * ((nn["rating"][w] - 4) / 2)[:, None] * d_rating[None, :]
                X += (2 * nn["specific"][w] - 1)[:, None] * nn["private"][w]
                arrays[(l, c)] = X.astype(np.float32)
        stim = pd.DataFrame({"text": [f"A {tag}{i} ({k})" for i, k in zip(w, np.tile(np.arange(frames), n))],
                             "target": [f"{tag}{i}" for i in w], "group": [f"{tag}{i}" for i in w],
                             "shared": nn["shared"][w], "specific": nn["specific"][w], "rating": nn["rating"][w]})
        stim.attrs["labels"] = {"shared": {"kind": "binary", "role": "semantic"},
                                "specific": {"kind": "binary", "role": "semantic"},
                                "rating": {"kind": "continuous", "role": "semantic", "range": [1, 7]}}
        return ActivationSet.from_arrays(arrays, stim, model_name="synthetic")

    na, nb = nouns(n_a), nouns(n_b)
    return make(na, "a", frames_a), make(na, "a", 1), make(nb, "b", 1)


def _two_sets(seed=0):
    a, _, b = _sets(seed)
    return a, b


def test_transfer_table_and_planted_features():
    a, b = _two_sets()
    t = transfer_scores(a, b)
    assert list(t.columns) == TRANSFER_COLUMNS
    assert len(t) == N_LAYERS * len(COMPONENTS) * 3 * 2          # 3 labels x 2 metrics
    assert (t.n_train == 120).all() and (t.n_test == 90).all()
    ba = t[t.metric == "balanced_accuracy"].set_index(["label", "layer", "component"]).value
    r = t[t.metric == "r"].set_index(["layer", "component"]).value
    # the shared feature transfers where it is planted, and not before
    assert (ba.loc["shared"].loc[[2, 3]] > 0.9).all(), ba.loc["shared"]
    assert (ba.loc["shared"].loc[[0, 1]].between(0.3, 0.7)).all(), ba.loc["shared"]
    assert (r.loc[[2, 3]] > 0.8).all() and (r.loc[[0, 1]].abs() < 0.35).all()
    # the noun-specific feature does not transfer at any layer
    assert ba.loc["specific"].between(0.3, 0.7).all(), ba.loc["specific"]
    chance = t[t.metric == "balanced_accuracy"].chance
    assert (chance == 0.5).all()
    assert (t[t.kind == "continuous"].chance == 0).all()


def test_noun_specific_feature_is_decodable_within_set():
    """The 'specific' label is not noise: a probe fitted and tested on the same nouns recovers it
    (so its failure to transfer is the point, not an artefact of the generator)."""
    a, a_new, b = _sets()
    same = transfer_scores(a, a_new, labels=["specific"], layers=[0], components=["resid_pre"])
    other = transfer_scores(a, b, labels=["specific"], layers=[0], components=["resid_pre"])
    assert same[same.metric == "balanced_accuracy"].value.iloc[0] > 0.8
    assert 0.3 < other[other.metric == "balanced_accuracy"].value.iloc[0] < 0.7


def test_same_solver_as_probe_grid():
    """Transfer to the training set itself = in-sample fit of the grid's ridge (sanity of the wiring):
    sklearn RidgeClassifier with the chosen alpha and a StandardScaler gives the same predictions."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler
    a, b = _two_sets(seed=3)
    t = transfer_scores(a, b, labels=["shared"], layers=[2], components=["mlp_out"])
    row = t[t.metric == "balanced_accuracy"].iloc[0]
    Xa, Xb = a.get(2, "mlp_out"), b.get(2, "mlp_out")
    sc = StandardScaler().fit(Xa)
    clf = RidgeClassifier(alpha=row.alpha).fit(sc.transform(Xa), a.stimuli.shared)
    ref = balanced_accuracy_score(b.stimuli.shared, clf.predict(sc.transform(Xb)))
    assert row.value == pytest.approx(ref, abs=0.02)


def test_bad_inputs_are_refused():
    a, b = _two_sets()
    with pytest.raises(ProbeInputError, match="one model"):
        small = ActivationSet.from_arrays({k: v[:, :10] for k, v in b._arrays.items()}, b.stimuli,
                                          model_name="synthetic")
        transfer_scores(a, small)
    with pytest.raises(ProbeInputError, match="out of range"):
        transfer_scores(a, b, layers=[9])
    with pytest.raises(ProbeInputError, match="unknown components"):
        transfer_scores(a, b, components=["resid_post"])
    with pytest.raises(ProbeInputError, match="missing"):
        transfer_scores(a, b, labels=["nope"])
    one = a.stimuli.copy()
    one["shared"] = 1
    one.attrs = a.stimuli.attrs
    with pytest.raises(ProbeInputError, match="one class"):
        transfer_scores(ActivationSet.from_arrays(a._arrays, one, model_name="synthetic"), b, labels=["shared"])


def test_missing_values_are_left_out():
    a, b = _two_sets()
    st = b.stimuli.copy()
    st.attrs = b.stimuli.attrs
    st["shared"] = st["shared"].astype(float)
    st.loc[:9, "shared"] = np.nan
    b2 = ActivationSet.from_arrays(b._arrays, st, model_name="synthetic")
    t = transfer_scores(a, b2, labels=["shared", "rating"], layers=[3])
    assert (t[t.label == "shared"].n_test == 80).all() and (t[t.label == "rating"].n_test == 90).all()
    assert (t[(t.label == "shared") & (t.metric == "balanced_accuracy")].value > 0.9).all()
