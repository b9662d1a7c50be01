"""The fast probe grid vs scikit-learn loops on the same columns and folds (pytest-benchmark).

    pytest benchmarks/perf/bench_probes.py --benchmark-only [--full] [--model NAME]
    python benchmarks/perf/bench_probes.py [pytest options]          # the same (a thin wrapper)

Two workloads, each on the same cells (layer x component) for every estimator:

  labels        every label of the set, fitting and scoring only.
  permutations  the grid as ``replicate()`` runs it: every label plus group-aware
                permutations and Hewitt & Liang control-task draws per label
                (quick: 10 + 1; ``--full``: 100 + 5), fitting, scoring and
                permutation p-values (no bootstrap: the loops have none).

The columns come from ``probekit.probes.grid_columns``, which the grid itself
calls, so every loop refits the grid's own columns on the grid's own folds.

Estimators:

  fast    (timed by pytest-benchmark) ``probe_grid``: dual ridge / LS-SVM, one
          eigendecomposition per cell x fold shared by all columns and 9 alphas.
  oracle  a loop of ``Pipeline(StandardScaler, RidgeClassifierCV(alphas))`` (binary) /
          ``RidgeCV(alphas)`` (continuous), one fit per column x fold: the same
          estimator, so it must agree (accuracy within 1 pp, r within 0.01 per
          cell; asserted). ``extra_info['ratio']`` = oracle loop time / fast time.
  multi   ``Pipeline(StandardScaler, RidgeCV(alphas, alpha_per_target=True))``, one
          multi-target fit per cell x fold (scikit-learn's own sharing of the
          decomposition): ``ratio_vs_multi``.
  plain   (labels only) a loop of ``LinearSVC(C=1)`` / ``Ridge(alpha=1)``: not the
          same estimator, agreement shown, not required: ``ratio_vs_plain``
          (target >= 20).

Data: the benchmark model's activations of the ``items`` set (through the
activation store) and a synthetic set (n=240, d=576, 30 layers, 8 binary labels).
Quick: 1 layer (3 cells) for labels, 1 cell (middle layer, resid_pre) with 10
permutations + 1 control draw; ``--full`` (the README's sizes): 6 layers (18
cells) for labels, 1 cell with 100 permutations + 5 control draws per label (the
columns ``replicate()`` fits; a loop's time grows linearly with the cells). Everything runs on
one thread (``probe_grid(n_threads=1)``, ``threadpool_limits(1)`` for the loops).
The fast grid's time is the median of its rounds; each loop runs once.
"""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pytest

SEED = 0
N_SPLITS = 6
SIZES = {  # quick / --full
    False: dict(a_layers=1, b_layers=1, b_components=1, perms=10, controls=1, rounds=3),
    True: dict(a_layers=6, b_layers=1, b_components=1, perms=100, controls=5, rounds=5),
}


def synthetic_acts():
    from probekit.probes.grid import make_synthetic_acts
    L = 30
    sig = 0.35 * np.exp(-0.5 * ((np.arange(L) - L / 3) / (L / 5)) ** 2) + 0.05
    return make_synthetic_acts(n_groups=40, per_group=6, d=576, n_layers=L, n_binary=8, n_continuous=0,
                               signal=sig, word_noise=1.0, seed=0)


