"""What choosing the ridge penalty more cheaply does to the permutation null (issue 20), measured.

    python benchmarks/calibration/perm_null_penalty.py [--model smollm2-135m] [--reps 1000] [--out FILE.md]

The probe stage's time is the exact leave-one-out penalty choice of every column (the real labels, 100
permutations per label, the control draws): an ``n_train^2 x alphas x columns`` GEMM per fold. Two cheaper
procedures would remove most of it:

* **reuse**: choose alpha (per fold) on the real labels only and fit every permutation of that label with
  it (the selection GEMM then covers ~1% of the columns);
* **gcv**: choose alpha per column by generalised cross-validation (eigenvalues and ``U^T y`` only).

A permutation p-value is exact when the permuted columns go through the same procedure as the observed
one; "reuse" breaks that (the observed labels get an alpha tuned for them, the permutations do not), "gcv"
keeps it but is another estimator. This script measures each procedure's per-cell size at 5% on data
where the null is true by construction: real activations of the model (one experiment's store entry), the
observed labels themselves a permutation of a real label (the same group/stratum scheme as the grid's
permutations), 100 further permutations as the null, ``--reps`` such worlds per cell. It also times one
fold's penalty choice at the pipeline's column count for each procedure. No default changes with it; it
informs the choice.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from threadpoolctl import threadpool_limits  # noqa: E402

from probekit.probes import stats  # noqa: E402
from probekit.probes.solver import DEFAULT_ALPHAS, _gcv_scores, _loo_best, eigh_psd, fold_grams  # noqa: E402

PROCEDURES = ("exact", "reuse", "gcv")


def cell_null(X, folds, y, kind, groups, strata, reps, n_perm, rng, alphas=DEFAULT_ALPHAS):
    """p-values ``{procedure: [reps]}`` of the observed column in ``reps`` null worlds of one cell."""
    grams = fold_grams(X, folds)
    eig = [eigh_psd(K) for K, _ in grams]
    al = np.asarray(alphas, dtype=np.float64)
    out = {p: np.empty(reps) for p in PROCEDURES}
    for r in range(reps):
        Yp, _ = stats.group_permutations(y, groups, n_perm + 1, rng, strata=strata)
        vals = Yp                                                   # column 0: the "observed" labels
        T = 2.0 * vals - 1.0 if kind == "binary" else vals
        oof = {p: np.empty_like(T) for p in PROCEDURES}
        for (lam, U), (K, Kte), (tr, te) in zip(eig, grams, folds):
            Ytr = T[tr]
            ymean = Ytr.mean(0)
            B = U.T @ (Ytr - ymean)
            W = 1.0 / (lam[None, :] + al[:, None])
            best = {"exact": _loo_best(U, W, B, al, False, 6.4e7)}
            best["reuse"] = np.full(T.shape[1], best["exact"][0])   # the observed column's alpha for all
            best["gcv"] = np.argmin(_gcv_scores(lam, W, B, al), 0)
            KU = Kte @ U
            for p in PROCEDURES:
                oof[p][te] = ymean + KU @ (W[best[p]].T * B)
        metric = "balanced_accuracy" if kind == "binary" else "r"
        for p in PROCEDURES:
            v = stats.column_metrics(kind, vals, oof[p])[metric]
            out[p][r] = stats.perm_pvalue(v[0], v[1:])
    return out


def fold_times(X, folds, m, rng, alphas=DEFAULT_ALPHAS):
    """Seconds of one fold's penalty choice for ``m`` columns (best of 3), per procedure."""
    (K, _), (tr, _) = fold_grams(X, folds)[0], folds[0]
    lam, U = eigh_psd(K)
    al = np.asarray(alphas, dtype=np.float64)
    Y = rng.standard_normal((len(tr), m))
    B = U.T @ (Y - Y.mean(0))
    W = 1.0 / (lam[None, :] + al[:, None])
    runs = {"exact": lambda: _loo_best(U, W, B, al, False, 6.4e7),
            "reuse": lambda: _loo_best(U, W, B[:, : max(1, m // 101)], al, False, 6.4e7),
            "gcv": lambda: np.argmin(_gcv_scores(lam, W, B, al), 0)}
    out = {}
    for p, f in runs.items():
        best = np.inf
        for _ in range(3):
            t = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - t)
        out[p] = best
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--experiment", default="items")
    ap.add_argument("--labels", default="living,size", help="one binary and one continuous label")
    ap.add_argument("--layers", default="6,15,24")
    ap.add_argument("--component", default="resid_pre")
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--perms", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    os.environ.setdefault("PROBEKIT_CACHE", str(Path.home() / ".cache" / "probekit"))
    import probekit
    from probekit.extraction import extract
    from probekit.probes.design import grid_columns
    from probekit.probes.grid import _load_matrix
    from probekit.studies import load_study
    exp = load_study("bogdan2025").experiments[a.experiment]
    acts = exp.activations(extract(probekit.load_model(a.model), exp.stimulus_frame(), store=True, progress=False))
    labels = a.labels.split(",")
    design = grid_columns(acts.stimuli, labels, n_splits=6, seed=0, n_permutations=0, control_task=False)
    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(1):
        for li in [int(x) for x in a.layers.split(",")]:
            Xall = _load_matrix(acts, li, a.component, len(design.stimuli))
            for plan in design.plans:
                X = Xall[plan.rows]
                strata = np.empty(len(plan.rows), dtype=np.int64)
                for k, (_, te) in enumerate(plan.folds):
                    strata[te] = k
                for name in plan.labels:
                    spec = design.specs[name]
                    y = design.stimuli[name].to_numpy(dtype=np.float64)[plan.rows]
                    st = strata if name in plan.stratified_on else None
                    t = time.perf_counter()
                    p = cell_null(X, plan.folds, y, spec.kind, plan.groups, st, a.reps, a.perms, rng)
                    for proc, pv in p.items():
                        k = int((pv <= 0.05).sum())
                        lo, hi = stats.binomial_interval(k, a.reps)
                        rows.append((li, name, proc, k / a.reps, lo, hi))
                    print(f"layer {li} {name}: " + ", ".join(f"{r[2]} {r[3]:.3f}" for r in rows[-3:])
                          + f" ({time.perf_counter() - t:.0f} s)", flush=True)
        ntr = len(plan.folds[0][0])
        times = fold_times(X, plan.folds, 1802, rng)
    lines = [f"# Permutation-null size of three penalty choices ({a.model}, {a.experiment}, {a.component})", "",
             f"{a.reps} null worlds per cell (observed labels = a permutation of the real label, same scheme as "
             f"the grid's), {a.perms} permutations each; size = share of p <= 0.05, exact 95% interval. "
             f"Generated by `benchmarks/calibration/perm_null_penalty.py`.", "",
             "| layer | label | procedure | size at 5% | 95% interval |", "|---|---|---|---|---|"]
    lines += [f"| {li} | {n} | {p} | {s:.3f} | [{lo:.3f}, {hi:.3f}] |" for li, n, p, s, lo, hi in rows]
    lines += ["", f"One fold's penalty choice, 1,802 columns (the items grid's), n_train = {ntr}, one thread, "
              "best of 3 (exact = today's kernel): "
              + ", ".join(f"{p} {t * 1e3:.1f} ms" for p, t in times.items()), ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
