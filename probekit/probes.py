"""Per-layer linear probes over an :class:`~probekit.activations.ActivationSet`.

``probe_grid(acts)`` fits, for every label x layer x component ("cell"), a
linear probe with 6-fold group-structured cross-validation and returns
:class:`ProbeResults`: a tidy score table with bootstrap CIs, permutation
p-values (per cell and family-wise across the layer x component grid),
Hewitt & Liang control-task selectivity and a surface-feature baseline, plus the
out-of-fold predictions those numbers were computed from.

Estimators
----------
``estimator="fast"`` (default): ridge regression in dual (Gram) form.

* Continuous labels: ridge regression of the rating (the paper's estimator).
* Binary labels: the least-squares linear SVM (Suykens' LS-SVM, i.e. a ridge
  classifier on +-1 targets, sklearn's ``RidgeClassifierCV``); class =
  ``score > 0``.
* Features are standardised with the mean/SD of the training fold only (zero-SD
  features keep scale 1, as in ``StandardScaler``); an unpenalised intercept.
* The ridge penalty is chosen per label column and per outer fold by exact
  leave-one-out error on the training fold (closed form, the same criterion as
  ``RidgeCV``/``RidgeClassifierCV`` with ``cv=None``) over ``alphas``
  (default :data:`DEFAULT_ALPHAS` = 10^-2 ... 10^6, one per decade). As in
  ``Pipeline(StandardScaler(), RidgeCV())`` the scaler is fitted once on the
  outer training fold, not re-fitted inside the LOO.
* Per (cell, fold) the standardised training Gram matrix ``K = Z Z^T`` (n_train
  x n_train, n << d) is eigendecomposed once; every label, every alpha, every
  permutation and every control-task draw is then a matrix product (the ridge
  fit for a fixed alpha is linear in y, so label sets are just more columns of
  Y). LOO residuals: with ``K = U diag(l) U^T``, ``w = 1/(l + alpha)`` and the
  constant direction removed, ``G = U diag(w) U^T - 11^T/(n alpha)``,
  ``e_loo = G y_c / diag(G)``.

``estimator="svm"``: a literal hinge-loss linear SVM for binary labels, sklearn
``SVC(kernel="precomputed")`` on the same standardised linear Gram, with ``C``
chosen from ``C_grid`` by inner 3-fold GroupKFold accuracy on the training fold.
Continuous labels still use ridge. Permutations go through the same SVC loop
(slow: one SVC fit per column x fold x C).

Agreement (measured by ``benchmarks/perf/bench_probes.py``, same folds, the
grid's own label columns; guarded by the sklearn tests in ``tests/test_probes.py``):

* fast vs sklearn ``Pipeline(StandardScaler, RidgeClassifierCV(DEFAULT_ALPHAS))``
  / ``RidgeCV``: 0.00 pp accuracy and 0.0000 r difference on real SmolLM2-135M
  activations (``items``, 12 labels x 18 cells), and identical permutation
  p-values over 1272 columns (labels + permutations + control draws); 0.00 pp
  on synthetic data too (n=240, d=576, 8 labels x 18 cells, 848 columns);
* fast (LS-SVM) vs sklearn ``LinearSVC(C=1)`` (hinge, fixed C): mean |diff|
  2.6 pp, max 9.9 pp per cell (real, 7 binary labels x 18 cells); 2.4 / 9.2 pp
  (synthetic);
* fast vs ``estimator="svm"`` (hinge, C by inner CV): mean |diff| 4.0 pp,
  max 17 pp, r = 0.87 (72 cells, synthetic). On real SmolLM2-135M
  activations (``items``, n=354; 4 binary labels x 5 layers x 3 components)
  the agreement is closer: mean |diff| 1.2 pp, max 4.2 pp, r = 0.97, LS-SVM
  0.5 pp higher on average. Single cells can differ; profiles
  (and so peak locations) mostly agree. Use ``"svm"`` to check a claim that
  hinges on a few points of accuracy.

Cross-validation
----------------
Splits are seeded and identical for every cell of the grid. Labels that share
their CV group column and their set of non-missing rows share one split plan
(and therefore one Gram eigendecomposition per cell and fold): the plan uses
``StratifiedGroupKFold(shuffle=True, random_state=seed)`` stratified on the
joint pattern of its binary labels when it has any (labels are added to the
stratification key in order while every joint class keeps >= n_splits rows), else
``GroupKFold(shuffle=True, random_state=seed)``. ``stratify="per_label"`` gives
every binary label its own stratification (and plan) at proportional cost.
Rows whose label is NaN ("not applicable") are dropped for that label.

Metrics are computed on the pooled out-of-fold predictions (see
:mod:`probekit.stats`).
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import stats as S

# Bump when the solver's numbers can change (cached probe results are keyed on it).
# 2: float32 LOO residuals, Rayleigh correction only for small eigenvalues.
SOLVER_VERSION = 2
DEFAULT_ALPHAS: np.ndarray = np.logspace(-2, 6, 9)
DEFAULT_C_GRID: np.ndarray = np.logspace(-5, 0, 6)
SURFACE_COLUMNS: tuple[str, ...] = ("n_letters", "zipf", "n_target_tokens")
SCORE_COLUMNS: list[str] = ["label", "kind", "role", "layer", "depth", "component", "metric",
                            "value", "ci_low", "ci_high", "chance", "p_value", "p_fwer",
                            "control_value", "selectivity", "null_mean", "surface_baseline", "n"]


class ProbeInputError(ValueError):
    """Bad input to the probes (labels, groups, activations)."""


# ------------------------------------------------------------------ labels ---

@dataclass(frozen=True)
class LabelSpec:
    name: str
    kind: str                 # "binary" | "continuous"
    role: str = "semantic"    # "semantic" | "surface" | "control"
    group: str = "group"      # CV group column


def _infer_kind(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    return "binary" if len(v) and np.all(np.isin(v, (0, 1))) else "continuous"


def resolve_labels(stimuli: pd.DataFrame, labels=None) -> tuple[list[LabelSpec], pd.DataFrame]:
    """Turn the ``labels`` argument into specs and a float frame aligned with ``stimuli``.

    ``labels`` may be None (every label in ``stimuli.attrs["labels"]``), a name
    or list of names, a mapping ``name -> spec dict`` (values from the stimulus
    column of that name) or ``name -> array`` (values given; length must match),
    or a DataFrame of label columns (same length as the stimuli; its
    ``attrs["labels"]`` give the specs, else the kind is inferred).
    """
    n = len(stimuli)
    meta: Mapping[str, Any] = stimuli.attrs.get("labels", {}) or {}
    values: dict[str, np.ndarray] = {}
    specs: dict[str, dict] = {}

    def from_column(name: str, spec: Mapping | None):
        if name not in stimuli.columns:
            known = sorted(set(meta) | {c for c in stimuli.columns})
            raise KeyError(f"unknown label {name!r}; stimulus labels: {sorted(meta)}, columns: {known}")
        values[name] = pd.to_numeric(stimuli[name], errors="coerce").to_numpy(np.float64)
        specs[name] = dict(spec or meta.get(name, {}))

    if labels is None:
        if not meta:
            raise ProbeInputError("stimuli.attrs['labels'] is empty: pass labels=[...] explicitly")
        for name, spec in meta.items():
            from_column(name, spec)
    elif isinstance(labels, str):
        from_column(labels, None)
    elif isinstance(labels, pd.DataFrame):
        if len(labels) != n:
            raise ProbeInputError(f"label frame has {len(labels)} rows but the activations have {n} stimuli")
        lmeta = labels.attrs.get("labels", {}) or {}
        for name in labels.columns:
            if name in stimuli.columns and name not in lmeta and name not in meta and labels[name].dtype == object:
                continue
            values[name] = pd.to_numeric(labels[name], errors="coerce").to_numpy(np.float64)
            specs[name] = dict(lmeta.get(name, meta.get(name, {})))
    elif isinstance(labels, Mapping):
        for name, v in labels.items():
            if isinstance(v, Mapping) or v is None:
                from_column(name, v)
            else:
                arr = np.asarray(v, dtype=np.float64)
                if arr.ndim != 1 or len(arr) != n:
                    raise ProbeInputError(f"label {name!r} has {arr.shape[0] if arr.ndim else 0} values "
                                          f"but the activations have {n} stimuli")
                values[name] = arr
                specs[name] = dict(meta.get(name, {}))
    elif isinstance(labels, Iterable):
        for name in labels:
            if not isinstance(name, str):
                raise ProbeInputError(f"label names must be strings, got {name!r}")
            from_column(name, None)
    else:
        raise ProbeInputError(f"cannot interpret labels={labels!r}")

    out = []
    for name, spec in specs.items():
        y = values[name]
        if np.isinf(y).any():
            raise ProbeInputError(f"label {name!r} has infinite values")
        kind = spec.get("kind") or _infer_kind(y)
        if kind not in ("binary", "continuous"):
            raise ProbeInputError(f"label {name!r}: unknown kind {kind!r}")
        out.append(LabelSpec(name, kind, spec.get("role", "semantic"), spec.get("group", "group")))
    return out, pd.DataFrame(values, index=stimuli.index)


# ------------------------------------------------------------------ splits ---

@dataclass
class SplitPlan:
    """Rows used, their groups and the CV folds shared by a set of labels."""
    rows: np.ndarray                    # indices into the stimuli
    groups: np.ndarray                  # group ids of those rows
    folds: list[tuple[np.ndarray, np.ndarray]]   # (train, test) positions within rows
    labels: list[str]
    stratified_on: tuple[str, ...] = ()           # binary labels in the stratification key

    def fold_ids(self) -> np.ndarray:
        f = np.empty(len(self.rows), dtype=np.int16)
        for k, (_, te) in enumerate(self.folds):
            f[te] = k
        return f


def _check_label(spec: LabelSpec, y: np.ndarray, groups: np.ndarray, n_splits: int) -> None:
    name = spec.name
    if len(y) == 0:
        raise ProbeInputError(f"label {name!r} has no non-missing values")
    if spec.kind == "binary":
        if not np.all(np.isin(y, (0, 1))):
            raise ProbeInputError(f"binary label {name!r} must be 0/1, got values {np.unique(y)[:5]}")
        if len(np.unique(y)) < 2:
            raise ProbeInputError(f"binary label {name!r} has a single class ({int(y[0])}) "
                                  f"in all {len(y)} rows: nothing to classify")
    elif np.nanstd(y) == 0:
        raise ProbeInputError(f"continuous label {name!r} is constant ({y[0]}): nothing to regress")
    n_groups = len(np.unique(groups))
    if len(y) < n_splits:
        raise ProbeInputError(f"label {name!r}: {len(y)} stimuli is fewer than n_splits={n_splits}")
    if n_groups == 1:
        raise ProbeInputError(f"label {name!r}: group column {spec.group!r} puts all {len(y)} stimuli in "
                              f"one group; group CV needs at least n_splits={n_splits} groups")
    if n_groups < n_splits:
        raise ProbeInputError(f"label {name!r}: only {n_groups} groups in column {spec.group!r}, "
                              f"fewer than n_splits={n_splits}")


def make_plans(stimuli: pd.DataFrame, specs: Sequence[LabelSpec], Y: pd.DataFrame, n_splits: int,
               seed: int, stratify: str = "joint") -> list[SplitPlan]:
    """Group labels into split plans (see module docstring) and build their folds."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    keyed: dict[tuple, list[LabelSpec]] = {}
    for spec in specs:
        if spec.group not in stimuli.columns:
            raise ProbeInputError(f"label {spec.name!r}: group column {spec.group!r} not in stimuli "
                                  f"(columns: {list(stimuli.columns)})")
        y = Y[spec.name].to_numpy()
        mask = np.isfinite(y)
        groups = stimuli[spec.group].to_numpy()[mask]
        _check_label(spec, y[mask], groups, n_splits)
        key = (spec.group, mask.tobytes())
        if stratify == "per_label" and spec.kind == "binary":
            key = key + (spec.name,)
        keyed.setdefault(key, []).append(spec)

    plans = []
    for (gcol, mbytes, *_), lspecs in keyed.items():
        mask = np.frombuffer(mbytes, dtype=bool)
        rows = np.flatnonzero(mask)
        groups = stimuli[gcol].to_numpy()[rows]
        _, ginv = np.unique(groups, return_inverse=True)
        binary = [s.name for s in lspecs if s.kind == "binary"]
        X0 = np.zeros((len(rows), 1))
        if binary:
            # stratify on the joint 0/1 pattern of the plan's binary labels, adding
            # labels in order only while every joint class keeps >= n_splits members
            B = Y[binary].to_numpy()[rows].astype(np.int64)
            strat = B[:, 0]
            strat_on = [binary[0]]
            for j in range(1, B.shape[1]):
                _, cand = np.unique(np.column_stack([strat, B[:, j]]), axis=0, return_inverse=True)
                if np.bincount(cand.ravel()).min() < n_splits:
                    break
                strat = cand.ravel()
                strat_on.append(binary[j])
            split = lambda k: _split_folds(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed),
                                           X0, strat.ravel(), ginv)
        else:
            strat_on = []
            split = lambda k: _split_folds(GroupKFold(n_splits=k, shuffle=True, random_state=seed), X0, None, ginv)
        folds = split(n_splits)
        if folds is None:       # too few stimuli/groups per class for n_splits: say how many and what works
            raise ProbeInputError(_too_small_message(lspecs, Y, rows, ginv, n_splits, split))
        plans.append(SplitPlan(rows, ginv, folds, [s.name for s in lspecs], tuple(strat_on)))
    return plans


