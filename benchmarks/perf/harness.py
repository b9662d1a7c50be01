"""Small helpers shared by the speed benchmarks (no probekit imports: the conftest loads this)."""
from __future__ import annotations

import functools
import os
import time

import pytest

SLOWDOWN_ENV = "PROBEKIT_BENCH_SLOWDOWN"


def slowdown_factor() -> float:
    """``PROBEKIT_BENCH_SLOWDOWN`` as a number (0 when unset): the test-only planted regression."""
    raw = os.environ.get(SLOWDOWN_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        f = float(raw)
    except ValueError:
        raise pytest.UsageError(f"{SLOWDOWN_ENV}={raw!r}: expected a number (0.5 = 50 % slower)") from None
    if f < 0:
        raise pytest.UsageError(f"{SLOWDOWN_ENV}={raw!r}: must be >= 0")
    return f


def _planted(fn, factor: float):
    @functools.wraps(fn)
    def slow(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        time.sleep(factor * (time.perf_counter() - t0))
        return out
    return slow


def plant_slowdown(fixture, factor: float) -> None:
    """Make every target this pytest-benchmark fixture times ``1 + factor`` times slower.

    The fixture's class is swapped for a subclass (pytest-benchmark checks
    ``isinstance(fixture, BenchmarkFixture)``), and the run is marked in
    ``extra_info['planted_slowdown']`` so a saved run says it was slowed."""
    base = type(fixture)

    class Slowed(base):
        def __call__(self, fn, *args, **kwargs):
            return base.__call__(self, _planted(fn, factor), *args, **kwargs)

        def pedantic(self, target, *args, **kwargs):
            return base.pedantic(self, _planted(target, factor), *args, **kwargs)

    fixture.__class__ = Slowed
    fixture.extra_info["planted_slowdown"] = factor


def median_time(benchmark) -> float | None:
    """The median of the benchmark's rounds in seconds (None under ``--benchmark-disable``)."""
    stats = getattr(benchmark, "stats", None)
    return float(stats.stats.median) if stats is not None else None


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def set_ratio(benchmark, baseline_s: float | None, meaning: str, target: float | None = None, **extra) -> None:
    """``extra_info['ratio']`` = baseline time / this benchmark's median time (> 1: faster than the baseline)."""
    own = median_time(benchmark)
    info = benchmark.extra_info
    info["median_s"] = own
    info["baseline_s"] = baseline_s
    info["ratio"] = (baseline_s / own) if (own and baseline_s) else None
    info["ratio_meaning"] = meaning
    if target is not None:
        info["ratio_target"] = target
    info.update(extra)


def peak_rss_reset() -> int | None:
    """Reset this process's peak RSS to its current RSS (Linux ``/proc/self/clear_refs``).
    Returns the current RSS in KiB, or None where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_kib("VmRSS")
    except OSError:
        return None


def status_kib(key: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``); OSError where there is none."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


THREADS_ENV = "PROBEKIT_BENCH_THREADS"


def bench_threads() -> int | None:
    """Torch threads for the benchmarks: ``PROBEKIT_BENCH_THREADS`` (default 1; 0 = torch's own default).

    One thread by default because on a shared machine torch's thread pool is what
    gets measured otherwise: with the 2 cores oversubscribed, a SmolLM2 forward
    pass took 6.5x longer on torch's default 2 threads than on 1 (22.5 vs 3.4 s,
    measured side by side). The probe grid runs on one thread by design anyway."""
    raw = os.environ.get(THREADS_ENV, "1").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        raise pytest.UsageError(f"{THREADS_ENV}={raw!r}: expected an integer (0 = torch's default)") from None
    return n if n > 0 else None


def apply_threads() -> int:
    """Set torch's threads per :func:`bench_threads`; returns the number in effect."""
    import torch
    n = bench_threads()
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
