"""Statistics for probe profiles: group-aware permutations, p-values with a
max-statistic (family-wise) correction, group bootstrap of out-of-fold
predictions, and vectorised metrics.

Everything here is a pure function of its arguments (randomness only through an
explicit ``numpy.random.Generator`` or integer seed).

Conventions
-----------
* Metrics are computed on the *pooled* out-of-fold (OOF) predictions of a
  cross-validation: every stimulus is predicted once, by the model that did not
  see its group. ``accuracy`` and ``balanced_accuracy`` for binary labels
  (predicted class = ``score > 0``), Pearson ``r`` and ``r2``
  (``1 - SSE/SST``, SST around the pooled mean of the true values) for
  continuous labels. Optional (:data:`OPTIONAL_METRICS`, on request only):
  ``auc``, the ROC AUC of the binary scores themselves (ties counted half).
* Permutation p-values are ``(1 + #{null >= observed}) / (1 + n_null)`` (never
  0; ties count against the observation).
* The bootstrap resamples *groups* (the CV group column) with replacement and
  recomputes the metric on the OOF predictions of the resampled stimuli, no
  refitting. It therefore measures stimulus-sampling variability of a fixed set
  of fitted probes, not the variability of the fitting itself.
"""
from __future__ import annotations


import numpy as np

BINARY_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy")
CONTINUOUS_METRICS: tuple[str, ...] = ("r", "r2")
#: Metrics computed only when asked for (``probe_grid(metrics=...)``), by the label kind they apply to:
#: ``auc`` is the ROC AUC of the out-of-fold scores (the probe margins, not their sign), ties counted half.
OPTIONAL_METRICS: dict[str, str] = {"auc": "binary"}

LEVEL = 0.95          # the one interval level of probes, claims, report and results


def central(level: float = LEVEL) -> tuple[float, float]:
    """The quantiles bounding the central ``level`` of a distribution: 2.5% and 97.5% at a level of 95%
    (rounded, so that 0.95 gives exactly the quantiles written by hand before)."""
    return round((1 - level) / 2, 12), round((1 + level) / 2, 12)