def loop(acts, cells, gc, how: str):
    """Out-of-fold scores of every column on every cell, one scikit-learn fit at a time
    (``how="multi"``: one multi-target fit per cell x fold). Returns (seconds, {plan index: [cells, n, cols]})."""
    from sklearn.base import clone
    from sklearn.linear_model import Ridge, RidgeClassifierCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC
    from threadpoolctl import threadpool_limits

    from probekit.probes.grid import DEFAULT_ALPHAS

    def est(binary: bool):
        if how == "oracle":
            return RidgeClassifierCV(alphas=DEFAULT_ALPHAS) if binary else RidgeCV(alphas=DEFAULT_ALPHAS)
        return LinearSVC(C=1.0, max_iter=5000) if binary else Ridge(alpha=1.0)

    out = {}
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")             # LinearSVC convergence warnings on real activations
        t0 = time.perf_counter()
        for pi, (plan, (Y01, Yfit, is_bin, _)) in enumerate(zip(gc.plans, gc.cols)):
            oof = np.empty((len(cells), len(plan.rows), Y01.shape[1]))
            for c, (layer, comp) in enumerate(cells):
                X = np.asarray(acts.get(layer, comp), dtype=np.float32)[plan.rows]
                for tr, te in plan.folds:
                    if how == "multi":
                        m = make_pipeline(StandardScaler(), RidgeCV(alphas=DEFAULT_ALPHAS, alpha_per_target=True))
                        oof[c, te] = m.fit(X[tr], Yfit[tr]).predict(X[te])
                        continue
                    for j in range(Y01.shape[1]):
                        m = make_pipeline(StandardScaler(), clone(est(bool(is_bin[j]))))
                        if is_bin[j]:
                            m.fit(X[tr], Y01[tr, j].astype(int))
                            oof[c, te, j] = m.decision_function(X[te])
                        else:
                            oof[c, te, j] = m.fit(X[tr], Y01[tr, j]).predict(X[te])
            out[pi] = oof
        dt = time.perf_counter() - t0
    return dt, out


def loop_scores(gc, cells, oofs, fast):
    """{(label, metric): (observed [cells], null [n_perm, cells])} from a loop's OOF scores,
    in the metric the fast results report for each label."""
    from probekit.probes import stats as S
    res = {}
    for pi, (Y01, _, _, layout) in enumerate(gc.cols):
        for name, (c0, npm, _) in layout.items():
            kind, metric = gc.specs[name].kind, fast.default_metric(name)
            v = np.stack([S.column_metrics(kind, Y01[:, c0:c0 + 1 + npm], oofs[pi][c, :, c0:c0 + 1 + npm])[metric]
                          for c in range(len(cells))])                      # [cells, 1 + npm]
            res[(name, metric)] = (v[:, 0], v[:, 1:].T)
    return res


def fast_scores(res, cells):
    out = {}
    s = res.scores.set_index(["label", "metric", "layer", "component"])
    for name in res.labels:
        metric = res.default_metric(name)
        rows = s.loc[[(name, metric, l, c) for l, c in cells]]
        out[(name, metric)] = (rows.value.to_numpy(), rows.p_value.to_numpy())
    return out


def agreement(fast, other, with_p: bool) -> dict:
    """Max |difference| per cell between the fast grid and a loop (accuracy in pp, r, p-values)."""
    from probekit.probes import stats as S
    acc = [np.abs(fast[k][0] - other[k][0]) for k in fast if k[1] == "accuracy"]
    rr = [np.abs(fast[k][0] - other[k][0]) for k in fast if k[1] == "r"]
    out = {}
    if acc:
        out["accuracy_max_diff_pp"] = float(100 * np.max(acc))
        out["accuracy_mean_diff_pp"] = float(100 * np.mean(acc))
    if rr:
        out["r_max_diff"] = float(np.max(rr))
    if with_p:
        out["p_max_diff"] = float(max(np.max(np.abs(fast[k][1] - S.perm_pvalue(other[k][0], other[k][1])))
                                      for k in fast))
    out["within_tolerance"] = bool(out.get("accuracy_max_diff_pp", 0) <= 1.0 and out.get("r_max_diff", 0) <= 0.01)
    return out


