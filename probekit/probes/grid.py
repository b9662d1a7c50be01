"""Per-layer linear probes over an :class:`~probekit.activations.ActivationSet`: :func:`probe_grid`.

``probe_grid(acts)`` fits, for every label x layer x component ("cell"), a linear probe with
group-structured cross-validation and returns :class:`~probekit.results.ProbeResults`: a tidy
score table with bootstrap CIs, permutation p-values (per cell and family-wise across the layer x
component grid), Hewitt & Liang control-task selectivity and a surface-feature baseline, plus the
out-of-fold predictions behind them. This module only orchestrates: :mod:`probekit.design` decides
labels, folds and columns; :mod:`probekit.solver` fits them; :mod:`probekit.stats` turns the
out-of-fold predictions into metrics, p-values and intervals; :mod:`probekit.results` holds them.

Estimators: ``estimator="fast"`` (default) is ridge regression in dual (Gram) form -- ridge of
the rating for continuous labels (the paper's estimator), the least-squares linear SVM (a ridge
classifier on +-1 targets, sklearn's ``RidgeClassifierCV``; class = ``score > 0``) for binary
ones; features standardised on the training fold, an unpenalised intercept, the penalty chosen
per label column and outer fold by exact leave-one-out error over ``alphas`` (as
``Pipeline(StandardScaler(), RidgeCV())``). ``estimator="svm"``: a literal hinge-loss SVM for
binary labels (``SVC(kernel="precomputed")`` on the same Gram, ``C`` by inner 3-fold group CV;
slow). How closely they agree with scikit-learn and with each other is measured by
``benchmarks/perf/bench_probes.py`` (docs/performance.md) and guarded by ``tests/test_probes.py``.
Metrics are computed on the pooled out-of-fold predictions.

The names that lived here before the split are re-exported, so ``from probekit.probes import X``
keeps working for the solver, design, results and synthetic-data names.
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from probekit.probes import stats
from probekit.core.checks import PROGRESS_AFTER_S, PROGRESS_EVERY_S, ArgumentError, count
from probekit.probes.design import (SURFACE_COLUMNS, ColumnBlock, GridColumns, LabelColumns, LabelSpec,
                     ProbeInputError, SplitPlan, grid_columns, make_plans, resolve_labels, surface_matrix)
from probekit.probes.results import SCORE_COLUMNS, LabelPredictions, ProbeResults
from probekit.probes.solver import (DEFAULT_ALPHAS, DEFAULT_C_GRID, PENALTY_SELECTIONS, SOLVER_VERSION, eigh_psd,
                     fold_grams, probe_backend, ridge_oof, svm_oof)
from probekit.models.testing import make_synthetic_acts  # re-exported: tests and benchmarks import it from here

# probe_grid, plus the names other code imports from here since before the split
__all__ = ["probe_grid", "DEFAULT_ALPHAS", "DEFAULT_C_GRID", "SOLVER_VERSION", "SCORE_COLUMNS", "SURFACE_COLUMNS",
           "ColumnBlock", "GridColumns", "LabelColumns", "LabelPredictions", "LabelSpec", "ProbeInputError",
           "ProbeResults", "SplitPlan", "eigh_psd", "fold_grams", "grid_columns", "load_matrix", "make_plans",
           "make_synthetic_acts", "resolve_labels", "ridge_oof", "surface_matrix", "svm_oof"]

def probe_grid(acts, labels=None, *, n_splits: int = 6, estimator: str = "fast",
               n_permutations: int = 200, n_bootstrap: int = 1000, control_task: bool = True,
               n_control: int = 5, control_column: str = "target", alphas=DEFAULT_ALPHAS,
               C_grid=DEFAULT_C_GRID, stratify: str = "joint", surface_baseline: bool = True,
               layers: Sequence[int] | None = None, components: Sequence[str] | None = None,
               seed: int = 0, level: float = stats.LEVEL, n_threads: int | None = 1,
               n_jobs: int | None = None, precise: bool = False, progress: bool | None = None,
               backend: str = "auto", penalty_selection: str = "loo", metrics: Sequence[str] = ()) -> ProbeResults:
    """Probe every label x layer x component of ``acts``.

    Parameters
    ----------
    acts : ActivationSet
    labels : see :func:`probekit.design.resolve_labels` (default: all of ``acts.stimuli.attrs["labels"]``).
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
    level : two-sided level of the bootstrap CIs (``ci_low``/``ci_high``); kept in ``meta["level"]``.
    precise : float64 eigendecompositions and LOO residuals (default float32
        + float64 Rayleigh-quotient eigenvalues for the small ones; identical
        accuracies in the sklearn agreement tests, see :func:`probekit.solver.ridge_oof`).
    n_threads : BLAS/OpenMP threads during the call (restored afterwards; None leaves them
        alone). The matrices are small (n_train x n_train eigendecompositions): more threads gain
        little on them and slow ``eigh`` down sharply when another process competes for the cores.
    n_jobs : cells (layer x component) fitted at once, in threads (numpy releases the GIL in its
        BLAS/LAPACK calls); default: the cores this process may use. Every cell is computed alone, so
        the results are identical for any ``n_jobs``.
    progress : None (default) prints progress lines (cells done, time left) to stderr once the grid has run
        longer than a few seconds; True from the first cell; False never.
    backend : where the ridge solver runs (:func:`probekit.probes.solver.probe_backend`): ``"auto"``
        (default) follows the extraction's placement rule -- torch on CUDA when a GPU is visible, else
        numpy (today's exact path); ``"numpy"``, ``"torch"``, ``"torch:cpu"``, ``"torch:cuda"``. The resolved
        name is kept in ``meta["probe_backend"]``; the CUDA path's float32 GEMMs may choose a neighbouring
        penalty at near-ties (``tests/test_solver_backends.py``). ``precise=True`` implies numpy.
    penalty_selection : ``"loo"`` (default, exact leave-one-out, as scikit-learn's ``RidgeCV``) or
        ``"gcv"`` (cheaper, a different estimator; docs/performance-probes.md).
    metrics : optional metrics (:data:`probekit.probes.stats.OPTIONAL_METRICS`) scored besides the defaults,
        e.g. ``("auc",)``: the ROC AUC of binary labels' out-of-fold margins, with its own rows in ``scores``
        (bootstrap CI, permutation p-values, control task, surface baseline, like every metric). Opt-in: the
        default rows and every number in them are the same with or without it (docs/auc_vs_ba.md: cost and
        measured power).
    """
    n_splits = count(n_splits, "n_splits", 2)
    n_permutations = count(n_permutations, "n_permutations", 0)
    n_bootstrap = count(n_bootstrap, "n_bootstrap", 0)
    n_control = count(n_control, "n_control", 1)
    try:
        extra = stats.check_metrics(metrics)
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None
    if not 0 < level < 1:
        raise ArgumentError(f"level must be in (0, 1), got {level!r}")
    if estimator not in ("fast", "svm"):
        raise ProbeInputError(f"estimator must be 'fast' or 'svm', got {estimator!r}")
    n_jobs = default_jobs() if n_jobs is None else count(n_jobs, "n_jobs", 1)
    backend = probe_backend(backend, precise)          # a bad name or a missing GPU: refused before any work
    if penalty_selection not in PENALTY_SELECTIONS:
        raise ArgumentError(f"penalty_selection must be one of {', '.join(PENALTY_SELECTIONS)}, "
                            f"got {penalty_selection!r}")
    solver_kw = dict(precise=precise, backend=backend, penalty_selection=penalty_selection)
    with threadpool_limits(n_threads):      # None: no limit
        design = grid_columns(acts.stimuli, labels, n_splits=n_splits, seed=seed, stratify=stratify,
                              n_permutations=n_permutations, control_task=control_task, n_control=n_control,
                              control_column=control_column)
        layers = list(acts.layers if layers is None else layers)
        comps = tuple(acts.components if components is None else components)
        fits = _fit_cells(acts, design, layers, comps, estimator=estimator, n_permutations=n_permutations,
                          alphas=alphas, C_grid=C_grid, solver_kw=solver_kw, n_jobs=n_jobs,
                          progress=progress, name=str(acts.stimuli.attrs.get("name") or "grid"), extra=extra)
        baselines = (_surface_baselines(design, alphas=alphas, n_bootstrap=n_bootstrap, seed=seed, level=level,
                                        solver_kw=solver_kw, extra=extra) if surface_baseline else _empty_baselines())
        scores, predictions = _score_table(design, fits, baselines, layers, comps, acts.n_layers,
                                           n_permutations=n_permutations, n_bootstrap=n_bootstrap, seed=seed,
                                           level=level, extra=extra)
    meta = dict(seed=seed, n_splits=n_splits, estimator=estimator, solver_version=SOLVER_VERSION,
                n_permutations=n_permutations, n_bootstrap=n_bootstrap, n_control=n_control if control_task else 0,
                alphas=np.asarray(alphas).tolist(), C_grid=np.asarray(C_grid).tolist(), stratify=stratify,
                perm_scheme=design.schemes, alpha_first_cell=fits.alpha_first_cell, level=level,
                probe_backend=backend, penalty_selection=penalty_selection,
                model_name=getattr(acts, "model_name", "unknown"),
                stimuli_name=design.stimuli.attrs.get("name"), stimuli_hash=design.stimuli.attrs.get("hash"))
    if extra:                                   # only when asked for: a default run's meta.json is unchanged
        meta["metrics"] = list(extra)
    return ProbeResults(scores, predictions, baselines, design.specs, acts.n_layers, comps, meta)


@dataclass
class _CellFits:
    """Per label and metric, ``[n_layers, n_components]`` arrays over the grid (rows of layers not
    probed stay NaN): the ``observed`` score, the ``null`` scores of the permutations (leading axis)
    and the mean over the ``control`` draws; per label the real label's out-of-fold predictions
    ``oof [n_layers, n_components, rows]`` and the alphas chosen per fold in the first cell."""
    observed: dict[str, dict[str, np.ndarray]]
    null: dict[str, dict[str, np.ndarray]]
    control: dict[str, dict[str, np.ndarray]]
    oof: dict[str, np.ndarray]
    alpha_first_cell: dict[str, list]


def _fit_cells(acts, design: GridColumns, layers: list[int], comps: tuple[str, ...], *, estimator: str,
               n_permutations: int, alphas, C_grid, solver_kw: dict, n_jobs: int = 1,
               progress: bool | None = False, name: str = "grid", extra: tuple[str, ...] = ()) -> _CellFits:
    """Fit every column of every plan on every cell and score it (cells in ``n_jobs`` threads)."""
    specs, n = design.specs, len(design.stimuli)
    shape = (acts.n_layers, len(comps))
    metrics = {name: stats.metrics_for(spec.kind, extra) for name, spec in specs.items()}
    grid = lambda lead=(): {name: {mt: np.full(lead + shape, np.nan) for mt in metrics[name]}  # noqa: E731
                            for name in specs}
    fits = _CellFits(grid(), grid((n_permutations,)), grid(),
                     {name: np.full(shape + (len(plan.rows),), np.nan, dtype=np.float32)
                      for plan in design.plans for name in plan.labels},
                     {name: [] for name in specs})

    def fit_cell(cell):
        li, ci = cell
        X = load_matrix(acts, li, comps[ci], n)
        out = []
        for plan, cols in zip(design.plans, design.cols):
            oof, best = _fit_plan(X, plan, cols, estimator=estimator, alphas=alphas, C_grid=C_grid,
                                  solver_kw=solver_kw)
            # the metrics here, in the worker: only [rows] + [cols] arrays travel back
            mets = {name: stats.column_metrics(specs[name].kind, cols.values[:, block.start:block.stop],
                                               oof[:, block.start:block.stop], extra)
                    for name, block in cols.layout.items()}
            out.append((mets, {name: oof[:, block.start] for name, block in cols.layout.items()},
                        {name: best[:, block.start] for name, block in cols.layout.items()}))
        return out

    cells = [(li, ci) for li in layers for ci in range(len(comps))]
    bar = _CellProgress(name, len(cells), progress)
    for (li, ci), per_plan in zip(cells, _map_ordered(fit_cell, cells, n_jobs)):
        bar.step(li, comps[ci])
        for cols, (mets, oof0, best0) in zip(design.cols, per_plan):
            for name, block in cols.layout.items():
                n_perm = block.n_permutations
                for mt, v in mets[name].items():
                    fits.observed[name][mt][li, ci] = v[0]
                    if n_perm:
                        fits.null[name][mt][:, li, ci] = v[1:1 + n_perm]
                    if block.n_control:
                        fits.control[name][mt][li, ci] = np.nanmean(v[1 + n_perm:])
                fits.oof[name][li, ci] = oof0[name]
                if li == layers[0] and ci == 0:
                    fits.alpha_first_cell[name] = np.asarray(alphas)[best0[name]].tolist()
    bar.close()
    return fits


class _CellProgress:
    """Progress of the grid on stderr: cells done, elapsed, time left (the extraction's timing rules)."""

    def __init__(self, name: str, n_cells: int, mode: bool | None):
        self.name, self.n, self.mode, self.done = name, n_cells, mode, 0
        self.t0, self.last = time.monotonic(), None
        self.after = 0.0 if mode else PROGRESS_AFTER_S

    def step(self, layer: int, comp: str) -> None:
        self.done += 1
        now = time.monotonic()
        if self.mode is False or now - self.t0 < self.after or (self.last and now - self.last < PROGRESS_EVERY_S):
            return
        self.last = now
        dt = now - self.t0
        print(f"probes {self.name}: {self.done}/{self.n} cells (layer {layer} {comp}), {dt:.0f} s, "
              f"~{dt / self.done * (self.n - self.done):.0f} s left", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.last is not None:
            print(f"probes {self.name}: {self.n} cells done in {time.monotonic() - self.t0:.1f} s", file=sys.stderr,
                  flush=True)


def default_jobs() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                      # not on Linux
        return max(1, os.cpu_count() or 1)


def _map_ordered(fn, items: list, n_jobs: int):
    """``map(fn, items)`` in ``n_jobs`` threads, results in order, at most ``2 * n_jobs`` in flight."""
    if n_jobs <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(n_jobs) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * n_jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _fit_plan(X: np.ndarray, plan: SplitPlan, cols: LabelColumns, *, estimator: str, alphas, C_grid,
              solver_kw: dict) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions and chosen penalty indices for every column of one plan on one cell."""
    grams = fold_grams(X[plan.rows], plan.folds)
    is_bin = cols.is_binary
    if estimator == "fast" or not is_bin.any():
        return ridge_oof(grams, plan.folds, cols.targets, alphas, **solver_kw)
    oof = np.zeros_like(cols.targets)
    best = np.zeros((len(plan.folds), cols.targets.shape[1]), dtype=np.int64)
    if (~is_bin).any():
        oof[:, ~is_bin], best[:, ~is_bin] = ridge_oof(grams, plan.folds, cols.targets[:, ~is_bin], alphas,
                                                      **solver_kw)
    oof[:, is_bin], best[:, is_bin] = svm_oof(grams, plan.folds, plan.groups, cols.values[:, is_bin], C_grid)
    return oof, best


_BASELINE_COLUMNS = ["label", "kind", "role", "metric", "value", "ci_low", "ci_high", "chance", "features", "n"]


def _empty_baselines() -> pd.DataFrame:
    return pd.DataFrame([], columns=_BASELINE_COLUMNS)


def _surface_baselines(design: GridColumns, *, alphas, n_bootstrap: int, seed: int, level: float,
                       solver_kw: dict, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The same CV from the surface columns alone (the label's own column left out), one row per
    label and metric."""
    rows = []
    for plan in design.plans:
        for name in plan.labels:
            spec = design.specs[name]
            Xs, cols = surface_matrix(design.stimuli, name)
            if Xs is None:
                continue
            y = design.Y[name].to_numpy()[plan.rows]
            target = 2 * y - 1 if spec.kind == "binary" else y
            oof, _ = ridge_oof(fold_grams(Xs[plan.rows], plan.folds), plan.folds, target[:, None], alphas,
                               **solver_kw)
            boot = None
            if n_bootstrap:
                weights = stats.group_bootstrap_weights(plan.groups, n_bootstrap, seed)
                boot = stats.weighted_metrics(spec.kind, y, oof, weights, extra)
            for mt, v in stats.column_metrics(spec.kind, y, oof[:, 0], extra).items():
                lo, hi = stats.percentile_ci(boot[mt][:, 0], level) if boot is not None else (np.nan, np.nan)
                rows.append(dict(label=name, kind=spec.kind, role=spec.role, metric=mt, value=float(v),
                                 ci_low=float(lo), ci_high=float(hi),
                                 chance=stats.chance_level(spec.kind, mt, y), features=",".join(cols), n=len(y)))
    return pd.DataFrame(rows, columns=_BASELINE_COLUMNS)


def _score_table(design: GridColumns, fits: _CellFits, baselines: pd.DataFrame, layers: list[int],
                 comps: tuple[str, ...], n_layers: int, *, n_permutations: int, n_bootstrap: int, seed: int,
                 level: float, extra: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict[str, LabelPredictions]]:
    """The tidy scores (:data:`~probekit.results.SCORE_COLUMNS`) and each label's predictions."""
    surface = {(r.label, r.metric): r.value for r in baselines.itertuples()}
    predictions, rows = {}, []
    lay = np.asarray(layers)
    blank = np.full((len(layers), len(comps)), np.nan)
    for plan in design.plans:
        fold_ids = plan.fold_ids()
        for name in plan.labels:
            spec = design.specs[name]
            y = design.Y[name].to_numpy()[plan.rows]
            predictions[name] = LabelPredictions(plan.rows, y, plan.groups, fold_ids, fits.oof[name])
            boot = None
            if n_bootstrap:
                weights = stats.group_bootstrap_weights(plan.groups, n_bootstrap, seed)
                cells = fits.oof[name][lay].reshape(len(layers) * len(comps), -1).T     # [rows, cells]
                boot = stats.weighted_metrics(spec.kind, y, cells, weights, extra)
            for mt, observed in fits.observed[name].items():
                if n_permutations:
                    null = fits.null[name][mt][:, lay]
                    p = stats.perm_pvalue(observed[lay], null)
                    p_fwer = stats.maxstat_pvalue(observed[lay], null)
                    null_mean = np.nanmean(null, 0)
                else:
                    p = p_fwer = null_mean = blank
                if boot is not None:
                    lo, hi = (a.reshape(len(layers), len(comps)) for a in stats.percentile_ci(boot[mt], level))
                else:
                    lo = hi = blank
                chance = stats.chance_level(spec.kind, mt, y)
                for i, li in enumerate(layers):
                    for ci, comp in enumerate(comps):
                        val = observed[li, ci]
                        control = fits.control[name][mt][li, ci]
                        rows.append((name, spec.kind, spec.role, li, li / n_layers, comp, mt, val, lo[i, ci],
                                     hi[i, ci], chance, p[i, ci], p_fwer[i, ci], control, val - control,
                                     null_mean[i, ci], surface.get((name, mt), np.nan), len(y)))
    return pd.DataFrame(rows, columns=SCORE_COLUMNS), predictions


def load_matrix(acts, layer: int, comp: str, n: int) -> np.ndarray:
    """``acts``' layer x component as a float32 ``[n, d]`` matrix; ProbeInputError on a wrong shape or bad values."""
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
