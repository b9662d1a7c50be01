"""Held-out transfer: train a probe on one stimulus set, test it on another.

A layer profile from group cross-validation can reflect the feature or the
particular nouns of the set (a probe can learn "these 50 words are animals"
without a direction that generalises). :func:`transfer_scores` fits the probe on
every row of one :class:`~probekit.core.activations.ActivationSet` (e.g. ``items``)
and scores it on every row of another (e.g. ``items_heldout``, nouns disjoint
from ``items``), per layer and component.

The estimator is exactly the grid's ``estimator="fast"`` probe
(:func:`probekit.probes.grid.fold_grams` + :func:`probekit.probes.grid.ridge_oof` with one
"fold" = train set -> test set): features standardised with the training set's
mean and SD, ridge on +-1 targets for binary labels (LS-SVM, class = score > 0)
and on the rating for continuous ones, alpha chosen by exact leave-one-out on the
training set only. Nothing is fitted on the test set.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from probekit.probes import stats
from probekit.probes.grid import DEFAULT_ALPHAS, ProbeInputError, load_matrix, fold_grams, ridge_oof

TRANSFER_COLUMNS = ["layer", "component", "label", "kind", "metric", "value", "chance", "alpha",
                    "n_train", "n_test"]


def _label_kind(name: str, a_spec: dict | None, y_train: np.ndarray) -> str:
    if a_spec and a_spec.get("kind") in ("binary", "continuous"):
        return a_spec["kind"]
    vals = set(np.unique(y_train[~np.isnan(y_train)]).tolist())
    return "binary" if vals <= {0.0, 1.0} else "continuous"


def shared_labels(train_stimuli: pd.DataFrame, test_stimuli: pd.DataFrame) -> list[str]:
    """Semantic labels declared (same kind) in both sets' ``attrs['labels']``, in the train set's order."""
    a = train_stimuli.attrs.get("labels", {})
    b = test_stimuli.attrs.get("labels", {})
    return [k for k, s in a.items() if s.get("role", "semantic") == "semantic" and k in b
            and b[k].get("kind") == s.get("kind") and k in train_stimuli.columns and k in test_stimuli.columns]


def transfer_scores(train, test, labels: Sequence[str] | None = None, *, layers: Sequence[int] | None = None,
                    components: Sequence[str] | None = None, alphas=DEFAULT_ALPHAS) -> pd.DataFrame:
    """Per layer x component x label: train the probe on ``train``, score it on ``test``.

    ``train`` / ``test``: :class:`~probekit.core.activations.ActivationSet` of the SAME model (same
    ``n_layers`` and ``d_model``), e.g. ``items`` and ``items_heldout``. ``labels``: default the
    semantic labels both sets declare with the same kind (:func:`shared_labels`). Rows with a
    missing label value are left out for that label (in either set).

    Returns a tidy DataFrame with columns :data:`TRANSFER_COLUMNS`: binary labels get
    ``accuracy`` and ``balanced_accuracy`` (chance: majority rate of the test set, 0.5),
    continuous ones ``r`` and ``r2`` (chance 0); ``alpha`` is the ridge penalty chosen by
    leave-one-out on the training set.
    """
    labels, layers, components = _checked_request(train, test, labels, layers, components)
    plan = _label_plan(labels, train.stimuli, test.stimuli)
    # labels sharing their row sets share one Gram per cell
    by_rows: dict[tuple, list] = {}
    for p in plan:
        by_rows.setdefault((p[2].tobytes(), p[3].tobytes()), []).append(p)
    out = []
    for layer in layers:
        for comp in components:
            Xa = load_matrix(train, layer, comp, len(train.stimuli))
            Xb = load_matrix(test, layer, comp, len(test.stimuli))
            for group in by_rows.values():
                out += _transfer_rows(layer, comp, Xa, Xb, group, alphas)
    return pd.DataFrame(out, columns=TRANSFER_COLUMNS)


def _checked_request(train, test, labels, layers, components) -> tuple[list, list, list]:
    """The labels, layers and components to score, checked against the two sets (one model, columns present,
    layers in range, known components); refused with :class:`ProbeInputError` before any fit."""
    if train.n_layers != test.n_layers or train.d_model != test.d_model:
        raise ProbeInputError(
            f"transfer needs activations of one model: train {train.model_name!r} has {train.n_layers} layers x "
            f"{train.d_model}, test {test.model_name!r} has {test.n_layers} x {test.d_model}")
    if train.model_name != test.model_name:
        raise ProbeInputError(f"transfer needs activations of one model, got {train.model_name!r} (train) and "
                              f"{test.model_name!r} (test)")
    stim_a, stim_b = train.stimuli, test.stimuli
    labels = list(labels) if labels is not None else shared_labels(stim_a, stim_b)
    if not labels:
        raise ProbeInputError("no label to transfer: the two sets declare no common semantic label "
                              "(pass labels=[...])")
    missing = [(l, w) for l in labels for w, st in (("train", stim_a), ("test", stim_b)) if l not in st.columns]
    if missing:
        raise ProbeInputError(f"label column(s) missing: {missing}")
    layers = list(train.layers) if layers is None else [int(l) for l in layers]
    bad = [l for l in layers if not 0 <= l < train.n_layers]
    if bad:
        raise ProbeInputError(f"layers {bad} out of range 0..{train.n_layers - 1}")
    components = list(components or train.components)
    unknown = [c for c in components if c not in train.components]
    if unknown:
        raise ProbeInputError(f"unknown components {unknown}; expected some of {train.components}")
    return labels, layers, components


def _label_plan(labels, stim_a: pd.DataFrame, stim_b: pd.DataFrame) -> list[tuple]:
    """Per label ``(label, kind, train rows, test rows, train values, test values)``: the rows with a value,
    the kind (declared, else read from the values), a binary label's 0/1 values and two train classes checked."""
    specs_a = stim_a.attrs.get("labels", {})
    plan = []
    for lab in labels:
        ya = pd.to_numeric(stim_a[lab], errors="coerce").to_numpy(np.float64)
        yb = pd.to_numeric(stim_b[lab], errors="coerce").to_numpy(np.float64)
        ra, rb = np.flatnonzero(~np.isnan(ya)), np.flatnonzero(~np.isnan(yb))
        kind = _label_kind(lab, specs_a.get(lab), ya[ra])
        if kind == "binary":
            for w, y in (("train", ya[ra]), ("test", yb[rb])):
                if not set(np.unique(y).tolist()) <= {0.0, 1.0}:
                    raise ProbeInputError(f"binary label {lab!r} has values other than 0/1 in the {w} set")
            if len(np.unique(ya[ra])) < 2:
                raise ProbeInputError(f"binary label {lab!r}: the train set has only one class")
        if len(ra) < 3 or len(rb) < 1:
            raise ProbeInputError(f"label {lab!r}: {len(ra)} train / {len(rb)} test rows with a value")
        plan.append((lab, kind, ra, rb, ya[ra], yb[rb]))
    return plan


