"""The machine itself: a fixed single-thread float32 matrix product, no probekit code.

Saved next to probekit's benchmarks, it tells a slower machine (or a busier shared
box) from a slower probekit when two saved runs are compared: if this one
regressed as much as the others, look at the machine first. It is also the tiny
benchmark ``tests/test_perf_harness.py`` saves and compares to prove that
``--benchmark-compare-fail`` catches a planted slowdown.
"""
from __future__ import annotations

import numpy as np

N = 384


def test_machine_reference(benchmark):
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    b = rng.standard_normal((N, N), dtype=np.float32)

    def matmul():
        return a @ b

    with threadpool_limits(1):
        out = benchmark(matmul)
    assert out.shape == (N, N) and np.isfinite(out).all()
    from .harness import median_time
    t = median_time(benchmark)
    benchmark.extra_info.update(
        what=f"{N}x{N} float32 matmul, 1 BLAS thread", median_s=t,
        gflops=(2 * N ** 3 / t / 1e9) if t else None,
        ratio=None, ratio_meaning="no baseline: this is the machine's reference, compare it across runs")
