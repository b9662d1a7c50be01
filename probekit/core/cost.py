"""What the probe stage of a stimulus set will cost, said before it starts.

The probe grid's cost grows with the cube of the number of stimuli: every (layer, component,
fold) eigendecomposes an n_train x n_train Gram matrix, and the leave-one-out search multiplies
that matrix into every column (labels x (1 + permutations + control draws)) at every ridge
penalty. :func:`probe_cost` counts those floating-point operations from the set's size and the
settings, and converts them to seconds with this machine's own speed at the same two operations
(one ``eigh`` and one GEMM, timed once per process, ~0.1 s). It is an order-of-magnitude figure,
given as a range: from one fold plan shared by every label (the usual case) to one per label, and
it says nothing about another process competing for the cores. Measured once on the shared 2-core
box (synthetic, d = 32, 3 layers, 3 labels, 20 permutations; one process): n = 240 / 720 / 1,440 took
1.5 / 13.2 / 75.8 s; the low end of the range said 0.4-0.6 / 9-12 / 68-91 s (two timings of the machine).
:func:`announce` prints it when the stage is large (``probekit run`` calls it before each set's
probes).
"""
from __future__ import annotations

import functools
import sys
import time

from probekit.core.activations import COMPONENTS

#: announce a probe stage estimated above this many seconds, or with at least ANNOUNCE_N stimuli
ANNOUNCE_S = 60.0
ANNOUNCE_N = 2000
N_ALPHAS = 9            # probekit.probes.solver.DEFAULT_ALPHAS


@functools.lru_cache(maxsize=1)
def _rates() -> tuple[float, float]:
    """(eigh, GEMM) floating-point operations per second here: one 384 x 384 float32 ``eigh`` and one
    384 x 384 x 3456 float32 product, the shapes of the solver's two steps."""
    import numpy as np
    import scipy.linalg
    rng = np.random.default_rng(0)
    m = 384
    A = rng.standard_normal((m, m)).astype(np.float32)
    K = A @ A.T
    B = rng.standard_normal((m, 9 * m)).astype(np.float32)
    t = time.perf_counter()
    scipy.linalg.eigh(K, driver="evd", check_finite=False)
    t_eig = max(time.perf_counter() - t, 1e-6)
    t = time.perf_counter()
    A @ B
    t_gemm = max(time.perf_counter() - t, 1e-6)
    return 9.0 * m ** 3 / t_eig, 2.0 * m * m * 9 * m / t_gemm


def probe_cost(n: int, n_labels: int, n_layers: int, d_model: int, *, n_components: int = len(COMPONENTS),
               n_splits: int = 6, n_permutations: int = 100, n_control: int = 5, control_task: bool = True,
               n_plans: int = 1, rates: tuple[float, float] | None = None) -> dict:
    """The estimated cost of ``probe_grid`` on ``n`` stimuli: ``seconds``, ``flops``, ``eigh`` (how many
    decompositions), ``n_train`` (their size) and ``memory_bytes`` (the largest matrices held at once).

    ``n_plans``: how many distinct fold plans the labels need (1 when they all share their folds, the
    usual case; up to one per label, each with its own decompositions)."""
    m = n * (n_splits - 1) / n_splits
    cells = n_layers * n_components
    columns = n_labels * (1 + n_permutations + (n_control if control_task else 0))
    eig_flops = cells * n_plans * n_splits * 9.0 * m ** 3
    gemm_flops = cells * n_splits * (2.0 * m * m * N_ALPHAS * columns + 2.0 * n * m * d_model * n_plans)
    r_eig, r_gemm = rates or _rates()
    return {"seconds": eig_flops / r_eig + gemm_flops / r_gemm, "flops": eig_flops + gemm_flops,
            "eigh": int(cells * n_plans * n_splits), "n_train": int(m), "memory_bytes": int(3 * 8 * m * m)}


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def describe(name: str, n: int, n_labels: int, n_layers: int, d_model: int, **settings) -> str:
    """One line: the size of the stage and its estimated time, from one shared fold plan to one per label."""
    low = probe_cost(n, n_labels, n_layers, d_model, **settings)
    high = probe_cost(n, n_labels, n_layers, d_model, n_plans=max(1, n_labels), **settings)
    span = _duration(low["seconds"]) if high["seconds"] < 1.5 * low["seconds"] else \
        f"{_duration(low['seconds'])} to {_duration(high['seconds'])}"
    return (f"probes {name}: {n} stimuli x {n_labels} labels x {n_layers} layers: at least {low['eigh']} "
            f"eigendecompositions of {low['n_train']} x {low['n_train']} matrices "
            f"(~{low['memory_bytes'] / 2**30:.1f} GB); estimated {span} here (order of magnitude; the cost grows "
            f"with n^2.5-n^3: a smaller set or fewer --permutations is faster)")


def announce(acts, n_labels: int, probe_kw: dict, name: str = "", file=None) -> dict | None:
    """Print :func:`describe` for ``acts`` to stderr when the stage is large (ANNOUNCE_S / ANNOUNCE_N);
    returns the estimate, or None when it is small (nothing printed)."""
    n = len(acts)
    keys = ("n_splits", "n_permutations", "n_control", "control_task")
    settings = {k: probe_kw[k] for k in keys if k in probe_kw}
    c = probe_cost(n, n_labels, acts.n_layers, acts.d_model, **settings)
    if c["seconds"] < ANNOUNCE_S and n < ANNOUNCE_N:
        return None
    print(describe(name or acts.stimuli.attrs.get("name", "set"), n, n_labels, acts.n_layers, acts.d_model,
                   **settings), file=file or sys.stderr, flush=True)
    return c
