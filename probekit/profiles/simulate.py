"""Synthetic layer profiles for calibrating decision rules: truths, realistic noise, bootstrap replicates.

A simulated experiment is a *truth* profile ``f[L]`` observed with noise, plus ``B``
bootstrap replicates scattered around the observation — the same
``(values, boot)`` a real run hands to the claims. The noise model follows what
the real bootstrap of out-of-fold predictions shows and what it misses:

* the replicates scatter with sd ``sd[l]`` (the bootstrap's own spread), correlated
  across layers (AR(1) with ``rho``, or a random walk);
* the observation misses the truth by ``kappa_true`` times that sd (``kappa_true``
  > 1: refit/CV-split variance the bootstrap does not see).

Everything is a pure function of its arguments and an explicit generator.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from probekit.models.registry import parse_random
from probekit.probes.stats import maxstat_pvalue

CHANCE = 0.5


def ar_noise(shape, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance stationary AR(1) noise along the last axis (``rho`` in (-1, 1))."""
    e = rng.standard_normal(shape)
    if rho == 0:
        return e
    e[..., 0] /= np.sqrt(1 - rho ** 2)                 # start in the stationary distribution
    return lfilter([np.sqrt(1 - rho ** 2)], [1, -rho], e, axis=-1)


def walk_noise(shape, rng: np.random.Generator) -> np.ndarray:
    """A random walk along the last axis, scaled so its sd is 1 at the last layer (0 at layer 0 ... 1)."""
    e = rng.standard_normal(shape)
    w = np.cumsum(e, axis=-1)
    return w / np.sqrt(shape[-1])


def noise(shape, kind: str, rho: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "ar":
        return ar_noise(shape, rho, rng)
    if kind == "walk":
        return walk_noise(shape, rng)
    raise ValueError(f"noise kind {kind!r}: 'ar' or 'walk'")


def bump(n_layers: int, centre: float, width: float, height: float, base: float = CHANCE) -> np.ndarray:
    """``base + height * exp(-(x - centre)^2 / (2 width^2))`` at depths ``x = l / L``."""
    x = np.arange(n_layers) / n_layers
    return base + height * np.exp(-0.5 * ((x - centre) / width) ** 2)


def resample(profile, n_layers: int) -> np.ndarray:
    """A profile measured on ``len(profile)`` layers, linearly interpolated to ``n_layers`` (same depths)."""
    p = np.asarray(profile, float)
    return np.interp(np.arange(n_layers) / n_layers, np.arange(len(p)) / len(p), p)


def observe(truth, sd, rng: np.random.Generator, *, rho: float = 0.6, kappa_true: float = 1.0,
            kind: str = "ar", n_boot: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(values, boot)``: the truth seen with noise of sd ``kappa_true * sd`` and ``n_boot`` replicates
    around that observation with sd ``sd`` (same correlation structure)."""
    f = np.asarray(truth, float)
    s = np.broadcast_to(np.asarray(sd, float), f.shape)
    values = f + kappa_true * s * noise(f.shape, kind, rho, rng)
    boot = values + s * noise((n_boot, len(f)), kind, rho, rng)
    return values, boot


def cell_table(labels, n_layers: int, rng: np.random.Generator, *, components=("resid_pre", "attn_out", "mlp_out"),
               sd: float = 0.03, rho: float = 0.6, shift=None, n_perm: int = 100,
               metric: str = "balanced_accuracy", role: str = "primary") -> "object":
    """A probe grid's tidy scores for ``labels`` with a max-statistic permutation null.

    Each label's observed cells ``[component, layer]`` and its ``n_perm`` permutation replicates are chance
    plus AR(1) noise (sd ``sd``); ``shift(label) -> [L]`` (or None) adds a true effect to the observed
    cells. ``p_fwer`` comes from :func:`probekit.stats.maxstat_pvalue` over the label's whole grid, as in
    the probe grid."""
    n_comp, L = len(components), n_layers
    parts = []
    for lab in labels:
        null = CHANCE + sd * ar_noise((n_perm, n_comp, L), rho, rng)
        observed = CHANCE + sd * ar_noise((n_comp, L), rho, rng)
        if shift is not None:
            observed = observed + np.asarray(shift(lab), float)[None, :]
        p = maxstat_pvalue(observed, null)
        parts.append(pd.DataFrame({
            "label": lab, "component": np.repeat(components, L), "metric": metric,
            "layer": np.tile(np.arange(L), n_comp), "value": observed.ravel(), "p_fwer": p.ravel(),
            "null_mean": null.mean(0).ravel(), "chance": CHANCE, "role": role}))
    return pd.concat(parts, ignore_index=True)


# ----------------------------------------------------------------------------- measured noise

_MEASURED: dict = {}


def measured_noise(npz_path) -> dict:
    """``{(model, experiment, component): (refit_dev [R, L0], reweight_dev [B, L0])}`` from the measured
    replicates (``probekit/studies/bogdan2025/noise_measured.npz``), for the sets refitted at every layer: each
    refit's deviation from the refits' per-layer median (the refits' level shift from fewer distinct groups
    removed) and each reweighting replicate's deviation from their mean. Cached per path."""
    key = str(npz_path)
    if key not in _MEASURED:
        z = np.load(npz_path)
        out = {}
        for k in z.files:
            m, e, c, what = k.split("/")
            if what != "refit" or parse_random(m)[1] is not None:   # twins have no refits to calibrate on
                continue
            ref, rw = z[k], z[f"{m}/{e}/{c}/reweight"]
            if np.isnan(ref).any():
                continue
            out[(m, e, c)] = (ref - np.median(ref, axis=0), rw - rw.mean(axis=0))
        _MEASURED[key] = out
    return _MEASURED[key]


def _resample_rows(rows: np.ndarray, n_layers: int) -> np.ndarray:
    L0 = rows.shape[-1]
    x, x0 = np.arange(n_layers) / n_layers, np.arange(L0) / L0
    idx = np.clip(np.searchsorted(x0, x, side="right") - 1, 0, L0 - 1)
    nxt = np.minimum(idx + 1, L0 - 1)
    w = np.where(nxt > idx, (x - x0[idx]) * L0, 0.0)
    return rows[..., idx] * (1 - w) + rows[..., nxt] * w


def observe_measured(truth, refit_dev, reweight_dev, rng: np.random.Generator, *, n_boot: int = 500,
                     scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(values, boot)`` with measured noise: the truth plus one resampled refit deviation (the sampling
    error of a real estimate, refit variance included), and ``n_boot`` replicates = that observation plus
    resampled reweighting deviations (what the pipeline's bootstrap sees). Deviations measured on ``L0``
    layers are interpolated to ``len(truth)`` in normalised depth (the noise's correlation scales with
    depth, not with layer count). ``scale`` multiplies both."""
    f = np.asarray(truth, float)
    r = _resample_rows(refit_dev[rng.integers(len(refit_dev))], len(f))
    values = f + scale * r
    boot = values + scale * _resample_rows(reweight_dev[rng.integers(len(reweight_dev), size=n_boot)], len(f))
    return values, boot