def _transfer_rows(layer: int, comp: str, Xa: np.ndarray, Xb: np.ndarray, group: list[tuple], alphas) -> list[dict]:
    """One cell, for labels that share their rows (``group``, from :func:`_label_plan`): one Gram, one ridge
    fit per label on the train rows, its metrics on the test rows."""
    ra, rb = group[0][2], group[0][3]
    X = np.concatenate([Xa[ra], Xb[rb]])
    folds = [(np.arange(len(ra)), np.arange(len(ra), len(ra) + len(rb)))]
    grams = fold_grams(X, folds)
    Yfit = np.column_stack([2 * y - 1 if kind == "binary" else y for _, kind, _, _, y, _ in group])
    # ridge_oof indexes Y by row over train + test; test rows are never read (NaN guards it)
    Yall = np.vstack([Yfit, np.full((len(rb), Yfit.shape[1]), np.nan)])
    pred, best = ridge_oof(grams, folds, Yall, alphas)
    out = []
    for j, (lab, kind, _, _, _, yb) in enumerate(group):
        mets = stats.column_metrics(kind, yb, pred[len(ra):, j])
        for metric in stats.metrics_for(kind):
            out.append({"layer": layer, "component": comp, "label": lab, "kind": kind,
                        "metric": metric, "value": float(mets[metric]),
                        "chance": float(stats.chance_level(kind, metric, yb)),
                        "alpha": float(np.ravel(alphas)[best[0, j]]),
                        "n_train": int(len(ra)), "n_test": int(len(rb))})
    return out


__all__ = ["transfer_scores", "shared_labels", "TRANSFER_COLUMNS"]
