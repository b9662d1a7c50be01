"""Pure functions on layer profiles (one score per layer).

A *profile* is a 1-D array ``v[0..L-1]`` of a probe metric by layer, optionally
with per-layer confidence bounds ``lo``/``hi`` (e.g. group-bootstrap percentile
CIs from :class:`probekit.probes.ProbeResults`).

Definitions
-----------
peak layer
    The first index of the maximum of ``v`` (NaNs ignored).
normalised depth
    ``layer / n_layers`` (so layer 0 is depth 0 and the last layer is
    ``1 - 1/L``), comparable across models of different depth.
peaks and prominence
    A peak is a local maximum (a plateau counts once, at its middle; with
    ``include_edges`` the first/last layer count when they exceed their single
    neighbour). Its prominence is the topographic one (as in
    ``scipy.signal.find_peaks``): the height above the higher of the two
    minima found on each side before reaching a strictly higher point (or the
    end of the profile; an edge peak uses its one side).
significant peak
    A peak whose prominence exceeds the CI half-width ``(hi - lo) / 2`` at
    that layer (or a given scalar threshold).
double peak
    Two significant peaks ``p1 < p2`` and the valley ``v = argmin v[p1..p2]``
    between them with ``hi[v] < min(lo[p1], lo[p2])``: the valley's upper
    bound lies below both peaks' lower bounds. Among qualifying pairs the one
    with the largest margin ``min(lo[p1], lo[p2]) - hi[v]`` is reported.
anti-persistence
    ``rho`` = lag-1 autocorrelation of the first differences
    ``d_l = v[l+1] - v[l]`` (standard ACF estimator:
    ``sum_t (d_t - dbar)(d_{t+1} - dbar) / sum_t (d_t - dbar)^2``). First
    differences of white noise have ``rho -> -0.5``, so ``rho`` is judged
    against surrogate profiles = smooth trend (Savitzky-Golay fit) + shuffled
    residuals; the p-value is the fraction of surrogates at least as extreme.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def peak_layer(values) -> int:
    """First index of the maximum (NaNs ignored)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or np.all(np.isnan(v)):
        raise ValueError("empty or all-NaN profile")
    return int(np.nanargmax(v))


def layer_range_depths(low: float, high: float, n_layers: int) -> tuple[float, float]:
    """Depth interval ``[low/L, (high+1)/L)`` covered by layers ``low..high`` of an ``L``-layer model
    (layer ``l`` spans ``[l/L, (l+1)/L)``): how a paper's layer range is compared across depths."""
    return low / n_layers, (high + 1) / n_layers


def bootstrap_peak_layers(replicates) -> np.ndarray:
    """Peak layer (first argmax, NaNs ignored) of each bootstrap replicate profile ``[B, L]``."""
    r = np.asarray(replicates, dtype=float)
    return np.nanargmax(np.where(np.isnan(r), -np.inf, r), axis=1)


def normalized_depth(layer, n_layers: int):
    """``layer / n_layers``."""
    if n_layers <= 0:
        raise ValueError("n_layers must be positive")
    return np.asarray(layer, dtype=float) / n_layers if np.ndim(layer) else float(layer) / n_layers


@dataclass(frozen=True)
class PeakInfo:
    layer: int
    height: float
    prominence: float
    left_base: int
    right_base: int


