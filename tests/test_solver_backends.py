"""ridge_oof's penalty selections and backends agree where they should."""
import numpy as np
import pytest
from sklearn.model_selection import GroupKFold

from probekit.probes.solver import fold_grams, resolve_backend, ridge_oof


@pytest.fixture(scope="module")
def cell():
    rng = np.random.default_rng(0)
    n, d, m = 120, 200, 40
    X = (rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.1).astype(np.float32)
    y = X[:, :5].sum(1) + rng.standard_normal(n)
    Y = np.stack([y] + [rng.permutation(y) for _ in range(m - 1)], 1)
    folds = list(GroupKFold(6).split(X, None, np.arange(n) // 2))
    return fold_grams(X, folds), folds, Y


def test_gcv_is_an_option_and_differs_from_loo_only_in_penalties(cell):
    G, folds, Y = cell
    o_loo, b_loo = ridge_oof(G, folds, Y)
    o_gcv, b_gcv = ridge_oof(G, folds, Y, penalty_selection="gcv")
    same = (b_loo == b_gcv).all(0)
    assert same.mean() > 0.5
    assert np.array_equal(o_loo[:, same], o_gcv[:, same])
    with pytest.raises(ValueError, match="penalty_selection"):
        ridge_oof(G, folds, Y, penalty_selection="aic")


def test_torch_cpu_agrees_with_numpy(cell):
    pytest.importorskip("torch")
    G, folds, Y = cell
    o_np, b_np = ridge_oof(G, folds, Y)
    o_t, b_t = ridge_oof(G, folds, Y, backend="torch:cpu")
    # float32 eigh/LOO round differently: a near-tie may pick the neighbouring penalty
    assert (b_np != b_t).mean() < 0.05
    same = (b_np == b_t).all(0)
    assert np.abs(o_np[:, same] - o_t[:, same]).max() < 1e-4 * np.abs(o_np).max()


def test_cuda_agrees_with_cpu(cell):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible (none was lent to this task): CPU-vs-CUDA agreement not run")
    G, folds, Y = cell
    o_c, b_c = ridge_oof(G, folds, Y, backend="torch:cpu")
    o_g, b_g = ridge_oof(G, folds, Y, backend="torch:cuda")
    assert (b_c != b_g).mean() < 0.05
    same = (b_c == b_g).all(0)
    assert np.abs(o_c[:, same] - o_g[:, same]).max() < 1e-4 * np.abs(o_c).max()


def test_backend_resolution():
    assert resolve_backend("numpy") == "numpy"
    assert resolve_backend("auto") in ("numpy", "torch:cuda")
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("tpu")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert resolve_backend("auto") == "numpy" and resolve_backend("torch") == "torch:cpu"
        with pytest.raises(ValueError, match="needs a visible CUDA GPU"):
            resolve_backend("torch:cuda")


def test_precise_means_numpy_in_the_grid_and_in_the_cache_key(monkeypatch):
    """One decision (``probes.probe_backend``): precise=True makes 'auto' numpy and refuses torch, the same in
    probe_grid and in the results-cache key (a key that said torch for a numpy run would miss the cache on a
    GPU machine; one that said numpy for a refused torch run would serve it). Simulates a visible GPU."""
    import probekit.models.placement as placement
    from probekit.core.checks import ArgumentError
    from probekit.pipeline import _keyed_settings
    from probekit.probes import probe_backend
    monkeypatch.setattr(placement, "cuda_count", lambda: 1)
    assert probe_backend("auto") == "torch:cuda" and probe_backend("auto", precise=True) == "numpy"
    assert _keyed_settings({"backend": "auto"}) == {"backend": "torch:cuda"}
    assert _keyed_settings({"backend": "auto", "precise": True}) == {"precise": True}
    for bad in ("torch", "torch:cpu", "torch:cuda"):
        with pytest.raises(ArgumentError, match="precise=True is the float64 numpy path"):
            probe_backend(bad, precise=True)
        with pytest.raises(ArgumentError, match="precise=True is the float64 numpy path"):
            _keyed_settings({"backend": bad, "precise": True})


def test_probe_grid_takes_the_solver_options():
    """probe_grid passes backend / penalty_selection to the solver, says which ran, and refuses bad ones
    before any work; 'auto' on a machine without CUDA is today's numpy path, bit for bit."""
    from probekit.core.checks import ArgumentError
    from probekit.probes.grid import make_synthetic_acts, probe_grid
    acts = make_synthetic_acts(n_groups=16, per_group=6, d=24, n_layers=2, seed=3)
    kw = dict(n_permutations=5, n_bootstrap=0, control_task=False, surface_baseline=False)
    ref = probe_grid(acts, backend="numpy", **kw)
    auto = probe_grid(acts, **kw)
    if resolve_backend("auto") == "numpy":
        assert auto.meta["probe_backend"] == "numpy"
        assert auto.scores.equals(ref.scores)
    import probekit.probes.solver as S
    calls = []
    orig = S._gcv_scores
    S._gcv_scores = lambda *a: calls.append(1) or orig(*a)
    try:
        gcv = probe_grid(acts, penalty_selection="gcv", backend="numpy", **kw)
    finally:
        S._gcv_scores = orig
    assert calls and gcv.meta["penalty_selection"] == "gcv" and ref.meta["penalty_selection"] == "loo"
    pytest.importorskip("torch")
    t = probe_grid(acts, backend="torch:cpu", **kw)
    assert t.meta["probe_backend"] == "torch:cpu"
    d = (t.scores.value - ref.scores.value).abs().max()
    assert 0 < d < 0.05                                     # the float32 torch path really ran
    for bad in (dict(backend="tpu"), dict(penalty_selection="aic"), dict(precise=True, backend="torch:cpu")):
        with pytest.raises(ArgumentError):
            probe_grid(acts, **kw, **bad)