def metrics_for(kind: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The metrics of a label kind: the defaults, then those of ``extra`` (names in
    :data:`OPTIONAL_METRICS`) that apply to ``kind``."""
    if kind == "binary":
        base = BINARY_METRICS
    elif kind == "continuous":
        base = CONTINUOUS_METRICS
    else:
        raise ValueError(f"unknown label kind {kind!r}; expected 'binary' or 'continuous'")
    return base + tuple(m for m in check_metrics(extra) if OPTIONAL_METRICS[m] == kind and m not in base)


def check_metrics(extra) -> tuple[str, ...]:
    """``extra`` as a tuple of optional metric names; ValueError naming the unknown one."""
    extra = (extra,) if isinstance(extra, str) else tuple(extra or ())
    for m in extra:
        if m not in OPTIONAL_METRICS:
            raise ValueError(f"unknown optional metric {m!r}; expected one of {sorted(OPTIONAL_METRICS)} "
                             f"(the defaults {BINARY_METRICS + CONTINUOUS_METRICS} are always computed)")
    return tuple(dict.fromkeys(extra))


# ----------------------------------------------------------------- metrics ---

def column_metrics(kind: str, y_true: np.ndarray, y_score: np.ndarray,
                   extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Metrics for many label columns at once.

    ``y_true`` and ``y_score`` are ``[n, m]`` (or ``[n]``); returns ``{metric:
    array[m]}``. Binary: ``y_true`` in {0, 1}, class = ``y_score > 0``.
    ``extra``: optional metrics (:data:`OPTIONAL_METRICS`), added after the defaults,
    which are computed exactly as without them.
    """
    extra = metrics_for(kind, extra)[len(metrics_for(kind)):]
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    squeeze = y_true.ndim == 1
    if squeeze:
        y_true, y_score = y_true[:, None], y_score[:, None]
    out: dict[str, np.ndarray] = {}
    if kind == "binary":
        pred = (y_score > 0).astype(np.float64)
        correct = (pred == y_true)
        out["accuracy"] = correct.mean(0)
        pos = y_true == 1
        n_pos = pos.sum(0)
        n_neg = (~pos).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = (correct & pos).sum(0) / n_pos
            tnr = (correct & ~pos).sum(0) / n_neg
        out["balanced_accuracy"] = 0.5 * (tpr + tnr)
        if "auc" in extra:
            out["auc"] = rank_auc(y_true, y_score)
    elif kind == "continuous":
        yt = y_true - y_true.mean(0)
        ys = y_score - y_score.mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["r"] = (yt * ys).sum(0) / np.sqrt((yt ** 2).sum(0) * (ys ** 2).sum(0))
            out["r2"] = 1.0 - ((y_true - y_score) ** 2).sum(0) / (yt ** 2).sum(0)
    else:
        metrics_for(kind)
    if squeeze:
        out = {k: v[0] for k, v in out.items()}
    return out


def weighted_metrics(kind: str, y_true: np.ndarray, y_score: np.ndarray,
                     weights: np.ndarray, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Metrics of one label under many row weightings (bootstrap replicates).

    ``y_true [n]``, ``y_score [n, c]`` (c cells, e.g. layers x components),
    ``weights [B, n]`` (bootstrap multiplicities). Returns ``{metric: [B, c]}``.
    With all weights 1 this equals :func:`column_metrics`. ``extra``: optional
    metrics, as there.
    """
    extra = metrics_for(kind, extra)[len(metrics_for(kind)):]
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    W = np.asarray(weights, dtype=np.float64)
    wsum = W.sum(1, keepdims=True)  # [B, 1]
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "binary":
            correct = ((s > 0) == (y[:, None] == 1)).astype(np.float64)  # [n, c]
            out["accuracy"] = (W @ correct) / wsum
            pos = (y == 1).astype(np.float64)
            wp = W * pos
            wn = W * (1 - pos)
            tpr = (wp @ correct) / wp.sum(1, keepdims=True)
            tnr = (wn @ correct) / wn.sum(1, keepdims=True)
            out["balanced_accuracy"] = 0.5 * (tpr + tnr)
            if "auc" in extra:
                out["auc"] = weighted_auc(y, s, W)
        elif kind == "continuous":
            sw = wsum
            my = (W @ y)[:, None] / sw                 # [B, 1]
            ms = (W @ s) / sw                          # [B, c]
            syy = (W @ (y ** 2))[:, None] / sw - my ** 2
            sss = (W @ (s ** 2)) / sw - ms ** 2
            sys_ = (W @ (y[:, None] * s)) / sw - my * ms
            out["r"] = sys_ / np.sqrt(np.clip(syy, 0, None) * np.clip(sss, 0, None))
            sse = (W @ ((y[:, None] - s) ** 2)) / sw
            out["r2"] = 1.0 - sse / syy
        else:
            metrics_for(kind)
    return out


def rank_auc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """ROC AUC of every column (Mann-Whitney U / (n_pos n_neg), ties counted half: midranks).

    ``y_true`` and ``y_score`` ``[n, m]`` (0/1 labels); NaN where a column has one class only.
    """
    from scipy.stats import rankdata
    y = np.asarray(y_true, dtype=np.float64)
    r = rankdata(np.asarray(y_score, dtype=np.float64), axis=0)        # midranks: a tie counts half
    pos = y == 1
    n_pos = pos.sum(0)
    n_neg = len(y) - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(pos, r, 0.0).sum(0) - n_pos * (n_pos + 1) / 2
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def weighted_auc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of each score column under each row weighting: a weighted Mann-Whitney statistic.

    ``y_true [n]`` (0/1), ``y_score [n, c]``, ``weights [B, n]``; returns ``[B, c]``:
    ``sum_{i pos, j neg} w_i w_j ([s_j < s_i] + [s_j == s_i] / 2) / (W_pos W_neg)``. With integer
    weights this is the AUC of the rows repeated by their weights. Each column is sorted once; the
    negatives' weights are summed cumulatively along the sorted scores for all replicates at once (no
    loop over replicates), a tie block taking the cumulative sum below it plus half its own.
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    W = np.asarray(weights, dtype=np.float64)
    pos = y == 1
    wpos = W[:, pos].sum(1)                                   # [B]
    wneg = W[:, ~pos].sum(1)
    out = np.empty((W.shape[0], s.shape[1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = wpos * wneg
    for c in range(s.shape[1]):
        order = np.argsort(s[:, c], kind="stable")
        ss = s[order, c]
        po = pos[order]
        wn = W[:, order[~po]]                                 # [B, n_neg] the negatives' weights, in score order
        cum = np.cumsum(wn, axis=1)                           # negatives' weight up to and including each
        new = np.r_[True, ss[1:] != ss[:-1]]                  # first row of each tie block
        if new.all():                                         # no ties: a positive gets the negatives below it
            k = np.cumsum(~po)[po]                            # negatives sorted before each positive
            below = np.concatenate([np.zeros((W.shape[0], 1)), cum], axis=1)[:, k]
        else:
            block = np.cumsum(new) - 1                        # tie block of each sorted row
            nneg = np.bincount(block, weights=~po, minlength=block[-1] + 1).astype(np.int64)
            hi = np.cumsum(nneg)                              # negatives up to the end of each block
            lo = hi - nneg                                    # ... strictly below it
            c0 = np.concatenate([np.zeros((W.shape[0], 1)), cum], axis=1)
            bp = block[po]
            below = 0.5 * (c0[:, lo[bp]] + c0[:, hi[bp]])    # strictly below + half the tied ones
        num = (W[:, order[po]] * below).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, c] = np.where(denom > 0, num / denom, np.nan)
    return out


def chance_level(kind: str, metric: str, y: np.ndarray) -> float:
    """Score of a constant predictor: majority-class rate for ``accuracy``,
    0.5 for ``balanced_accuracy`` and ``auc``, 0 for ``r`` and ``r2``."""
    if metric == "accuracy":
        p = float(np.mean(np.asarray(y) == 1))
        return max(p, 1 - p)
    if metric in ("balanced_accuracy", "auc"):
        return 0.5
    return 0.0


# ------------------------------------------------------------ permutations ---

def is_group_level(y: np.ndarray, groups: np.ndarray) -> bool:
    """True when every member of each group shares one label value."""
    y = np.asarray(y)
    _, first, inv = np.unique(groups, return_index=True, return_inverse=True)   # first: each group's first row
    return bool(np.all(y == y[first[inv]]))


def group_permutations(y: np.ndarray, groups: np.ndarray, n_perm: int,
                       rng: np.random.Generator, strata: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """``n_perm`` label permutations that respect the group structure.

    Returns ``(Y_perm [n, n_perm], scheme)``:

    * ``"across_groups"`` when the label is constant within every group (a
      property of the group, e.g. of the target word): the groups' labels are
      permuted across groups, so all members of a group keep sharing a label.
      With unequal group sizes the class counts of a permuted set may differ
      from the real ones (each group is one exchangeable unit).
    * ``"within_groups"`` otherwise: labels are shuffled among the members of
      each group (a restricted permutation that keeps every group's label mix,
      hence any group-level confound, intact; conservative when the label is
      partly group-level).

    ``strata`` (e.g. the outer CV fold of each row; groups must be nested in
    strata): group-level labels are permuted only among groups of the same
    stratum (scheme ``"across_groups_within_strata"``). Needed when the folds
    were stratified on this label: every permuted set then has the real
    label's per-fold class counts. Without it the real label enjoys balanced
    folds the permuted ones lack, and since CV accuracy on label-free data
    falls as fold imbalance grows (the training-mean bias), the permutation
    null sits too low and p-values are anti-conservative (measured on
    SmolLM2/items: null mean 0.459 vs 0.464 for random real labels, per-cell
    false-positive rate 7.8% at alpha 0.05).
    """
    y = np.asarray(y)
    n = len(y)
    uniq, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    out = np.empty((n, n_perm), dtype=y.dtype)
    if is_group_level(y, groups):
        gval = y[first]                             # each group's label (that of its first row)
        if strata is not None:
            gstrat = np.asarray(strata)[first]
            if not np.all(np.asarray(strata) == gstrat[inv]):
                raise ValueError("groups must be nested in strata")
            blocks = [np.flatnonzero(gstrat == s_) for s_ in np.unique(gstrat)]
            for b in range(n_perm):
                perm = np.arange(len(uniq))
                for blk in blocks:
                    perm[blk] = blk[rng.permutation(len(blk))]
                out[:, b] = gval[perm][inv]
            return out, "across_groups_within_strata"
        for b in range(n_perm):
            out[:, b] = gval[rng.permutation(len(uniq))][inv]
        return out, "across_groups"
    order = np.argsort(inv, kind="stable")
    bounds = np.flatnonzero(np.diff(inv[order])) + 1
    blocks = np.split(order, bounds)
    for b in range(n_perm):
        col = y.copy()
        for blk in blocks:
            if len(blk) > 1:
                col[blk] = y[rng.permutation(blk)]
        out[:, b] = col
    return out, "within_groups"


def type_control_labels(y: np.ndarray, types: np.ndarray, n_draws: int,
                        rng: np.random.Generator, kind: str = "binary") -> np.ndarray:
    """Hewitt & Liang (2019) control task: random labels per word *type*.

    Each type (e.g. target word) gets one label, drawn by permuting the
    per-type labels across types, and every occurrence of the type carries
    it. A type's label is its occurrences' label; a type whose occurrences
    carry different labels (a homograph in both senses, a pair in valid and
    invalid analogies) takes a random occurrence's label, drawn afresh for
    each control draw — never its first occurrence's, which the file's order
    decides (``senses`` lists every word's animal sense first, which made the
    control a constant). Binary draws that come out one-class are redrawn.
    Returns ``[n, n_draws]``.
    """
    y = np.asarray(y)
    uniq, first, inv = np.unique(types, return_index=True, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    y_by_type = y[order]
    mixed = np.flatnonzero(np.minimum.reduceat(y_by_type, starts) != np.maximum.reduceat(y_by_type, starts))
    tval = y[first]
    out = np.empty((len(y), n_draws), dtype=y.dtype)
    for b in range(n_draws):
        for _ in range(100):
            if len(mixed):        # only sets with mixed types draw here: the others' draws are unchanged
                tval = tval.copy()
                tval[mixed] = y_by_type[starts[mixed] + rng.integers(0, counts[mixed])]
            col = tval[rng.permutation(len(uniq))][inv]
            if kind != "binary" or len(np.unique(col)) > 1:
                break
        out[:, b] = col
    return out


def perm_pvalue(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided p = (1 + #{null >= observed}) / (1 + n_null); ``null`` has the
    permutations on axis 0, ``observed`` broadcasts against ``null[0]``."""
    null = np.asarray(null)
    ge = (null >= np.asarray(observed)[None] - 1e-12).sum(0)
    return (1.0 + ge) / (1.0 + null.shape[0])


def maxstat_pvalue(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Family-wise (Westfall-Young single-step max-T) adjusted p-values.

    ``null [n_perm, *cells]`` holds the statistic of every cell under each
    permutation (the SAME permuted label set for all cells of a permutation);
    the null of the family's maximum is ``null.max over cells``, and
    ``p_fwer(cell) = (1 + #{max_b >= observed(cell)}) / (1 + n_perm)``. NaN
    cells are ignored in the max.
    """
    null = np.asarray(null, dtype=np.float64)
    mx = np.nanmax(null.reshape(null.shape[0], -1), axis=1)
    obs = np.asarray(observed, dtype=np.float64)
    ge = (mx.reshape((-1,) + (1,) * obs.ndim) >= obs[None] - 1e-12).sum(0)
    return (1.0 + ge) / (1.0 + len(mx))


# --------------------------------------------------------------- bootstrap ---

def group_bootstrap_weights(groups: np.ndarray, n_boot: int, seed: int | np.random.Generator) -> np.ndarray:
    """``[n_boot, n]`` row multiplicities from resampling groups with replacement.

    Every replicate draws ``n_groups`` groups with replacement; a stimulus'
    weight is how many times its group was drawn.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    _, inv = np.unique(groups, return_inverse=True)
    G = inv.max() + 1
    draws = rng.integers(0, G, size=(n_boot, G))
    counts = np.zeros((n_boot, G))
    np.add.at(counts, (np.repeat(np.arange(n_boot), G), draws.ravel()), 1.0)
    return counts[:, inv]


def percentile_ci(samples: np.ndarray, level: float = LEVEL, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates along ``axis`` (NaNs ignored)."""
    a = (1 - level) / 2
    lo = np.nanquantile(samples, a, axis=axis)
    hi = np.nanquantile(samples, 1 - a, axis=axis)
    return lo, hi


def binomial_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for a binomial rate (scipy's exact method)."""
    from scipy.stats import binomtest
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def binomial_upper(k: int, n: int, level: float = LEVEL) -> float:
    """One-sided Clopper-Pearson upper bound for a binomial rate.

    The closed form (a beta quantile). ``binomtest(k, n, alternative="less").proportion_ci(method="exact")``
    finds the same bound by root finding, within 5e-13 (tests/test_stats.py compares them); the closed form
    is kept so that the claims' bounds stay bit-for-bit what they were."""
    from scipy.stats import beta
    if k >= n:
        return 1.0
    return float(beta.ppf(level, k + 1, n - k))


def binomial_lower(k: int, n: int, level: float = LEVEL) -> float:
    """One-sided Clopper-Pearson lower bound for a binomial rate (the closed form: see
    :func:`binomial_upper`)."""
    from scipy.stats import beta
    if k <= 0:
        return 0.0
    return float(beta.ppf(1 - level, k, n - k + 1))