def _split_folds(cv, X0, strat, ginv):
    """``cv``'s folds, or None when they cannot be made (sklearn refuses, or a fold is empty)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class")
            folds = list(cv.split(X0, strat, ginv))
    except ValueError:
        return None
    return None if any(len(te) == 0 or len(tr) == 0 for tr, te in folds) else folds


def _too_small_message(lspecs, Y, rows, ginv, n_splits, split) -> str:
    names = [s.name for s in lspecs]
    parts = [f"{len(rows)} stimuli in {len(np.unique(ginv))} groups"]
    for s in lspecs:
        if s.kind == "binary":
            y = Y[s.name].to_numpy()[rows]
            per = ", ".join(f"class {c}: {int((y == c).sum())} stimuli in {len(np.unique(ginv[y == c]))} groups"
                            for c in (0, 1))
            parts.append(f"{s.name!r}: {per}")
    works = next((k for k in range(n_splits - 1, 1, -1) if split(k) is not None), None)
    fix = (f"use n_splits={works} or fewer" if works else "no n_splits >= 2 works") + \
        f", or add stimuli (groups) so each class has at least {n_splits} groups"
    return (f"label(s) {names}: {'; '.join(parts)}: too few for {n_splits}-fold group CV "
            f"(stratified on the binary classes, every fold needs test and training rows); {fix}")


# ------------------------------------------------------------------ engine ---

def _torch():
    import torch
    return torch


def _resolve_device(device: str):
    torch = _torch()
    if device == "cuda" and not torch.cuda.is_available():
        warnings.warn("device='cuda' requested but CUDA is unavailable; using CPU")
        device = "cpu"
    return torch.device(device)


def _fold_grams_torch(X, folds, device="cpu"):
    """Torch version of :func:`fold_grams` (float64 torch tensors).

    Standardisation uses the training rows' mean and population SD (zero-SD
    features: scale 1), exactly like ``StandardScaler`` fitted on the fold.
    """
    torch = _torch()
    dev = _resolve_device(device) if isinstance(device, str) else device
    Xt = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32, device=dev)
    out = []
    for tr, te in folds:
        tr_t = torch.as_tensor(tr, device=dev)
        te_t = torch.as_tensor(te, device=dev)
        Xtr = Xt[tr_t]
        var, mu = torch.var_mean(Xtr, 0, correction=0)
        sd = var.sqrt()
        sd = torch.where(sd < 10 * torch.finfo(torch.float32).eps * mu.abs().clamp_min(1.0),
                         torch.ones_like(sd), sd)
        inv = 1.0 / sd
        Ztr = (Xtr - mu) * inv
        Zte = (Xt[te_t] - mu) * inv
        K = (Ztr @ Ztr.T).double()
        Kte = (Zte @ Ztr.T).double()
        cm = K.mean(0)
        Kte = Kte - Kte.mean(1, keepdim=True) - cm[None, :] + cm.mean()
        K = K - cm[None, :] - K.mean(1, keepdim=True) + cm.mean()
        K = 0.5 * (K + K.T)
        out.append((K, Kte))
    return out


def _eigh(K, precise: bool):
    """Eigendecomposition of a symmetric PSD Gram matrix.

    ``precise=False`` (default): float32 ``eigh`` (about 1.7x faster than
    float64 on CPU), then eigenvalues re-estimated as float64 Rayleigh
    quotients ``u^T K u`` (error quadratic in the float32 eigenvector error, so
    null-space eigenvalues come out ~0 rather than ~1e-5 ||K||, which would
    distort the LOO at small alphas). ``precise=True``: float64 ``eigh``.
    """
    torch = _torch()
    if precise:
        lam, U = torch.linalg.eigh(K)
    else:
        _, U32 = torch.linalg.eigh(K.float())
        U = U32.double()
        lam = ((K @ U) * U).sum(0)
    return lam.clamp_min(0), U


def _resolve_backend(device, backend):
    if backend == "auto":
        return "numpy" if str(device) == "cpu" else "torch"
    if backend not in ("numpy", "torch"):
        raise ProbeInputError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    return backend


def fold_grams(X, folds, device="cpu", backend: str = "auto"):
    """Per fold: standardised, centred training Gram ``K [ntr, ntr]`` and
    test-train Gram ``Kte [nte, ntr]`` (float64; numpy arrays, or torch tensors
    with ``backend="torch"``, the default off CPU).

    Standardisation uses the training rows' mean and population SD (zero-SD
    features: scale 1), exactly like ``StandardScaler`` fitted on the fold.
    The Grams are formed in float32 from centred data, then double-centred in
    float64 (removing the float32 rounding of the centring).
    """
    if _resolve_backend(device, backend) == "torch":
        return _fold_grams_torch(X, folds, device)
    X = np.ascontiguousarray(X, dtype=np.float32)
    # centre once on all rows (float32), keep float64 column sums for the fold statistics
    Xc = X - X.mean(0, dtype=np.float64).astype(np.float32)
    s1 = Xc.sum(0, dtype=np.float64)
    s2 = np.square(Xc, dtype=np.float64).sum(0)
    out = []
    for tr, te in folds:
        ntr = len(tr)
        Xte = Xc[te]
        mu = (s1 - Xte.sum(0, dtype=np.float64)) / ntr                  # training-fold mean
        var = (s2 - np.square(Xte, dtype=np.float64).sum(0)) / ntr - mu ** 2
        sd = np.sqrt(np.clip(var, 0, None))
        sd[sd < 10 * np.finfo(np.float32).eps * np.maximum(np.abs(mu), 1.0)] = 1.0
        # Z = (Xc - mu) / sd; the shift by mu is a rank-one term that the float64
        # double-centring below removes exactly, so only the scaling is applied here
        # rows in [train | test] order, so both Grams are contiguous blocks of one product
        Z = Xc[np.concatenate([tr, te])] * (1.0 / sd).astype(np.float32)
        # Z Z^T: numpy hands A @ A.T to BLAS syrk (half the flops of a general product;
        # ~1.5x faster than Z @ Z[tr].T on the dev box although it also forms test x test)
        G = Z @ Z.T                                                      # [n, n], exactly symmetric
        K = G[:ntr, :ntr].astype(np.float64)
        Kte = G[ntr:, :ntr].astype(np.float64)
        cm = K.mean(0)                                   # = row means (K symmetric)
        g = cm.mean()
        Kte -= Kte.mean(1, keepdims=True) + (cm[None, :] - g)
        K -= (cm[None, :] + cm[:, None]) - g             # symmetric to the last bit
        out.append((K, Kte))
    return out


def _eigh_np(K, precise: bool, rel_tol: float = 1e-4):
    """numpy/scipy version of :func:`_eigh`. With ``precise=False`` only the
    eigenvalues below ``rel_tol * max`` get the float64 Rayleigh quotient: the
    float32 eigenvalue error is ~1e-7 ||K|| (absolute), so the others are already
    relatively precise (measured on SmolLM2-135M fold Grams, n_train = 295: at most
    4e-5 relative error above 1e-4 * max, while 1 to 35 of 295 eigenvalues fall
    below it) and a full float64 ``K @ U`` would buy nothing."""
    from scipy.linalg import eigh
    if precise:
        lam, U = eigh(K, driver="evd", check_finite=False)
    else:
        lam32, U32 = eigh(K.astype(np.float32), driver="evd", check_finite=False, overwrite_a=True)
        U = U32.astype(np.float64)
        lam = lam32.astype(np.float64)
        small = np.flatnonzero(lam32 < rel_tol * max(float(lam32[-1]), 0.0))
        if len(small):
            Us = U[:, small]
            lam[small] = np.einsum("ij,ij->j", K @ Us, Us)
    return np.clip(lam, 0, None), U


def ridge_oof(grams, folds, Y: np.ndarray, alphas=DEFAULT_ALPHAS, max_chunk_bytes: float = 6.4e7,
              precise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold ridge predictions for every column of ``Y [n, m]``.

    ``grams`` from :func:`fold_grams` (numpy arrays, or torch tensors on any
    device: the same code runs on either). Alpha per (fold, column) by exact
    LOO on the training fold (first of the minimisers). ``precise``: float64
    instead of float32 eigendecomposition (see :func:`_eigh`) and LOO
    residuals (float32 changed no observed score or p-value on SmolLM2/items,
    4 layers x 12 labels x 100 permutations; 2 of 288 control/null means moved
    by <= 7e-4, and the grid ran 1.7x faster). Returns
    ``(oof [n, m] float64, alpha_index [n_folds, m])``.
    """
    if isinstance(grams[0][0], np.ndarray):
        asarr = lambda a, dt=np.float64: np.asarray(a, dtype=dt)        # noqa: E731
        eigh, tonp = _eigh_np, np.asarray
        argmin = lambda e: np.argmin(e, 0)                              # noqa: E731
        lo = (lambda a: a) if precise else (lambda a: a.astype(np.float32))  # noqa: E731
    else:
        torch = _torch()
        dev = grams[0][0].device
        asarr = lambda a, dt=np.float64: torch.as_tensor(np.asarray(a, dtype=dt), device=dev)  # noqa: E731
        eigh = _eigh
        tonp = lambda t: t.cpu().numpy()                                # noqa: E731
        argmin = lambda e: torch.argmin(e, 0)                           # noqa: E731
        lo = (lambda a: a) if precise else (lambda a: a.float())        # noqa: E731
    Yx = asarr(Y)
    if Yx.ndim == 1:
        Yx = Yx[:, None]
    n, m = Yx.shape
    al = asarr(np.ravel(alphas))
    A = len(al)
    oof = np.empty((n, m))
    best_all = np.zeros((len(folds), m), dtype=np.int64)
    for k, ((K, Kte), (tr, te)) in enumerate(zip(grams, folds)):
        ntr = K.shape[0]
        lam, U = eigh(K, precise)
        Ytr = Yx[asarr(tr, np.int64)]
        ymean = Ytr.mean(0)
        B = U.T @ (Ytr - ymean)                        # [ntr, m]
        W = 1.0 / (lam[None, :] + al[:, None])         # [A, ntr]
        best = np.zeros(m, dtype=np.int64)
        if A > 1:
            # diag(G_alpha) is computed in float64 (a difference of nearly equal terms at small
            # alpha) and only then rounded; the residuals G_alpha y are float32 unless precise: with permutations this GEMM is
            # n_train^2 x alphas x columns (~2 GFLOP per fold on SmolLM2/items), the bulk of the grid
            diag = lo(((U * U) @ W.T - (1.0 / (ntr * al))[None, :])[:, :, None])   # [ntr, A, 1]
            Ul, Wl, Bl = lo(U), lo(W.T)[:, :, None], lo(B)
            chunk = max(1, int(max_chunk_bytes // (8 * A * ntr)))
            for s in range(0, m, chunk):
                WB = Wl * Bl[:, None, s:s + chunk]                              # [ntr, A, c]
                # one GEMM for every alpha and column: G_alpha y = U diag(w_alpha) U^T y
                num = (Ul @ WB.reshape(ntr, -1)).reshape(WB.shape)
                num /= diag                                                     # LOO residuals
                best[s:s + chunk] = tonp(argmin((num * num).sum(0)))          # [A, c] -> first minimiser
        coef = W[asarr(best, np.int64)].T * B          # [ntr, m]
        # cheaper association first: few columns -> U @ coef, many (permutations) -> Kte @ U
        pred = Kte @ (U @ coef) if m < Kte.shape[0] else (Kte @ U) @ coef
        oof[te] = tonp(ymean + pred)
        best_all[k] = best
    return oof, best_all


def svm_oof(grams, folds, groups: np.ndarray, Y01: np.ndarray, C_grid=DEFAULT_C_GRID,
            inner_splits: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold decision values of a hinge-loss linear SVM (``SVC`` on the
    precomputed standardised Gram) for each 0/1 column of ``Y01``; ``C`` by
    inner GroupKFold accuracy on the training fold. Returns ``(oof, C_index)``."""
    from sklearn.model_selection import GroupKFold
    from sklearn.svm import SVC

    Y01 = np.asarray(Y01)
    if Y01.ndim == 1:
        Y01 = Y01[:, None]
    n, m = Y01.shape
    oof = np.zeros((n, m))
    best_all = np.zeros((len(folds), m), dtype=np.int64)
    for k, ((K, Kte), (tr, te)) in enumerate(zip(grams, folds)):
        Kn, Kten = (K, Kte) if isinstance(K, np.ndarray) else (K.cpu().numpy(), Kte.cpu().numpy())
        g = groups[tr]
        n_in = min(inner_splits, len(np.unique(g)))
        inner = list(GroupKFold(n_in).split(Kn, None, g)) if n_in >= 2 else []
        for j in range(m):
            y = Y01[tr, j].astype(int)
            if len(np.unique(y)) < 2:
                oof[te, j] = 1.0 if y[0] == 1 else -1.0
                continue
            if len(C_grid) > 1 and inner:
                acc = np.zeros(len(C_grid))
                for itr, ite in inner:
                    if len(np.unique(y[itr])) < 2:
                        acc += np.mean(y[ite] == y[itr][0])
                        continue
                    for ci, C in enumerate(C_grid):
                        clf = SVC(kernel="precomputed", C=C).fit(Kn[np.ix_(itr, itr)], y[itr])
                        acc[ci] += np.mean(clf.predict(Kn[np.ix_(ite, itr)]) == y[ite])
                ci = int(np.argmax(acc))
            else:
                ci = 0
            best_all[k, j] = ci
            clf = SVC(kernel="precomputed", C=C_grid[ci]).fit(Kn, y)
            oof[te, j] = clf.decision_function(Kten)
    return oof, best_all


# ----------------------------------------------------------------- results ---

@dataclass
class LabelPredictions:
    """Out-of-fold predictions of one label on every cell."""
    rows: np.ndarray       # stimulus indices with a label
    y: np.ndarray          # true values (0/1 or float)
    groups: np.ndarray     # CV group ids (ints) of those rows
    folds: np.ndarray      # outer fold of each row
    oof: np.ndarray        # float32 [n_layers, n_components, n_rows]; binary: score, class = score > 0


@dataclass
class ProbeResults:
    scores: pd.DataFrame
    predictions: dict[str, LabelPredictions]
    baselines: pd.DataFrame
    labels: dict[str, LabelSpec]
    n_layers: int
    components: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    # -- views ---------------------------------------------------------------
    def default_metric(self, label: str) -> str:
        return "accuracy" if self._spec(label).kind == "binary" else "r"

    def _spec(self, label: str) -> LabelSpec:
        if label not in self.labels:
            raise KeyError(f"unknown label {label!r}; have {sorted(self.labels)}")
        return self.labels[label]

    def profile(self, label: str, component: str, metric: str | None = None) -> pd.DataFrame:
        """Layer profile: columns layer, depth, value, ci_low, ci_high (+ p-values)."""
        metric = metric or self.default_metric(label)
        s = self.scores
        d = s[(s.label == label) & (s.component == component) & (s.metric == metric)]
        if d.empty:
            raise KeyError(f"no scores for label={label!r} component={component!r} metric={metric!r}")
        return d[["layer", "depth", "value", "ci_low", "ci_high", "p_value", "p_fwer",
                  "control_value", "selectivity"]].sort_values("layer").reset_index(drop=True)

    def bootstrap_profiles(self, label: str, component: str, metric: str | None = None,
                           n_boot: int | None = None, seed: int | None = None) -> np.ndarray:
        """``[n_boot, n_layers]`` group-bootstrap replicates of a profile (no refitting).

        Deterministic in ``seed`` (default: the grid's seed), so a saved and
        reloaded result reproduces the same replicates.
        """
        metric = metric or self.default_metric(label)
        spec = self._spec(label)
        p = self.predictions[label]
        ci = self.components.index(component)
        n_boot = int(n_boot or self.meta.get("n_bootstrap") or 1000)
        seed = self.meta.get("seed", 0) if seed is None else seed
        Wb = S.group_bootstrap_weights(p.groups, n_boot, seed)
        return S.weighted_metrics(spec.kind, p.y, p.oof[:, ci, :].T, Wb)[metric]

    # -- persistence ---------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write ``scores.parquet``, ``baselines.parquet``, ``predictions.parquet``
        (long: label, row, y, group, fold, layer, component, oof) and ``meta.json``."""
        os.makedirs(path, exist_ok=True)
        self.scores.to_parquet(os.path.join(path, "scores.parquet"), index=False)
        self.baselines.to_parquet(os.path.join(path, "baselines.parquet"), index=False)
        parts = []
        L, C = self.n_layers, len(self.components)
        for name, p in self.predictions.items():
            nr = len(p.rows)
            parts.append(pd.DataFrame({
                "label": name,
                "row": np.tile(p.rows, L * C).astype(np.int32),
                "y": np.tile(p.y, L * C),
                "group": np.tile(p.groups, L * C).astype(np.int32),
                "fold": np.tile(p.folds, L * C).astype(np.int16),
                "layer": np.repeat(np.arange(L), C * nr).astype(np.int16),
                "component": np.tile(np.repeat(np.arange(C), nr), L).astype(np.int8),
                "oof": p.oof.reshape(-1).astype(np.float32)}))
        pd.concat(parts, ignore_index=True).to_parquet(os.path.join(path, "predictions.parquet"), index=False)
        meta = dict(self.meta, n_layers=self.n_layers, components=list(self.components),
                    labels={k: vars(v) for k, v in self.labels.items()})
        with open(os.path.join(path, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1, default=_json_default)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ProbeResults":
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        L, comps = meta.pop("n_layers"), tuple(meta.pop("components"))
        labels = {k: LabelSpec(**v) for k, v in meta.pop("labels").items()}
        preds_df = pd.read_parquet(os.path.join(path, "predictions.parquet"))
        preds = {}
        for name in labels:
            d = preds_df[preds_df.label == name]
            d0 = d[(d.layer == 0) & (d.component == 0)]
            nr = len(d0)
            preds[name] = LabelPredictions(d0.row.to_numpy(np.int64), d0.y.to_numpy(), d0.group.to_numpy(np.int64),
                                           d0.fold.to_numpy(np.int16),
                                           d.oof.to_numpy(np.float32).reshape(L, len(comps), nr))
        return cls(pd.read_parquet(os.path.join(path, "scores.parquet")), preds,
                   pd.read_parquet(os.path.join(path, "baselines.parquet")), labels, L, comps, meta)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


# -------------------------------------------------------------------- grid ---

def _load_matrix(acts, layer: int, comp: str, n: int) -> np.ndarray:
    X = np.asarray(acts.get(layer, comp), dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != n:
        raise ProbeInputError(f"activations layer {layer} {comp}: shape {X.shape}, expected [{n}, d] "
                              f"to match the {n} stimuli")
    if not np.isfinite(X).all():
        bad = ~np.isfinite(X)
        raise ProbeInputError(
            f"activations layer {layer} component {comp!r} contain {int(np.isnan(X).sum())} NaN and "
            f"{int(np.isinf(X).sum())} inf values in {int(bad.any(1).sum())} rows (fp16 overflow? "
            f"extract in float32/bfloat16)")
    big = np.abs(X) > _MAX_ABS_ACTIVATION
    if big.any():                   # finite, but the squares in the standardisation and Grams overflow float32
        r, c = np.unravel_index(int(np.argmax(np.abs(X))), X.shape)
        raise ProbeInputError(
            f"activations layer {layer} component {comp!r}: {int(big.sum())} values in {int(big.any(1).sum())} "
            f"rows exceed {_MAX_ABS_ACTIVATION:.3g} in magnitude (largest {X[r, c]:.3g} at row {r}, dim {c}); "
            f"their squares overflow float32, so probe scores would be NaN or wrong. No real activation is this "
            f"large: re-extract the activations (float32/bfloat16 model) or check the matrix for corruption")
    return X


#: Activations larger than this in magnitude are refused: their squares overflow float32 (~3.4e38).
_MAX_ABS_ACTIVATION = float(np.sqrt(np.finfo(np.float32).max))


def _surface_matrix(stimuli: pd.DataFrame, exclude: str) -> tuple[np.ndarray | None, list[str]]:
    cols = [c for c in SURFACE_COLUMNS if c in stimuli.columns and c != exclude]
    if not cols:
        return None, []
    X = stimuli[cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    med = np.nanmedian(X, axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    X = np.where(np.isnan(X), med[None, :], X)
    return X.astype(np.float32), cols


def _label_columns(stim: pd.DataFrame, plans: Sequence[SplitPlan], specd: Mapping[str, LabelSpec],
                  Yall: pd.DataFrame, *, n_permutations: int, control_task: bool, n_control: int,
                  control_column: str, rng: np.random.Generator):
    """Per plan, for each label ``[real | permutations | control draws]``; see :func:`grid_columns`."""
    plan_cols, schemes = [], {}
    for plan in plans:
        blocks, layout = [], {}
        col = 0
        for name in plan.labels:
            spec = specd[name]
            y = Yall[name].to_numpy()[plan.rows]
            perms = np.empty((len(y), 0))
            if n_permutations:
                # folds stratified on this label -> permute within folds (see group_permutations)
                strata = plan.fold_ids() if name in plan.stratified_on else None
                perms, schemes[name] = S.group_permutations(y, plan.groups, n_permutations, rng, strata)
            ctrl = np.empty((len(y), 0))
            if control_task:
                tcol = control_column if control_column in stim.columns else spec.group
                types = stim[tcol].map(lambda v: "|".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray))
                                       else str(v)).to_numpy()[plan.rows]
                ctrl = S.type_control_labels(y, types, n_control, rng, spec.kind)
            block = np.column_stack([y[:, None], perms, ctrl]).astype(np.float64)
            layout[name] = (col, perms.shape[1], ctrl.shape[1])
            col += block.shape[1]
            blocks.append(block)
        Y01 = np.concatenate(blocks, axis=1)
        is_bin = np.concatenate([np.full(b.shape[1], specd[nm].kind == "binary") for b, nm in zip(blocks, plan.labels)])
        Yfit = np.where(is_bin[None, :], 2 * Y01 - 1, Y01)
        plan_cols.append((Y01, Yfit, is_bin, layout))
    return plan_cols, schemes


@dataclass
class GridColumns:
    """Everything :func:`probe_grid` fits, before any activation is read.

    ``plans[i]`` holds rows, groups and folds; ``cols[i] = (Y01, Yfit, is_bin,
    layout)`` its label columns: ``Y01 [rows, cols]`` the 0/1 or continuous values,
    ``Yfit`` the regression targets (binary as -1/+1), ``is_bin`` per column and
    ``layout[name] = (first column, n_permutations, n_control)``, each label's block
    being ``[real | permutations | control draws]``. ``schemes[name]`` is the
    permutation scheme (:func:`probekit.stats.group_permutations`).
    """
    stimuli: pd.DataFrame
    specs: dict[str, LabelSpec]
    Y: pd.DataFrame
    plans: list[SplitPlan]
    cols: list[tuple]
    schemes: dict[str, str]


def grid_columns(stimuli: pd.DataFrame, labels=None, *, n_splits: int = 6, seed: int = 0,
                 stratify: str = "joint", n_permutations: int = 200, control_task: bool = True,
                 n_control: int = 5, control_column: str = "target") -> GridColumns:
    """Labels, split plans and every label column (real, permuted, control task)
    exactly as :func:`probe_grid` with the same arguments builds them: the grid
    calls this, so a scikit-learn loop over ``grid_columns(...)`` refits the
    grid's own columns (the benchmark and the oracle tests do)."""
    stim = stimuli.reset_index(drop=True)
    specs, Y = resolve_labels(stim, labels)
    specd = {s.name: s for s in specs}
    plans = make_plans(stim, specs, Y, n_splits, seed, stratify)
    cols, schemes = _label_columns(stim, plans, specd, Y, n_permutations=n_permutations,
                                   control_task=control_task, n_control=n_control,
                                   control_column=control_column, rng=np.random.default_rng(seed))
    return GridColumns(stim, specd, Y, plans, cols, schemes)


def probe_grid(acts, labels=None, *, n_splits: int = 6, estimator: str = "fast",
               n_permutations: int = 200, n_bootstrap: int = 1000, control_task: bool = True,
               n_control: int = 5, control_column: str = "target", alphas=DEFAULT_ALPHAS,
               C_grid=DEFAULT_C_GRID, stratify: str = "joint", surface_baseline: bool = True,
               layers: Sequence[int] | None = None, components: Sequence[str] | None = None,
               seed: int = 0, device: str = "cpu", level: float = 0.95,
               n_threads: int | None = 1, backend: str = "auto", precise: bool = False) -> ProbeResults:
    """Probe every label x layer x component of ``acts``.

    Parameters
    ----------
    acts : ActivationSet
    labels : see :func:`resolve_labels` (default: all of ``acts.stimuli.attrs["labels"]``).
    n_splits : outer group-CV folds (6 in the paper).
    estimator : ``"fast"`` (dual ridge / LS-SVM) or ``"svm"`` (hinge SVC for binary labels).
    n_permutations : shuffled-label sets per label (group-aware, see
        :func:`probekit.stats.group_permutations`) for ``p_value`` (per cell)
        and ``p_fwer`` (max-statistic over the layer x component grid of that
        label and metric). 0 disables. Binary labels the folds were stratified on
        are permuted within folds, so the null shares their per-fold class balance.
    n_bootstrap : group-bootstrap replicates of the OOF predictions for ``ci_low``/``ci_high``.
    control_task : Hewitt & Liang control (labels random per ``control_column``
        type, default the target word; falls back to the label's group column);
        ``control_value`` is its mean over ``n_control`` draws and
        ``selectivity = value - control_value``.
    surface_baseline : same CV from the surface columns (``n_letters``, ``zipf``,
        ``n_target_tokens``, whichever exist) alone; in ``baselines`` and the
        ``surface_baseline`` column.
    seed : seeds folds, permutations, control draws and bootstraps.
    device : ``"cpu"`` or ``"cuda"`` (the latter needs ``backend="torch"``, its default there).
    backend : ``"auto"`` (numpy on CPU, torch elsewhere), ``"numpy"`` or
        ``"torch"``. On the 2-core dev box numpy was faster on CPU (Gram +
        standardisation 0.74 vs 1.7 ms per 240 x 576 fold, float32 ``eigh``
        of 200 x 200 ~1.8 ms both).
    precise : float64 eigendecompositions and LOO residuals (default float32
        + float64 Rayleigh-quotient eigenvalues for the small ones; identical
        accuracies in the sklearn agreement tests, see :func:`ridge_oof`).
    n_threads : CPU threads for torch and BLAS during the call (restored
        afterwards; None leaves them alone). The matrices are small (n_train x
        n_train eigendecompositions); on the shared 2-core dev box, 2 threads
        made ``eigh`` of a 200 x 200 matrix 5-500x slower than 1 thread
        whenever another process was busy, and never much faster when idle.
    """
    from .checks import ArgumentError, count
    n_splits = count(n_splits, "n_splits", 2)
    n_permutations = count(n_permutations, "n_permutations", 0)
    n_bootstrap = count(n_bootstrap, "n_bootstrap", 0)
    n_control = count(n_control, "n_control", 1)
    if not 0 < level < 1:
        raise ArgumentError(f"level must be in (0, 1), got {level!r}")
    with _thread_limit(n_threads):
        return _probe_grid(acts, labels, n_splits=n_splits, estimator=estimator, n_permutations=n_permutations,
                           n_bootstrap=n_bootstrap, control_task=control_task, n_control=n_control,
                           control_column=control_column, alphas=alphas, C_grid=C_grid, stratify=stratify,
                           surface_baseline=surface_baseline, layers=layers, components=components, seed=seed,
                           device=device, level=level, backend=_resolve_backend(device, backend),
                           precise=precise)


class _thread_limit:
    """Temporarily cap torch intra-op threads and BLAS/OpenMP pools."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        if self.n is None:
            return self
        torch = _torch()
        from threadpoolctl import threadpool_limits
        self._old = torch.get_num_threads()
        torch.set_num_threads(self.n)
        self._tp = threadpool_limits(self.n)
        return self

    def __exit__(self, *exc):
        if self.n is None:
            return False
        self._tp.restore_original_limits()
        _torch().set_num_threads(self._old)
        return False


def _probe_grid(acts, labels, *, n_splits, estimator, n_permutations, n_bootstrap, control_task, n_control,
                control_column, alphas, C_grid, stratify, surface_baseline, layers, components, seed, device,
                level, backend, precise) -> ProbeResults:
    if estimator not in ("fast", "svm"):
        raise ProbeInputError(f"estimator must be 'fast' or 'svm', got {estimator!r}")
    gc = grid_columns(acts.stimuli, labels, n_splits=n_splits, seed=seed, stratify=stratify,
                      n_permutations=n_permutations, control_task=control_task, n_control=n_control,
                      control_column=control_column)
    stim, specd, Yall, plans, plan_cols, schemes = gc.stimuli, gc.specs, gc.Y, gc.plans, gc.cols, gc.schemes
    n = len(stim)
    layers = list(acts.layers if layers is None else layers)
    comps = tuple(acts.components if components is None else components)
    L, C = acts.n_layers, len(comps)
    dev = _resolve_device(device)

    metric_names = {nm: S.metrics_for(specd[nm].kind) for nm in specd}
    obs = {nm: {mt: np.full((L, C), np.nan) for mt in metric_names[nm]} for nm in specd}
    null = {nm: {mt: np.full((n_permutations, L, C), np.nan) for mt in metric_names[nm]} for nm in specd}
    ctrlv = {nm: {mt: np.full((L, C), np.nan) for mt in metric_names[nm]} for nm in specd}
    oofs = {nm: np.full((L, C, len(p.rows)), np.nan, dtype=np.float32) for p in plans for nm in p.labels}
    alpha_used: dict[str, list] = {nm: [] for nm in specd}

    def run_cell(X: np.ndarray, plan: SplitPlan, Y01, Yfit, is_bin):
        grams = fold_grams(X[plan.rows], plan.folds, dev, backend)
        if estimator == "fast" or not is_bin.any():
            oof, best = ridge_oof(grams, plan.folds, Yfit, alphas, precise=precise)
        else:
            oof = np.zeros_like(Yfit)
            best = np.zeros((len(plan.folds), Yfit.shape[1]), dtype=np.int64)
            if (~is_bin).any():
                oof[:, ~is_bin], best[:, ~is_bin] = ridge_oof(grams, plan.folds, Yfit[:, ~is_bin], alphas,
                                                                precise=precise)
            oof[:, is_bin], best[:, is_bin] = svm_oof(grams, plan.folds, plan.groups, Y01[:, is_bin], C_grid)
        return oof, best

    for li in layers:
        for ci, comp in enumerate(comps):
            X = _load_matrix(acts, li, comp, n)
            for plan, (Y01, Yfit, is_bin, layout) in zip(plans, plan_cols):
                oof, best = run_cell(X, plan, Y01, Yfit, is_bin)
                for name, (c0, npm, nct) in layout.items():
                    kind = specd[name].kind
                    sl = slice(c0, c0 + 1 + npm + nct)
                    mets = S.column_metrics(kind, Y01[:, sl], oof[:, sl])
                    for mt, v in mets.items():
                        obs[name][mt][li, ci] = v[0]
                        if npm:
                            null[name][mt][:, li, ci] = v[1:1 + npm]
                        if nct:
                            ctrlv[name][mt][li, ci] = np.nanmean(v[1 + npm:])
                    oofs[name][li, ci] = oof[:, c0]
                    if li == layers[0] and ci == 0:
                        alpha_used[name] = np.asarray(alphas)[best[:, c0]].tolist()

    # surface baselines
    base_rows = []
    surface_val: dict[tuple[str, str], float] = {}
    if surface_baseline:
        for plan in plans:
            for name in plan.labels:
                spec = specd[name]
                Xs, cols = _surface_matrix(stim, name)
                if Xs is None:
                    continue
                y = Yall[name].to_numpy()[plan.rows]
                yfit = 2 * y - 1 if spec.kind == "binary" else y
                grams = fold_grams(Xs[plan.rows], plan.folds, dev, backend)
                oof, _ = ridge_oof(grams, plan.folds, yfit[:, None], alphas, precise=precise)
                mets = S.column_metrics(spec.kind, y, oof[:, 0])
                Wb = S.group_bootstrap_weights(plan.groups, n_bootstrap, seed) if n_bootstrap else None
                bm = S.weighted_metrics(spec.kind, y, oof, Wb) if Wb is not None else None
                for mt, v in mets.items():
                    lo, hi = S.percentile_ci(bm[mt][:, 0], level) if bm is not None else (np.nan, np.nan)
                    surface_val[(name, mt)] = float(v)
                    base_rows.append(dict(label=name, kind=spec.kind, role=spec.role, metric=mt, value=float(v),
                                          ci_low=float(lo), ci_high=float(hi),
                                          chance=S.chance_level(spec.kind, mt, y), features=",".join(cols),
                                          n=len(y)))
    baselines = pd.DataFrame(base_rows, columns=["label", "kind", "role", "metric", "value", "ci_low", "ci_high",
                                                 "chance", "features", "n"])

    # assemble scores
    predictions = {}
    rows_out = []
    lay_arr = np.asarray(layers)
    for plan in plans:
        fold_ids = plan.fold_ids()
        for name in plan.labels:
            spec = specd[name]
            y = Yall[name].to_numpy()[plan.rows]
            predictions[name] = LabelPredictions(plan.rows, y, plan.groups, fold_ids, oofs[name])
            bm = None
            if n_bootstrap:
                Wb = S.group_bootstrap_weights(plan.groups, n_bootstrap, seed)
                flat = oofs[name][lay_arr].reshape(len(layers) * C, -1).T     # [n, cells]
                bm = S.weighted_metrics(spec.kind, y, flat, Wb)
            for mt in metric_names[name]:
                o = obs[name][mt]
                if n_permutations:
                    nl = null[name][mt][:, lay_arr]
                    p = S.perm_pvalue(o[lay_arr], nl)
                    pf = S.maxstat_pvalue(o[lay_arr], nl)
                    nmean = np.nanmean(nl, 0)
                else:
                    p = pf = nmean = np.full((len(layers), C), np.nan)
                if bm is not None:
                    lo, hi = S.percentile_ci(bm[mt], level)
                    lo, hi = lo.reshape(len(layers), C), hi.reshape(len(layers), C)
                else:
                    lo = hi = np.full((len(layers), C), np.nan)
                ch = S.chance_level(spec.kind, mt, y)
                for i, li in enumerate(layers):
                    for ci, comp in enumerate(comps):
                        val = o[li, ci]
                        cv = ctrlv[name][mt][li, ci]
                        rows_out.append((name, spec.kind, spec.role, li, li / L, comp, mt, val, lo[i, ci], hi[i, ci],
                                         ch, p[i, ci], pf[i, ci], cv, val - cv, nmean[i, ci],
                                         surface_val.get((name, mt), np.nan), len(y)))
    scores = pd.DataFrame(rows_out, columns=SCORE_COLUMNS)
    meta = dict(seed=seed, n_splits=n_splits, estimator=estimator, solver_version=SOLVER_VERSION, n_permutations=n_permutations,
                n_bootstrap=n_bootstrap, n_control=n_control if control_task else 0,
                alphas=np.asarray(alphas).tolist(), C_grid=np.asarray(C_grid).tolist(), stratify=stratify,
                perm_scheme=schemes, alpha_first_cell=alpha_used, level=level,
                model_name=getattr(acts, "model_name", "unknown"),
                stimuli_name=stim.attrs.get("name"), stimuli_hash=stim.attrs.get("hash"))
    return ProbeResults(scores, predictions, baselines, specd, L, comps, meta)


# --------------------------------------------------------------- synthetic ---

def make_synthetic_acts(n_groups: int = 40, per_group: int = 6, d: int = 64, n_layers: int = 6,
                        n_binary: int = 2, n_continuous: int = 1, signal=None, word_noise: float = 1.0,
                        seed: int = 0):
    """A small :class:`ActivationSet` with planted, group-level labels (tests, benchmarks).

    ``n_groups`` target words each appear in ``per_group`` stimuli (group =
    word). Every label is a property of the word; layer ``l`` carries it along
    a random direction with strength ``signal[l]`` (default: a bump peaking at
    layer ``n_layers // 3``), on top of a per-word random vector
    (``word_noise``) and per-stimulus noise. Columns: text, target, group,
    ``bin{i}``, ``cont{i}``, n_letters, zipf, n_target_tokens.
    """
    from .activations import ActivationSet, COMPONENTS

    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    g = np.repeat(np.arange(n_groups), per_group)
    if signal is None:
        signal = 1.5 * np.exp(-0.5 * ((np.arange(n_layers) - n_layers // 3) / max(1, n_layers / 6)) ** 2)
    signal = np.asarray(signal, dtype=float)
    lab = {}
    for i in range(n_binary):
        yw = rng.permutation(np.arange(n_groups) % 2)
        lab[f"bin{i}"] = yw[g]
    for i in range(n_continuous):
        lab[f"cont{i}"] = rng.standard_normal(n_groups)[g]
    names = list(lab)
    dirs = rng.standard_normal((len(names), d)) / np.sqrt(d) * 4
    words = rng.standard_normal((n_groups, d)) * word_noise
    arrays = {}
    for l in range(n_layers):
        for c in COMPONENTS:
            X = rng.standard_normal((n, d)) + words[g]
            for j, nm in enumerate(names):
                y = lab[nm].astype(float)
                yc = (2 * y - 1) if nm.startswith("bin") else y
                X += signal[l] * yc[:, None] * dirs[j][None, :]
            arrays[(l, c)] = X.astype(np.float32)
    stim = pd.DataFrame({"text": [f"A w{w} in frame {k}" for w, k in zip(g, np.tile(np.arange(per_group), n_groups))],
                         "target": [f"w{w}" for w in g], "group": g, **lab,
                         "n_letters": (2 + g % 7).astype(float), "zipf": rng.normal(4, 1, n_groups)[g],
                         "n_target_tokens": 1 + g % 2})
    stim.attrs["labels"] = {nm: {"kind": "binary" if nm.startswith("bin") else "continuous",
                                 "role": "semantic", "group": "group"} for nm in names}
    stim.attrs["name"] = "synthetic"
    return ActivationSet.from_arrays(arrays, stim, model_name="synthetic")
