"""One embedded experiment end to end, cold and warm (pytest-benchmark).

    pytest benchmarks/perf/bench_e2e.py --benchmark-only [--full] [--model NAME]

The timed call is ``probekit.replicate(model, [experiment])``: extraction through
the activation store, the probe grid with its controls (permutations, control
task, shuffled-label controls, bootstraps), the probe-results cache.

* ``cold``: every round gets a fresh, empty ``PROBEKIT_CACHE`` (a tmp directory):
  the forward passes, the store writes with checksums and the whole probe grid.
* ``warm``: the same call on a populated cache: store verification (checksums),
  memory-mapped loads and the cached probe results.

The model is loaded once outside the timing (a load from the converted cache
takes a few seconds; the first conversion of a GGUF much longer). Each entry's
``extra_info['ratio']`` is, as everywhere, baseline time / own time with the other
path as the baseline: warm entry = cold / warm (what the caches save), cold entry
= warm / cold; both measured in this run (the other path is timed by hand in the
same test when its own entry has not run yet).

Quick: the ``relations`` experiment (212 stimuli) with 20 permutations and 200
bootstraps; ``--full``: ``items`` (354 stimuli) with ``replicate()``'s defaults
(100 permutations, 1000 bootstraps, 5 control draws), what ``./pk run`` does.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import pytest

SETTINGS = {  # quick / --full: (experiment, probe_kw, cold rounds, warm rounds)
    False: ("relations", dict(n_permutations=20, n_bootstrap=200), 1, 3),
    True: ("items", {}, 1, 5),
}
_STATE: dict = {}      # (model, full) -> {"cold_s": [..], "cache": populated cache dir}


def _replicate(model, experiment, probe_kw):
    from probekit.pipeline import replicate
    return replicate(model, [experiment], probe_kw=probe_kw, log=None, progress=False)


class _Cache:
    """Points ``PROBEKIT_CACHE`` at a directory for the duration of the test (restored afterwards)."""

    def __init__(self):
        self.old = os.environ.get("PROBEKIT_CACHE")

    def use(self, path: str) -> None:
        os.environ["PROBEKIT_CACHE"] = path

    def restore(self) -> None:
        if self.old is None:
            os.environ.pop("PROBEKIT_CACHE", None)
        else:
            os.environ["PROBEKIT_CACHE"] = self.old


def _state(model, full, tmp_root):
    return _STATE.setdefault((model.name, full), {"cold_s": [], "warm_s": [], "cache": None, "root": tmp_root})


def _cold_once(model, full, st, cache: _Cache) -> float:
    exp, kw, _, _ = SETTINGS[full]
    d = tempfile.mkdtemp(prefix="cold-", dir=st["root"])
    cache.use(d)
    t0 = time.perf_counter()
    _replicate(model, exp, kw)
    dt = time.perf_counter() - t0
    st["cache"] = d
    return dt


def _describe(benchmark, model, full, rep) -> None:
    exp, kw, _, _ = SETTINGS[full]
    t = benchmark.extra_info.get("median_s")
    n = rep.timings[exp]["n_stimuli"]
    benchmark.extra_info.update(model=model.name, experiment=exp, n_stimuli=n, probe_kw=kw or "replicate() defaults",
                                n_layers=model.n_layers, stimuli_per_s=(n / t) if t else None,
                                extract_s=rep.timings[exp]["extract_s"], probe_s=rep.timings[exp]["probe_s"])


@pytest.mark.parametrize("path", ["cold", "warm"])
def test_experiment_end_to_end(benchmark, bench_model, loaded_model, full, path, tmp_path_factory):
    from .harness import set_ratio
    model = loaded_model
    exp, kw, cold_rounds, warm_rounds = SETTINGS[full]
    st = _state(model, full, str(tmp_path_factory.mktemp("probekit-cache")))
    cache = _Cache()
    try:
        if path == "cold":
            def fresh():                                    # untimed: a new empty cache for each round
                d = tempfile.mkdtemp(prefix="cold-", dir=st["root"])
                cache.use(d)
                st["cache"] = d

            rep = benchmark.pedantic(_replicate, args=(model, exp, kw), setup=fresh, rounds=cold_rounds)
            if benchmark.stats is not None:
                st["cold_s"] = list(benchmark.stats.stats.data)
            if not st["warm_s"]:                            # the baseline by hand, on the cache just filled
                for _ in range(3):
                    t0 = time.perf_counter()
                    _replicate(model, exp, kw)
                    st["warm_s"].append(time.perf_counter() - t0)
            set_ratio(benchmark, statistics.median(st["warm_s"]),
                      "warm time / cold time (< 1: the cold path costs 1/ratio warm runs), same run")
            benchmark.extra_info["baseline"] = "warm path, timed by hand in this test on the cache just filled"
        else:
            if st["cache"] is None or not st["cold_s"]:     # no cold entry ran: one cold run by hand
                st["cold_s"] = [_cold_once(model, full, st, cache)]
            cache.use(st["cache"])
            rep = benchmark.pedantic(_replicate, args=(model, exp, kw), rounds=warm_rounds, warmup_rounds=1)
            if benchmark.stats is not None:
                st["warm_s"] = list(benchmark.stats.stats.data)
            set_ratio(benchmark, statistics.median(st["cold_s"]),
                      "cold time / warm time (what the caches save), same run")
            benchmark.extra_info["baseline"] = "cold path of this run"
        _describe(benchmark, model, full, rep)
        assert exp in rep.results and len(rep.results[exp].scores) > 0
    finally:
        cache.restore()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "--benchmark-only", *sys.argv[1:]]))
