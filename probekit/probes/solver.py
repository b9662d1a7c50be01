"""The probe solver: fold Gram matrices, their eigendecomposition, and out-of-fold predictions.

It owns the arithmetic of one cell (one activation matrix, one set of folds, many label columns)
and nothing about labels, grids or tables. :func:`fold_grams` standardises each training fold
(``StandardScaler`` semantics) and forms the centred training and test-train Gram matrices
(n << d, so the dual form is cheap); :func:`ridge_oof` eigendecomposes each training Gram once
(:func:`eigh_psd`) and then picks the ridge penalty per column by exact leave-one-out error and
predicts every column, every alpha, every permutation in one GEMM (LOO residuals with
``K = U diag(l) U^T``, ``w = 1/(l + alpha)``: ``G = U diag(w) U^T - 11^T/(n alpha)``,
``e_loo = G y_c / diag(G)``); :func:`svm_oof` is the literal hinge-loss SVM on the same Grams.
numpy/scipy by default; ``ridge_oof(backend="torch")`` runs the same arithmetic in torch (CUDA where
visible), and ``penalty_selection="gcv"`` is a cheaper, different estimator (docs/performance-probes.md).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
from sklearn.model_selection import GroupKFold
from sklearn.svm import SVC

from probekit.core.checks import ArgumentError

# Bump when the solver's numbers can change (cached probe results are keyed on it).
# 2: float32 LOO residuals, Rayleigh correction only for small eigenvalues.
# 3: control-task labels drawn from all occurrences when every type's first occurrence agrees
#    (stats.type_control_labels; it changed the control columns of senses and the pair-only sets).
# 4: a type with mixed labels takes a random occurrence's label in every control draw (same three sets).
SOLVER_VERSION = 4
DEFAULT_ALPHAS: np.ndarray = np.logspace(-2, 6, 9)
DEFAULT_C_GRID: np.ndarray = np.logspace(-5, 0, 6)


def fold_grams(X, folds):
    """Per fold: standardised, centred training Gram ``K [ntr, ntr]`` and
    test-train Gram ``Kte [nte, ntr]`` (float64 numpy arrays).

    Standardisation uses the training rows' mean and population SD (zero-SD
    features: scale 1), exactly like ``StandardScaler`` fitted on the fold.
    The Grams are formed in float32 from centred data, then double-centred in
    float64 (removing the float32 rounding of the centring).
    """
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
        # Z Z^T: numpy hands A @ A.T to BLAS syrk (half the flops of a general product, which
        # outweighs also forming the test x test block that Z @ Z[tr].T would skip)
        G = Z @ Z.T                                                      # [n, n], exactly symmetric
        K = G[:ntr, :ntr].astype(np.float64)
        Kte = G[ntr:, :ntr].astype(np.float64)
        cm = K.mean(0)                                   # = row means (K symmetric)
        g = cm.mean()
        Kte -= Kte.mean(1, keepdims=True) + (cm[None, :] - g)
        K -= (cm[None, :] + cm[:, None]) - g             # symmetric to the last bit
        out.append((K, Kte))
    return out


def eigh_psd(K, precise: bool = False, rel_tol: float = 1e-4):
    """Eigendecomposition ``(lam, U)`` of a symmetric PSD Gram matrix, eigenvalues clipped at 0.

    ``precise=True``: float64 ``eigh``. ``precise=False`` (default): float32 ``eigh`` (about 1.7x
    faster), then only the eigenvalues below ``rel_tol * max`` are re-estimated as float64 Rayleigh
    quotients ``u^T K u`` (otherwise null-space eigenvalues come out ~1e-5 ||K|| instead of ~0 and
    distort the LOO at small alphas). The float32 eigenvalue error is ~1e-7 ||K|| (absolute), so the
    others are already relatively precise (SmolLM2-135M fold Grams, n_train = 295: at most 4e-5
    relative error above 1e-4 * max, while 1 to 35 of 295 eigenvalues fall below it)."""
    if precise:
        lam, U = scipy.linalg.eigh(K, driver="evd", check_finite=False)
    else:
        lam32, U32 = scipy.linalg.eigh(K.astype(np.float32), driver="evd", check_finite=False, overwrite_a=True)
        U = U32.astype(np.float64)
        lam = lam32.astype(np.float64)
        small = np.flatnonzero(lam32 < rel_tol * max(float(lam32[-1]), 0.0))
        if len(small):
            Us = U[:, small]
            lam[small] = np.einsum("ij,ij->j", K @ Us, Us)
    return np.clip(lam, 0, None), U


PENALTY_SELECTIONS = ("loo", "gcv")
BACKENDS = ("numpy", "torch", "torch:cpu", "torch:cuda", "auto")


def resolve_backend(backend: str = "numpy") -> str:
    """``"numpy"``, ``"torch:cpu"`` or ``"torch:cuda"`` for ``backend``.

    ``"auto"`` follows the extraction's placement rule (:func:`probekit.models.placement.plan_placement`:
    ``cuda`` when a GPU is visible): ``torch:cuda`` there, else ``numpy``. ``"torch"``: torch on
    ``cuda`` when visible, else on the CPU."""
    if backend not in BACKENDS:
        raise ValueError(f"probe backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "numpy":
        return backend
    from probekit.models.placement import cuda_count   # torch import: only when a torch backend is asked for
    gpu = cuda_count() > 0
    if backend == "auto":
        return "torch:cuda" if gpu else "numpy"
    if backend == "torch":
        return "torch:cuda" if gpu else "torch:cpu"
    if backend == "torch:cuda" and not gpu:
        raise ValueError("probe backend 'torch:cuda' needs a visible CUDA GPU (torch.cuda.is_available() is "
                         "False); use backend='numpy', 'torch:cpu' or 'auto'")
    return backend


def probe_backend(backend: str = "auto", precise: bool = False) -> str:
    """The solver backend a probe run uses: :func:`resolve_backend`, except that ``precise=True`` (the float64
    path, numpy only) turns ``"auto"`` into ``"numpy"`` and refuses an explicit torch backend. The one place
    this decision is made: ``probe_grid`` runs it and the pipeline's results-cache key records its answer.
    Raises :class:`~probekit.core.checks.ArgumentError` (a ``ValueError``) for a bad name, a missing GPU or
    ``precise`` with torch."""
    try:
        resolved = resolve_backend("numpy" if precise and backend == "auto" else backend)
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None
    if precise and resolved != "numpy":
        raise ArgumentError(f"precise=True is the float64 numpy path; backend {backend!r} computes in float32 "
                            "(use backend='numpy' or 'auto')")
    return resolved


def ridge_oof(grams, folds, Y: np.ndarray, alphas=DEFAULT_ALPHAS, max_chunk_bytes: float = 6.4e7,
              precise: bool = False, penalty_selection: str = "loo", backend: str = "numpy"
              ) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold ridge predictions for every column of ``Y [n, m]``.

    ``grams`` from :func:`fold_grams`. Alpha per (fold, column) by exact
    LOO on the training fold (first of the minimisers). ``precise``: float64
    instead of float32 eigendecomposition (see :func:`eigh_psd`) and LOO
    residuals (float32 changed no observed score or p-value on SmolLM2/items,
    4 layers x 12 labels x 100 permutations; 2 of 288 control/null means moved
    by <= 7e-4, and the grid ran 1.7x faster). Returns
    ``(oof [n, m] float64, alpha_index [n_folds, m])``.

    ``penalty_selection``: ``"loo"`` (default, exact leave-one-out) or ``"gcv"`` (generalised
    cross-validation, ``n (||y - Hy||^2) / (n - tr H)^2``, from the eigenvalues and ``U^T y`` alone:
    ``n x alphas x columns`` instead of the ``n^2 x alphas x columns`` residual GEMM; a different
    estimator, its differences are measured in docs/performance-probes.md). ``backend``: see
    :func:`resolve_backend` (``"numpy"`` default; torch runs float32 GEMMs and a batched float32
    ``eigh`` over the folds, the predictions in float64).
    """
    if penalty_selection not in PENALTY_SELECTIONS:
        raise ValueError(f"penalty_selection must be 'loo' or 'gcv', got {penalty_selection!r}")
    backend = resolve_backend(backend)
    Yx = np.asarray(Y, dtype=np.float64)
    if Yx.ndim == 1:
        Yx = Yx[:, None]
    al = np.asarray(np.ravel(alphas), dtype=np.float64)
    if backend != "numpy":
        return _ridge_oof_torch(grams, folds, Yx, al, penalty_selection, backend.split(":")[1], max_chunk_bytes)
    n, m = Yx.shape
    A = len(al)
    oof = np.empty((n, m))
    best_all = np.zeros((len(folds), m), dtype=np.int64)
    for k, ((K, Kte), (tr, te)) in enumerate(zip(grams, folds)):
        ntr = K.shape[0]
        lam, U = eigh_psd(K, precise)
        Ytr = Yx[np.asarray(tr, dtype=np.int64)]
        ymean = Ytr.mean(0)
        B = U.T @ (Ytr - ymean)                        # [ntr, m]
        W = 1.0 / (lam[None, :] + al[:, None])         # [A, ntr]
        best = np.zeros(m, dtype=np.int64)
        if A > 1:
            if penalty_selection == "gcv":
                best = np.argmin(_gcv_scores(lam, W, B, al), 0)            # first minimiser
            else:
                best = _loo_best(U, W, B, al, precise, max_chunk_bytes)
        coef = W[best].T * B          # [ntr, m]
        # cheaper association first: few columns -> U @ coef, many (permutations) -> Kte @ U
        pred = Kte @ (U @ coef) if m < Kte.shape[0] else (Kte @ U) @ coef
        oof[te] = ymean + pred
        best_all[k] = best
    return oof, best_all


