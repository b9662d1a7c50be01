"""The whole probe stage of one experiment (pytest-benchmark), against the arithmetic it must do.

    pytest benchmarks/perf/bench_probe_stage.py --benchmark-only [--full] [--model NAME]

The timed call is :func:`probekit.pipeline.probe_experiment` without its cache: the probe grid with
the pipeline's settings (permutations, control task, shuffled-label controls, bootstraps, surface
baseline) on activations already in the store. Two entries, side by side in one run:

* ``jobs=1``: the cells (layer x component) one after another;
* ``jobs=cores``: the cells in :func:`probekit.probes.default_jobs` threads (the default). Its
  ``extra_info['ratio']`` is the one-job time over its own (the speed-up from the cores; the scores
  are identical, ``tests/test_extract_once.py``).

Both record ``flop_efficiency``: the floating-point operations of the grid's necessary products -- per
fold and cell the leave-one-out residual GEMM (``n_train^2 x alphas x columns``), the projection
``U^T Y`` (``n_train^2 x columns``) and the ``eigh`` (``~9 n_train^3``), counted by
:func:`probekit.cost.probe_cost` -- divided by the time, over this machine's single-thread float32
GEMM rate (``harness``'s fixed product, timed in the same run) times the jobs. 1.0 would be the whole
stage at the speed of one large GEMM per core.

Quick: ``relations`` with 20 permutations and 200 bootstraps; ``--full``: ``items`` with the
pipeline's settings (what ``./pk run`` does).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

SETTINGS = {False: ("relations", dict(n_permutations=20, n_bootstrap=200)), True: ("items", {})}
_STATE: dict = {}


def _gemm_rate() -> float:
    """Single-thread float32 GEMM flops/s here (a 512 x 512 x 4096 product, best of 3)."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 512)).astype(np.float32)
    b = rng.standard_normal((512, 4096)).astype(np.float32)
    best = np.inf
    with threadpool_limits(1):
        for _ in range(3):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    return 2.0 * 512 * 512 * 4096 / best


@pytest.mark.parametrize("jobs", ["1", "cores"])
def test_probe_stage(benchmark, loaded_model, full, jobs):
    import probekit
    from probekit.core.checks import DEFAULT_PROBE
    from probekit.core.cost import probe_cost
    from probekit.pipeline import probe_experiment
    from probekit.probes.grid import default_jobs
    from probekit.studies import load_study

    from .harness import set_ratio
    exp_name, kw = SETTINGS[full]
    exp = load_study(None).experiments[exp_name]
    acts = exp.activations(probekit.extract(loaded_model, exp.stimulus_frame(), store=True, progress=False))
    n_jobs = 1 if jobs == "1" else default_jobs()
    probe_kw = dict(kw, n_jobs=n_jobs)
    benchmark.pedantic(lambda: probe_experiment(acts, exp, probe_kw, cache=False), rounds=1 if full else 2,
                       iterations=1)
    settings = dict(DEFAULT_PROBE, **kw)
    n_labels = len(acts.stimuli.attrs.get("labels", {})) + len(exp.primary_labels(acts.stimuli))  # + shuffled
    cost = probe_cost(len(acts), n_labels, acts.n_layers, acts.d_model, n_splits=settings["n_splits"],
                      n_permutations=settings["n_permutations"], control_task=settings["control_task"])
    st = _STATE.setdefault((loaded_model.name, full), {})
    own = float(np.median(benchmark.stats.stats.data))
    st[jobs] = own
    rate = _gemm_rate()
    set_ratio(benchmark, st.get("1") if jobs == "cores" else None,
              "one job's time / this entry's (the cores' speed-up)" if jobs == "cores" else "baseline entry",
              model=loaded_model.name, experiment=exp_name, n_stimuli=len(acts), n_jobs=n_jobs,
              flops=cost["flops"], gemm_flops_per_s=rate,
              flop_efficiency=cost["flops"] / own / (rate * n_jobs))
