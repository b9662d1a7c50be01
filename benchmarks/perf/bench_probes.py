"""Benchmark: the fast probe grid vs scikit-learn loops on the same data, folds and label columns.

    .venv/bin/python benchmarks/perf/bench_probes.py                   # real SmolLM2-135M activations, items set
    .venv/bin/python benchmarks/perf/bench_probes.py --data synthetic  # n=240, d=576, 30 layers, 8 binary labels
    .venv/bin/python benchmarks/perf/bench_probes.py --quick           # fewer cells and permutations

Two workloads, each timed side by side in one run on the same cells (layer x component):

  A  labels only: every label of the set, fitting and scoring only.
  B  the grid as ``replicate()`` runs it: every label plus ``--perms`` group-aware permutations and
     ``--controls`` Hewitt & Liang control-task draws per label (the columns come from
     ``probekit.probes.grid_columns``, which the grid itself calls, so every loop fits the grid's columns),
     fitting, scoring and permutation p-values (no bootstrap: the loops have none).

Estimators:

  fast    ``probe_grid``: dual ridge / LS-SVM, one eigendecomposition per cell x fold shared by all
          columns and all 9 alphas (LOO alpha per column).
  oracle  a loop of ``Pipeline(StandardScaler, RidgeClassifierCV(alphas))`` (binary) /
          ``RidgeCV(alphas)`` (continuous), one fit per column x fold: the same estimator, so it must
          agree (the issue's tolerance: accuracy within 1 pp, r within 0.01 per cell).
  multi   ``Pipeline(StandardScaler, RidgeCV(alphas, alpha_per_target=True))``, one multi-target fit per
          cell x fold for all columns (binary as +-1): scikit-learn's own sharing of the decomposition.
  plain   a loop of ``LinearSVC(C=1)`` (binary) / ``Ridge(alpha=1)`` (continuous), one fit per
          column x fold (workload A only). A hinge SVM is not the same estimator: agreement is shown,
          not required.

Everything runs on one thread (``probe_grid(n_threads=1)``, ``threadpool_limits(1)`` for the loops).
Target (issue 4): the fast grid >= 20x faster than the plain per-column loops at the agreement above.
Speed targets live here, never in unit tests.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from probekit import stats as S  # noqa: E402
from probekit.probes import DEFAULT_ALPHAS, grid_columns, make_synthetic_acts, probe_grid  # noqa: E402

SEED = 0
N_SPLITS = 6


def load_acts(data: str):
    if data == "synthetic":
        L = 30
        sig = 0.35 * np.exp(-0.5 * ((np.arange(L) - L / 3) / (L / 5)) ** 2) + 0.05
        return make_synthetic_acts(n_groups=40, per_group=6, d=576, n_layers=L, n_binary=8, n_continuous=0,
                                   signal=sig, word_noise=1.0, seed=0)
    import probekit
    import probekit.stimuli as St
    model = probekit.load_model("smollm2-135m")
    return probekit.extract(model, St.load(data), store=True, progress=False)


def timed(repeat: int, fn):
    """(result, median wall time of ``repeat`` calls): the fast grid takes about a second,
    so one call is at the mercy of a noisy machine; the loops take minutes and run once."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def loop(acts, cells, gc, how: str):
    """Out-of-fold scores of every column on every cell, one scikit-learn fit at a time
    (``how="multi"``: one multi-target fit per cell x fold). Returns (seconds, {plan index: [cells, n, cols]})."""
    from sklearn.base import clone
    from sklearn.linear_model import Ridge, RidgeClassifierCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC
    from threadpoolctl import threadpool_limits

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