def _loo_diag(U, W, al):
    """``diag(G_alpha) [ntr, A]`` in float64 (a difference of nearly equal terms at small alpha); numpy
    arrays or torch tensors."""
    return (U * U) @ W.T - (1.0 / (U.shape[0] * al))[None, :]


def _loo_best(U, W, B, al, precise: bool, max_chunk_bytes: float) -> np.ndarray:
    """The exact-LOO choice: residuals ``U @ (W . B)`` for every alpha and column, divided by
    ``diag(G)``, first minimiser of the sum of squares. The residuals are float32 unless precise:
    the GEMM is n_train^2 x alphas x columns (~2 GFLOP per fold on SmolLM2/items)."""
    lo = (lambda a: a) if precise else (lambda a: a.astype(np.float32))  # noqa: E731
    ntr, m = B.shape
    A = len(al)
    best = np.zeros(m, dtype=np.int64)
    diag = lo(_loo_diag(U, W, al)[:, :, None])                                # [ntr, A, 1]
    Ul, Wl, Bl = lo(U), lo(W.T)[:, :, None], lo(B)
    chunk = max(1, int(max_chunk_bytes // (8 * A * ntr)))
    for s in range(0, m, chunk):
        WB = Wl * Bl[:, None, s:s + chunk]                              # [ntr, A, c]
        # one GEMM for every alpha and column: G_alpha y = U diag(w_alpha) U^T y
        num = (Ul @ WB.reshape(ntr, -1)).reshape(WB.shape)
        num /= diag                                                     # LOO residuals
        best[s:s + chunk] = np.argmin((num * num).sum(0), 0)          # [A, c] -> first minimiser
    return best


def _gcv_scores(lam, W, B, al):
    """GCV ``[A, m]`` of every alpha and column (numpy arrays or torch tensors): training residual
    ``alpha (K + alpha I)^-1 y_c`` (``||.||^2 = sum_j (alpha w_j b_j)^2``), hat trace ``1 + sum_j lam_j w_j``
    (intercept included), ``rss / (1 - tr H / n)^2``."""
    ntr = B.shape[0]
    rss = ((al[:, None] * W) ** 2) @ (B * B)                         # [A, m]
    dof = 1.0 + W @ lam                                               # [A]
    return rss / ((1.0 - dof / ntr) ** 2)[:, None]


def _torch_eigh_folds(torch, grams, device, rel_tol: float = 1e-4):
    """float32 ``eigh`` of every fold's Gram in one batched call (Grams of unequal size padded with a
    diagonal of distinct values above the largest eigenvalue, whose eigenpairs are dropped), then
    the eigenvalues below ``rel_tol * max`` as float64 Rayleigh quotients (like :func:`eigh_psd`)."""
    sizes = [K.shape[0] for K, _ in grams]
    N = max(sizes)
    Kb = np.zeros((len(grams), N, N), dtype=np.float32)
    for f, (K, _) in enumerate(grams):
        n = K.shape[0]
        Kb[f, :n, :n] = K
        if n < N:
            top = max(float(np.abs(K).sum(1).max()), 1.0)        # >= the largest eigenvalue (Gershgorin)
            Kb[f, np.arange(n, N), np.arange(n, N)] = 2.0 * top * (1.0 + np.arange(N - n))
    lam32, U32 = torch.linalg.eigh(torch.from_numpy(Kb).to(device))
    out = []
    for f, (K, _) in enumerate(grams):
        n = sizes[f]
        lam = lam32[f, :n].double()
        U = U32[f, :n, :n].double()
        Kt = torch.from_numpy(K).to(device)
        small = torch.nonzero(lam < rel_tol * max(float(lam[-1]), 0.0)).flatten()
        if len(small):
            Us = U[:, small]
            lam[small] = ((Kt @ Us) * Us).sum(0)
        out.append((lam.clamp_min(0), U))
    return out


def _ridge_oof_torch(grams, folds, Yx: np.ndarray, al: np.ndarray, penalty_selection: str, device: str,
                     max_chunk_bytes: float):
    """:func:`ridge_oof` in torch on ``device``: float32 batched ``eigh``; the float32 LOO sums from one GEMM
    ``V @ B`` with ``V = [diag(G_a)^-1 U W_a]_a`` stacked over the alphas (no ``[n, alphas, columns]``
    temporaries); float64 projections, penalty and predictions."""
    import torch
    n, m = Yx.shape
    A = len(al)
    oof = np.empty((n, m))
    best_all = np.zeros((len(folds), m), dtype=np.int64)
    alt = torch.as_tensor(al, dtype=torch.float64, device=device)
    Yt = torch.as_tensor(Yx, dtype=torch.float64, device=device)
    for k, ((lam, U), (_, Kte), (tr, te)) in enumerate(zip(_torch_eigh_folds(torch, grams, device), grams, folds)):
        ntr = U.shape[0]
        Ytr = Yt[torch.as_tensor(np.asarray(tr, dtype=np.int64), device=device)]
        ymean = Ytr.mean(0)
        B = U.T @ (Ytr - ymean)
        W = 1.0 / (lam[None, :] + alt[:, None])
        if A == 1:
            best = torch.zeros(m, dtype=torch.int64, device=device)
        elif penalty_selection == "gcv":
            best = _first_argmin(torch, _gcv_scores(lam, W, B, alt))
        else:
            diag = _loo_diag(U, W, alt)
            V = ((U[None] * W[:, None, :]) / diag.T[:, :, None]).float().reshape(A * ntr, ntr)
            Bl = B.float()
            chunk = max(1, int(max_chunk_bytes // (4 * A * ntr)))
            best = torch.empty(m, dtype=torch.int64, device=device)
            for s in range(0, m, chunk):
                E = V @ Bl[:, s:s + chunk]
                sse = (E * E).reshape(A, ntr, -1).sum(1)
                best[s:s + chunk] = _first_argmin(torch, sse)
        coef = W[best].T * B
        Kt = torch.as_tensor(Kte, device=device)
        pred = (Kt @ U) @ coef
        oof[te] = (ymean + pred).cpu().numpy()
        best_all[k] = best.cpu().numpy()
    return oof, best_all


def _first_argmin(torch, x):
    """Index of the first minimum along dim 0 (torch.argmin does not promise the first on CUDA)."""
    mn = x.min(0, keepdim=True).values
    idx = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(x)
    return torch.where(x == mn, idx, x.shape[0]).min(0).values


def svm_oof(grams, folds, groups: np.ndarray, classes: np.ndarray, C_grid=DEFAULT_C_GRID,
            inner_splits: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold decision values of a hinge-loss linear SVM (``SVC`` on the
    precomputed standardised Gram) for each 0/1 column of ``classes``; ``C`` by
    inner GroupKFold accuracy on the training fold. Returns ``(oof, C_index)``."""
    classes = np.asarray(classes)
    if classes.ndim == 1:
        classes = classes[:, None]
    n, m = classes.shape
    oof = np.zeros((n, m))
    best_all = np.zeros((len(folds), m), dtype=np.int64)
    for k, ((Kn, Kten), (tr, te)) in enumerate(zip(grams, folds)):
        g = groups[tr]
        n_in = min(inner_splits, len(np.unique(g)))
        inner = list(GroupKFold(n_in).split(Kn, None, g)) if n_in >= 2 else []
        for j in range(m):
            y = classes[tr, j].astype(int)
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
