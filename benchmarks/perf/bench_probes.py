"""Benchmark: fast dual-ridge probe grid vs plain scikit-learn loops, same data and folds.

    .venv/bin/python benchmarks/perf/bench_probes.py            # 30 layers x 3 comps x 8 labels, n=240, d=576
    .venv/bin/python benchmarks/perf/bench_probes.py --quick    # 6 layers
    .venv/bin/python benchmarks/perf/bench_probes.py --npz /tmp/probekit_real_acts.npz   # real activations

Prints, side by side from one run: wall time of
  * fast      probe_grid(estimator="fast"): dual ridge / LS-SVM, LOO alpha selection over 9 alphas,
              no permutations/bootstrap/controls (fitting only), and the full default run;
  * ridgecv   loop of Pipeline(StandardScaler, RidgeClassifierCV(same alphas)) per cell x label x fold;
  * linsvc    loop of Pipeline(StandardScaler, LinearSVC(C=1)) per cell x label x fold (hinge, fixed C);
  * svm       probe_grid(estimator="svm") (SVC on the precomputed Gram, C by inner CV) on --svm-layers layers;
and the agreement of per-cell accuracies (max / mean |diff| in percentage points, profile correlation).
Target: fast >= 20x faster than the linsvc loop. Speed targets live here, never in unit tests.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from probekit.probes import DEFAULT_ALPHAS, make_synthetic_acts, probe_grid  # noqa: E402


def load_npz(path, n_binary, seed):
    """Real activations from an npz with keys ``layer{l}_{component}``; random
    group-level binary labels (the point is speed and agreement, not signal)
    plus any planted word signal is absent -> use --labels-from-synthetic."""
    import pandas as pd
    from probekit.activations import ActivationSet
    z = np.load(path, allow_pickle=True)
    arrays = {}
    for k in z.files:
        if k.startswith("layer"):
            l, c = k[5:].split("_", 1)
            arrays[(int(l), c)] = z[k].astype(np.float32)
    n = next(iter(arrays.values())).shape[0]
    groups = z["group"] if "group" in z.files else np.arange(n) // max(1, n // 40)
    rng = np.random.default_rng(seed)
    ug, inv = np.unique(groups, return_inverse=True)
    stim = pd.DataFrame({"group": groups, "target": groups.astype(str)})
    labels = {}
    for i in range(n_binary):
        stim[f"bin{i}"] = rng.permutation(np.arange(len(ug)) % 2)[inv]
        labels[f"bin{i}"] = {"kind": "binary", "role": "semantic", "group": "group"}
    stim.attrs["labels"] = labels
    return ActivationSet.from_arrays(arrays, stim)


def sk_loop(acts, res, make_est, layers):
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits
    out = {}
    limit = threadpool_limits(1)      # same thread budget as probe_grid(n_threads=1): a fair fight
    t0 = time.perf_counter()
    for name, p in res.predictions.items():
        y = p.y.astype(int)
        acc = np.full((acts.n_layers, len(acts.components)), np.nan)
        for l in layers:
            for ci, comp in enumerate(acts.components):
                X = np.asarray(acts.get(l, comp))[p.rows]
                pred = np.empty(len(y), dtype=int)
                for k in np.unique(p.folds):
                    tr, te = p.folds != k, p.folds == k
                    m = make_pipeline(StandardScaler(), clone(make_est())).fit(X[tr], y[tr])
                    pred[te] = m.predict(X[te])
                acc[l, ci] = np.mean(pred == y)
        out[name] = acc
    dt = time.perf_counter() - t0
    limit.restore_original_limits()
    return out, dt


def acc_table(res, layers):
    s = res.scores[res.scores.metric == "accuracy"]
    out = {}
    for name in res.predictions:
        a = np.full((res.n_layers, len(res.components)), np.nan)
        d = s[s.label == name]
        for r in d.itertuples():
            a[r.layer, res.components.index(r.component)] = r.value
        out[name] = a
    return out


def agreement(a, b, layers):
    da = np.concatenate([a[k][layers].ravel() for k in a])
    db = np.concatenate([b[k][layers].ravel() for k in a])
    diff = np.abs(da - db) * 100
    return f"max |diff| {diff.max():5.2f} pp, mean |diff| {diff.mean():5.2f} pp, r = {np.corrcoef(da, db)[0, 1]:.3f}"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--npz", default=None)
    ap.add_argument("--n-labels", type=int, default=8)
    ap.add_argument("--svm-layers", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-linsvc", action="store_true")
    args = ap.parse_args(argv)
    import torch
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, device {args.device}")

    L = 6 if args.quick else 30
    if args.npz:
        acts = load_npz(args.npz, args.n_labels, 0)
    else:
        sig = 0.35 * np.exp(-0.5 * ((np.arange(L) - L / 3) / (L / 5)) ** 2) + 0.05
        acts = make_synthetic_acts(n_groups=40, per_group=6, d=576, n_layers=L, n_binary=args.n_labels,
                                   n_continuous=0, signal=sig, word_noise=1.0, seed=0)
    layers = list(acts.layers)
    n, d = len(acts), acts.d_model
    print(f"data: n={n}, d={d}, layers={acts.n_layers}, components={len(acts.components)}, "
          f"labels={args.n_labels}, folds=6 -> {acts.n_layers * 3 * args.n_labels * 6} fits per estimator")

    kw = dict(n_permutations=0, n_bootstrap=0, control_task=False, surface_baseline=False, device=args.device)
    probe_grid(acts, layers=[0], components=["resid_pre"], **kw)     # warm-up (imports, threads)
    t0 = time.perf_counter()
    fast = probe_grid(acts, **kw)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    probe_grid(acts, n_permutations=100, n_bootstrap=1000, device=args.device)
    t_full = time.perf_counter() - t0
    fast_acc = acc_table(fast, layers)

    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.svm import LinearSVC
    ridge_acc, t_ridge = sk_loop(acts, fast, lambda: RidgeClassifierCV(alphas=DEFAULT_ALPHAS), layers)
    if not args.skip_linsvc:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            svc_acc, t_svc = sk_loop(acts, fast, lambda: LinearSVC(C=1.0, max_iter=5000), layers)
    sub = layers[:: max(1, len(layers) // args.svm_layers)][: args.svm_layers]
    t0 = time.perf_counter()
    svm = probe_grid(acts, estimator="svm", layers=sub, **kw)
    t_svm = time.perf_counter() - t0
    svm_acc = acc_table(svm, sub)

    print()
    print(f"{'method':<52}{'seconds':>10}{'x slower than fast':>20}")
    print(f"{'fast grid (dual ridge/LS-SVM, LOO alpha)':<52}{t_fast:>10.2f}{1.0:>20.1f}")
    print(f"{'fast grid + 100 perms + 1000 boots + control + surf':<52}{t_full:>10.2f}{t_full / t_fast:>20.1f}")
    print(f"{'sklearn loop RidgeClassifierCV (same alphas)':<52}{t_ridge:>10.2f}{t_ridge / t_fast:>20.1f}")
    if not args.skip_linsvc:
        print(f"{'sklearn loop LinearSVC(C=1)':<52}{t_svc:>10.2f}{t_svc / t_fast:>20.1f}")
    est_svm = t_svm * len(layers) / len(sub)
    print(f"{'svm estimator (SVC precomputed, inner-CV C), est.':<52}{est_svm:>10.2f}{est_svm / t_fast:>20.1f}"
          f"   (measured {t_svm:.1f}s on {len(sub)} layers)")
    print()
    print("agreement of per-cell accuracy:")
    print(f"  fast vs sklearn RidgeClassifierCV : {agreement(fast_acc, ridge_acc, layers)}")
    if not args.skip_linsvc:
        print(f"  fast vs sklearn LinearSVC(C=1)    : {agreement(fast_acc, svc_acc, layers)}")
    print(f"  fast vs svm estimator (hinge SVC) : {agreement(fast_acc, svm_acc, sub)}  [{len(sub)} layers]")
    if not args.skip_linsvc:
        print(f"\nspeed ratio linsvc-loop / fast = {t_svc / t_fast:.1f}x (target >= 20x)")
    print(f"speed ratio ridgecv-loop / fast = {t_ridge / t_fast:.1f}x")


if __name__ == "__main__":
    main()