def _pick(L: int, k: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(0, L - 1, k)}) if k > 1 else [L // 2]


def run_grid(benchmark, acts, workload: str, full: bool, data: str) -> None:
    import sklearn

    from probekit.probes.grid import grid_columns, probe_grid

    from .harness import set_ratio
    size = SIZES[full]
    comps = list(acts.components)
    if workload == "labels":
        layers, comps_used, perms, controls, hows = _pick(acts.n_layers, size["a_layers"]), comps, 0, 0, \
            ("oracle", "multi", "plain")
    else:
        layers = _pick(acts.n_layers, size["b_layers"])
        comps_used = comps[:size["b_components"]] if size["b_components"] else comps
        perms, controls, hows = size["perms"], size["controls"], ("oracle", "multi")
    cells = [(l, c) for l in layers for c in comps_used]
    kw = dict(n_splits=N_SPLITS, seed=SEED, n_permutations=perms, control_task=controls > 0,
              n_control=max(controls, 1))
    gc = grid_columns(acts.stimuli, **kw)
    n_cols = sum(c[0].shape[1] for c in gc.cols)

    def fast():
        return probe_grid(acts, layers=layers, components=comps_used, n_bootstrap=0, surface_baseline=False,
                          n_threads=1, **kw)

    probe_grid(acts, layers=[0], components=comps[:1], n_permutations=0, control_task=False, n_bootstrap=0,
               surface_baseline=False, seed=SEED, n_splits=N_SPLITS)            # warm-up
    res = benchmark.pedantic(fast, rounds=size["rounds"])
    fs = fast_scores(res, cells)
    info = benchmark.extra_info
    loops = {}
    for how in hows:
        dt, oofs = loop(acts, cells, gc, how)
        loops[how] = dt
        info[f"{how}_s"] = dt
        info[f"agreement_{how}"] = agreement(fs, loop_scores(gc, cells, oofs, res), with_p=perms > 0)
    set_ratio(benchmark, loops["oracle"], "scikit-learn oracle loop time (same estimator, one fit per column x "
              "fold) / fast grid time, same columns, folds and cells")
    t = info["median_s"]
    for how in hows[1:]:
        info[f"ratio_vs_{how}"] = loops[how] / t if t else None
    if "plain" in hows:
        info["ratio_vs_plain_target"] = 20.0
    info.update(data=data, workload=workload, n_stimuli=len(acts), d_model=acts.d_model, n_layers=acts.n_layers,
                cells=[f"{l}:{c}" for l, c in cells], n_cells=len(cells), n_columns=n_cols,
                n_labels=len(gc.specs), n_permutations=perms, n_control=controls, n_splits=N_SPLITS,
                fits_per_loop=n_cols * len(cells) * N_SPLITS, threads=1, sklearn=sklearn.__version__)
    if t:
        info["stimuli_per_s"] = len(acts) * len(cells) / t
        info["stimuli_per_s_meaning"] = "stimuli x cells probed per second (all columns, all folds)"
    if full and workload == "labels":
        _, info["whole_grid_labels_s"] = _timed(lambda: probe_grid(
            acts, n_permutations=0, control_task=False, n_bootstrap=0, surface_baseline=False,
            seed=SEED, n_splits=N_SPLITS))
    bad = info["agreement_oracle"]
    assert bad["within_tolerance"], f"fast grid disagrees with the scikit-learn oracle on the same folds: {bad}"


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


_ACTS: dict = {}


@pytest.mark.parametrize("workload", ["labels", "permutations"])
def test_probe_grid(benchmark, bench_model, loaded_model, full, workload):
    """The benchmark model's activations of the ``items`` set (extracted once into the store)."""
    import probekit
    import probekit.stimuli.sets as St
    if bench_model not in _ACTS:
        _ACTS[bench_model] = probekit.extract(loaded_model, St.load("items"), store=True, progress=False)
    run_grid(benchmark, _ACTS[bench_model], workload, full, data=f"{loaded_model.name} items")


@pytest.mark.parametrize("workload", ["labels", "permutations"])
def test_probe_grid_synthetic(benchmark, full, workload, torch_threads):
    if "synthetic" not in _ACTS:
        _ACTS["synthetic"] = synthetic_acts()
    run_grid(benchmark, _ACTS["synthetic"], workload, full, data="synthetic")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "--benchmark-only", *sys.argv[1:]]))