def find_peaks(values, include_edges: bool = False) -> list[PeakInfo]:
    """All local maxima with their topographic prominence (see module doc)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return []
    v = np.where(np.isnan(v), -np.inf, v)
    peaks = []
    i = 0
    while i < n:
        j = i
        while j + 1 < n and v[j + 1] == v[i]:
            j += 1
        left_ok = (i > 0 and v[i - 1] < v[i]) or (i == 0 and include_edges)
        right_ok = (j < n - 1 and v[j + 1] < v[i]) or (j == n - 1 and include_edges)
        if left_ok and right_ok and not (i == 0 and j == n - 1) and np.isfinite(v[i]):
            peaks.append((i + j) // 2)
        i = j + 1
    out = []
    for p in peaks:
        h = v[p]
        # left side
        k = p
        lmin, lbase = h, p
        while k > 0 and v[k - 1] <= h:
            k -= 1
            if v[k] < lmin:
                lmin, lbase = v[k], k
        k = p
        rmin, rbase = h, p
        while k < n - 1 and v[k + 1] <= h:
            k += 1
            if v[k] < rmin:
                rmin, rbase = v[k], k
        # an edge peak (with include_edges) is measured on its one side
        if p == 0:
            base = rmin
        elif p == n - 1:
            base = lmin
        else:
            base = max(lmin, rmin)
        out.append(PeakInfo(int(p), float(h), float(h - base), int(lbase), int(rbase)))
    return out


def significant_peaks(values, lo=None, hi=None, threshold=None, include_edges: bool = False) -> list[PeakInfo]:
    """Peaks whose prominence exceeds ``threshold`` (scalar or per-layer), by
    default the CI half-width ``(hi - lo) / 2`` at the peak."""
    v = np.asarray(values, dtype=float)
    if threshold is None:
        if lo is None or hi is None:
            raise ValueError("give lo and hi, or threshold")
        thr = (np.asarray(hi, float) - np.asarray(lo, float)) / 2
    else:
        thr = np.broadcast_to(np.asarray(threshold, float), v.shape)
    return [p for p in find_peaks(v, include_edges) if p.prominence > thr[p.layer]]


@dataclass(frozen=True)
class DoublePeak:
    found: bool
    first: int | None = None
    second: int | None = None
    valley: int | None = None
    margin: float = float("nan")   # min(lo[p1], lo[p2]) - hi[valley]


def double_peak(values, lo, hi, include_edges: bool = False, min_separation: int = 1) -> DoublePeak:
    """Double peak as defined in the module docstring, with the two peaks at
    least ``min_separation`` layers apart.

    With the default (1) a single-layer dip in a jagged profile qualifies: on
    SmolLM2-135M ``attn_out`` profiles (items set) peaks at layers 21 and 25
    around a dip at 24 pass. For the paper's broad double peak (layers ~12-16
    and ~25-33 of 80) pass e.g. ``min_separation = n_layers // 8``.
    """
    v = np.asarray(values, dtype=float)
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    sig = significant_peaks(v, lo, hi, include_edges=include_edges)
    best = DoublePeak(False)
    for a in range(len(sig)):
        for b in range(a + 1, len(sig)):
            p1, p2 = sig[a].layer, sig[b].layer
            if p2 - p1 < min_separation:
                continue
            seg = v[p1:p2 + 1]
            val = p1 + int(np.nanargmin(seg))
            margin = min(lo[p1], lo[p2]) - hi[val]
            if margin > 0 and (not best.found or margin > best.margin):
                best = DoublePeak(True, p1, p2, val, float(margin))
    return best


def lag1_autocorr(x) -> float:
    """Standard ACF estimator at lag 1 (NaN for fewer than 3 points or zero variance)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 3:
        return float("nan")
    xc = x - x.mean()
    den = (xc ** 2).sum()
    if den == 0:
        return float("nan")
    return float((xc[:-1] * xc[1:]).sum() / den)


def anti_persistence(values) -> float:
    """``rho``: lag-1 autocorrelation of the first differences of a profile."""
    return lag1_autocorr(np.diff(np.asarray(values, dtype=float)))