def agreement(fast, other, with_p: bool):
    acc = [np.abs(fast[k][0] - other[k][0]) for k in fast if k[1] == "accuracy"]
    rr = [np.abs(fast[k][0] - other[k][0]) for k in fast if k[1] == "r"]
    parts = []
    if acc:
        parts.append(f"accuracy max |diff| {100 * np.max(acc):.2f} pp (mean {100 * np.mean(acc):.2f})")
    if rr:
        parts.append(f"r max |diff| {np.max(rr):.4f}")
    if with_p:
        dp = [np.abs(fast[k][1] - S.perm_pvalue(other[k][0], other[k][1])) for k in fast]
        parts.append(f"p-value max |diff| {np.max(dp):.3f}")
    ok_acc = not acc or 100 * np.max(acc) <= 1.0
    ok_r = not rr or np.max(rr) <= 0.01
    return ", ".join(parts), ok_acc and ok_r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="items", help="'synthetic' or a stimulus set (SmolLM2-135M activations)")
    ap.add_argument("--quick", action="store_true", help="2 layers for A, 20 permutations for B")
    ap.add_argument("--a-layers", type=int, default=6, help="layers (evenly spaced) for workload A's loops")
    ap.add_argument("--b-layers", type=int, default=1, help="layers for workload B")
    ap.add_argument("--perms", type=int, default=100, help="permutations per label in workload B")
    ap.add_argument("--controls", type=int, default=5, help="control-task draws per label in workload B")
    ap.add_argument("--skip-plain", action="store_true", help="skip the LinearSVC loop (slow on real activations)")
    ap.add_argument("--skip-b", action="store_true", help="workload A only")
    ap.add_argument("--repeat", type=int, default=5, help="fast-grid timings are the median of this many runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.a_layers, args.perms = 2, 20
    import sklearn
    import torch

    acts = load_acts(args.data)
    comps = list(acts.components)
    L = acts.n_layers
    pick = lambda k: sorted({int(round(x)) for x in np.linspace(0, L - 1, k)}) if k > 1 else [L // 2]  # noqa: E731
    a_layers, b_layers = pick(args.a_layers), pick(args.b_layers)
    print(f"probekit probe benchmark: data={args.data} (n={len(acts)}, d={acts.d_model}, {L} layers x "
          f"{len(comps)} components), {N_SPLITS}-fold group CV, 1 thread, torch {torch.__version__}, "
          f"scikit-learn {sklearn.__version__}, {os.cpu_count()} cpus")

    fit_only = dict(n_bootstrap=0, surface_baseline=False, seed=SEED, n_splits=N_SPLITS)
    probe_grid(acts, layers=[0], components=comps[:1], n_permutations=0, control_task=False, **fit_only)  # warm-up
    rows = []

    # --- A: labels only ------------------------------------------------------
    gc = grid_columns(acts.stimuli, n_splits=N_SPLITS, seed=SEED, n_permutations=0, control_task=False)
    n_cols = sum(c[0].shape[1] for c in gc.cols)
    cells = [(l, c) for l in a_layers for c in comps]
    fastA, tA = timed(args.repeat, lambda: probe_grid(acts, layers=a_layers, n_permutations=0, control_task=False,
                                                      **fit_only))
    _, t_all = timed(args.repeat, lambda: probe_grid(acts, n_permutations=0, control_task=False, **fit_only))
    fA = fast_scores(fastA, cells)
    print(f"\nA  labels only: {n_cols} columns x {len(cells)} cells (layers {a_layers}) x {N_SPLITS} folds "
          f"= {n_cols * len(cells) * N_SPLITS} fits per loop")
    print(f"   (fast grid over all {L * len(comps)} cells: {t_all:.2f} s)")
    hows = ["oracle", "multi"] + ([] if args.skip_plain else ["plain"])
    rows.append(("A", "fast", tA, "", True))
    for how in hows:
        dt, oofs = loop(acts, cells, gc, how)
        txt, ok = agreement(fA, loop_scores(gc, cells, oofs, fastA), with_p=False)
        rows.append(("A", how, dt, txt, ok))

    # --- B: labels + permutations + control task ------------------------------
    if args.skip_b:
        return report(rows, tA, None)
    gc = grid_columns(acts.stimuli, n_splits=N_SPLITS, seed=SEED, n_permutations=args.perms,
                      control_task=args.controls > 0, n_control=args.controls)
    n_cols = sum(c[0].shape[1] for c in gc.cols)
    cells = [(l, c) for l in b_layers for c in comps]
    fastB, tB = timed(args.repeat, lambda: probe_grid(acts, layers=b_layers, n_permutations=args.perms,
                                                      control_task=args.controls > 0, n_control=args.controls,
                                                      **fit_only))
    fB = fast_scores(fastB, cells)
    print(f"B  labels + {args.perms} permutations + {args.controls} control draws each: {n_cols} columns x "
          f"{len(cells)} cells (layers {b_layers}) x {N_SPLITS} folds = {n_cols * len(cells) * N_SPLITS} fits per loop")
    rows.append(("B", "fast", tB, "", True))
    for how in ("oracle", "multi"):
        dt, oofs = loop(acts, cells, gc, how)
        txt, ok = agreement(fB, loop_scores(gc, cells, oofs, fastB), with_p=True)
        rows.append(("B", how, dt, txt, ok))

    report(rows, tA, tB)


def report(rows, tA, tB):
    names = {"fast": "fast grid (probe_grid)", "oracle": "loop RidgeClassifierCV / RidgeCV",
             "multi": "RidgeCV multi-target per cell x fold", "plain": "loop LinearSVC(C=1) / Ridge(1)"}
    print(f"\n{'':3}{'method':<38}{'seconds':>9}{'  x fast':>9}   agreement with fast (same folds)")
    for wl, how, dt, txt, ok in rows:
        t_fast = tA if wl == "A" else tB
        flag = "" if how in ("fast", "plain") else ("  [within 1 pp / 0.01]" if ok else "  [OUTSIDE 1 pp / 0.01]")
        print(f"{wl:<3}{names[how]:<38}{dt:>9.2f}{dt / t_fast:>9.1f}   {txt}{flag}")
    print("\nspeed ratios (plain per-column loops / fast, target >= 20x):")
    for wl, how, dt, _, ok in rows:
        if how in ("oracle", "plain"):
            t_fast = tA if wl == "A" else tB
            print(f"  {wl} {names[how]:<36} {dt / t_fast:6.1f}x")


if __name__ == "__main__":
    main()
