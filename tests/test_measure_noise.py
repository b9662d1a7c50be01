"""benchmarks/calibration/measure_noise.py: the refit bootstrap keeps copies of a group in one fold,
uses the pipeline's folds at seed 0, and its numbers come out of real fits (synthetic activations)."""
import importlib.util
from pathlib import Path

import numpy as np

from probekit.probes.grid import make_synthetic_acts

_spec = importlib.util.spec_from_file_location(
    "measure_noise", Path(__file__).resolve().parents[1] / "benchmarks" / "calibration" / "measure_noise.py")
M = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(M)


def _acts():
    return make_synthetic_acts(n_groups=30, per_group=3, d=16, n_layers=4, seed=1)


def test_resample_rows_keeps_whole_groups_and_their_ids():
    groups = np.repeat(np.arange(10), 3)
    rows = M.resample_rows(groups, np.random.default_rng(0))
    assert len(rows) == 30
    drawn = groups[rows]
    for g in np.unique(drawn):                      # every drawn group comes with all its rows, k times
        assert (drawn == g).sum() % 3 == 0
    assert len(np.unique(drawn)) < 10               # a real bootstrap: some groups repeat


def test_refit_puts_copies_of_a_group_in_one_fold():
    acts = _acts()
    X = M.load_arrays(acts)
    stim = acts.stimuli
    rows = M.resample_rows(stim["group"].to_numpy(), np.random.default_rng(3))
    prof, res = M.run_grid(X, stim, ["bin0", "bin1"], seed=5, layers=[0, 2], rows=rows)
    p = res.predictions["bin0"]
    folds = p.folds
    for g in np.unique(p.groups):
        assert len(np.unique(folds[p.groups == g])) == 1
    assert np.isnan(prof[1]).all() and np.isnan(prof[3]).all()      # only the requested layers
    assert np.isfinite(prof[[0, 2]]).all() and (prof[[0, 2]] > 0.5).any()   # planted signal is found


def test_folds_match_pipeline_and_detects_a_mismatch(monkeypatch):
    stim = _acts().stimuli
    assert M.folds_match(stim, ["bin0"])
    monkeypatch.setattr(M, "grid_labels", lambda s, primary: list(primary))   # drops bin1 + shuffled control
    assert not M.folds_match(stim, ["bin0"])


def test_kappa_is_refit_over_reweight_sd():
    acts = _acts()
    from probekit.stimuli.experiments import Experiment
    X = M.load_arrays(acts)
    base, res = M.run_grid(X, acts.stimuli, ["bin0"], seed=0, layers=[0, 1, 2, 3], n_bootstrap=200)
    res.meta["primary"] = ["bin0"]
    from probekit.stimuli.experiments import experiment_profile
    exp = Experiment("synthetic", "synthetic", "", paper="", primary=("bin0",))
    values, reps = experiment_profile(res, exp, "resid_pre")
    assert np.allclose(values, base[:, 0])
    assert reps.shape == (200, 4) and reps.std(0).max() > 0
    assert M.lag_corr(np.column_stack([reps[:, 0], reps[:, 0]]), 1) > 0.999