def smooth_trend(values, window: int | None = None, polyorder: int = 2) -> np.ndarray:
    """Savitzky-Golay trend (window: odd, default ~ a third of the profile, at least ``2 * polyorder + 3``).

    The lower bound matters for short segments (e.g. the back half of an
    18-layer model): a window of ``polyorder + 1`` points fits them exactly,
    leaving zero residuals and a degenerate surrogate null."""
    from scipy.signal import savgol_filter
    v = np.asarray(values, dtype=float)
    n = len(v)
    if window is None:
        window = max(2 * polyorder + 3, n // 3)
        if window > n:            # too short for a quadratic SG fit with real smoothing: a straight line
            return np.polyval(np.polyfit(np.arange(n), v, 1), np.arange(n))
    window = min(window, n if n % 2 else n - 1)
    if window % 2 == 0:
        window -= 1
    if window <= polyorder:
        return np.polyval(np.polyfit(np.arange(n), v, min(polyorder, n - 1)), np.arange(n))
    return savgol_filter(v, window, polyorder, mode="interp")


def surrogate_rhos(values, n_surrogates: int, rng: np.random.Generator, window: int | None = None,
                   polyorder: int = 2) -> np.ndarray:
    """``rho`` of ``n_surrogates`` surrogate profiles: the smooth trend of ``values``
    plus its residuals shuffled across layers (the calibrated null)."""
    v = np.asarray(values, dtype=float)
    trend = smooth_trend(v, window, polyorder)
    resid = v - trend
    return np.array([anti_persistence(trend + rng.permutation(resid)) for _ in range(n_surrogates)])


@dataclass(frozen=True)
class AntiPersistence:
    rho: float
    null_mean: float
    null_sd: float
    p_value: float
    alternative: str
    n_surrogates: int
    layers: tuple[int, int]


def anti_persistence_test(values, n_surrogates: int = 2000, seed: int = 0, layers: tuple[int, int] | None = None,
                          window: int | None = None, polyorder: int = 2,
                          alternative: str = "less") -> AntiPersistence:
    """``rho`` against a calibrated null.

    The profile (optionally ``values[start:stop]``, e.g. the back half) is split
    into a Savitzky-Golay trend and residuals; each surrogate is trend +
    residuals shuffled across layers, so it keeps the smooth shape and the
    residual distribution but has exchangeable (white) fluctuations.
    ``alternative="less"``: p = (1 + #{rho_null <= rho}) / (1 + n), i.e. the
    observed zig-zag is *more* anti-persistent than trend + white noise;
    ``"greater"`` the reverse; ``"two-sided"`` uses ``|rho - null_mean|``.
    """
    v = np.asarray(values, dtype=float)
    start, stop = (0, len(v)) if layers is None else layers
    v = v[start:stop]
    if len(v) < 5:
        raise ValueError(f"need at least 5 layers for anti-persistence, got {len(v)}")
    rho = anti_persistence(v)
    null = surrogate_rhos(v, n_surrogates, np.random.default_rng(seed), window, polyorder)
    null = null[np.isfinite(null)]
    if alternative == "less":
        k = np.sum(null <= rho + 1e-12)
    elif alternative == "greater":
        k = np.sum(null >= rho - 1e-12)
    elif alternative == "two-sided":
        m = null.mean()
        k = np.sum(np.abs(null - m) >= abs(rho - m) - 1e-12)
    else:
        raise ValueError(f"alternative must be 'less', 'greater' or 'two-sided', got {alternative!r}")
    return AntiPersistence(rho, float(null.mean()), float(null.std()), float((1 + k) / (1 + len(null))),
                           alternative, len(null), (start, stop))


@dataclass(frozen=True)
class PeakOrder:
    """Bootstrap comparison of peak depths: ``depth_a - depth_b``."""
    difference: float
    ci_low: float
    ci_high: float
    p_a_deeper: float      # fraction of replicates with depth_a > depth_b
    a_deeper: bool         # CI entirely above 0


def peak_order(boot_a: np.ndarray, n_layers_a: int, boot_b: np.ndarray, n_layers_b: int,
               values_a=None, values_b=None, level: float = 0.95) -> PeakOrder:
    """Is experiment A's peak deeper than B's? ``boot_*`` are bootstrap
    replicate profiles ``[B, L]`` (independent resamples of each experiment,
    same number of replicates); ``values_*`` the point profiles (default: the
    replicates' mean)."""
    ba = np.asarray(boot_a, float)
    bb = np.asarray(boot_b, float)
    if ba.shape[0] != bb.shape[0]:
        raise ValueError("use the same number of bootstrap replicates for both experiments")
    da = bootstrap_peak_layers(ba) / n_layers_a
    db = bootstrap_peak_layers(bb) / n_layers_b
    va = np.nanmean(ba, 0) if values_a is None else np.asarray(values_a, float)
    vb = np.nanmean(bb, 0) if values_b is None else np.asarray(values_b, float)
    diff = peak_layer(va) / n_layers_a - peak_layer(vb) / n_layers_b
    a = (1 - level) / 2
    lo, hi = np.quantile(da - db, [a, 1 - a])
    return PeakOrder(float(diff), float(lo), float(hi), float(np.mean(da > db)), bool(lo > 0))
