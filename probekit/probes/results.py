"""Probe results: the scores table, the out-of-fold predictions behind it, and their persistence.

It owns :class:`ProbeResults` (what :func:`probekit.probes.grid.probe_grid` returns: tidy scores with
CIs and p-values, baselines, label specs, settings), :class:`LabelPredictions` (each label's
out-of-fold predictions on every cell, from which :meth:`ProbeResults.bootstrap_profiles`
redraws group-bootstrap profiles without refitting), and the on-disk format
(:meth:`ProbeResults.save` / :meth:`ProbeResults.load`: parquet tables plus ``meta.json``).
Peak and depth summaries of the profiles live in :mod:`probekit.profiles.metrics`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from probekit.probes import stats
from probekit.probes.design import LabelSpec

SCORE_COLUMNS: list[str] = ["label", "kind", "role", "layer", "depth", "component", "metric",
                            "value", "ci_low", "ci_high", "chance", "p_value", "p_fwer",
                            "control_value", "selectivity", "null_mean", "surface_baseline", "n"]


@dataclass
class LabelPredictions:
    """Out-of-fold predictions of one label on every cell."""
    rows: np.ndarray       # stimulus indices with a label
    y: np.ndarray          # true values (0/1 or float)
    groups: np.ndarray     # CV group ids (ints) of those rows
    folds: np.ndarray      # outer fold of each row
    oof: np.ndarray        # float32 [n_layers, n_components, n_rows]; binary: score, class = score > 0


@dataclass
class ProbeResults:
    """What :func:`probekit.probes.grid.probe_grid` returns: the ``scores`` table (one row per label x
    layer x component x metric, columns :data:`SCORE_COLUMNS`), the out-of-fold ``predictions``
    per label, the surface-feature ``baselines``, the label specs and the grid's settings in ``meta``."""
    scores: pd.DataFrame
    predictions: dict[str, LabelPredictions]
    baselines: pd.DataFrame
    labels: dict[str, LabelSpec]
    n_layers: int
    components: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    # -- views ---------------------------------------------------------------
    def default_metric(self, label: str) -> str:
        return "accuracy" if self._spec(label).kind == "binary" else "r"

    def _spec(self, label: str) -> LabelSpec:
        if label not in self.labels:
            raise KeyError(f"unknown label {label!r}; have {sorted(self.labels)}")
        return self.labels[label]

    def profile(self, label: str, component: str, metric: str | None = None) -> pd.DataFrame:
        """Layer profile: columns layer, depth, value, ci_low, ci_high (+ p-values)."""
        metric = metric or self.default_metric(label)
        s = self.scores
        d = s[(s.label == label) & (s.component == component) & (s.metric == metric)]
        if d.empty:
            raise KeyError(f"no scores for label={label!r} component={component!r} metric={metric!r}")
        return d[["layer", "depth", "value", "ci_low", "ci_high", "p_value", "p_fwer",
                  "control_value", "selectivity"]].sort_values("layer").reset_index(drop=True)

    def bootstrap_profiles(self, label: str, component: str, metric: str | None = None,
                           n_boot: int | None = None, seed: int | None = None) -> np.ndarray:
        """``[n_boot, n_layers]`` group-bootstrap replicates of a profile (no refitting).

        Deterministic in ``seed`` (default: the grid's seed), so a saved and
        reloaded result reproduces the same replicates.
        """
        metric = metric or self.default_metric(label)
        spec = self._spec(label)
        p = self.predictions[label]
        ci = self.components.index(component)
        n_boot = int(n_boot or self.meta.get("n_bootstrap") or 1000)
        seed = self.meta.get("seed", 0) if seed is None else seed
        Wb = stats.group_bootstrap_weights(p.groups, n_boot, seed)
        extra = (metric,) if metric in stats.OPTIONAL_METRICS else ()     # e.g. AUC replicates of a grid run without it
        reps = stats.weighted_metrics(spec.kind, p.y, p.oof[:, ci, :].T, Wb, extra)
        if metric not in reps:
            raise KeyError(f"no metric {metric!r} for the {spec.kind} label {label!r}; it has {sorted(reps)}")
        return reps[metric]

    # -- persistence ---------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write ``scores.parquet``, ``baselines.parquet``, ``predictions.parquet``
        (long: label, row, y, group, fold, layer, component, oof) and ``meta.json``."""
        os.makedirs(path, exist_ok=True)
        self.scores.to_parquet(os.path.join(path, "scores.parquet"), index=False)
        self.baselines.to_parquet(os.path.join(path, "baselines.parquet"), index=False)
        parts = []
        L, C = self.n_layers, len(self.components)
        for name, p in self.predictions.items():
            nr = len(p.rows)
            parts.append(pd.DataFrame({
                "label": name,
                "row": np.tile(p.rows, L * C).astype(np.int32),
                "y": np.tile(p.y, L * C),
                "group": np.tile(p.groups, L * C).astype(np.int32),
                "fold": np.tile(p.folds, L * C).astype(np.int16),
                "layer": np.repeat(np.arange(L), C * nr).astype(np.int16),
                "component": np.tile(np.repeat(np.arange(C), nr), L).astype(np.int8),
                "oof": p.oof.reshape(-1).astype(np.float32)}))
        pd.concat(parts, ignore_index=True).to_parquet(os.path.join(path, "predictions.parquet"), index=False)
        meta = dict(self.meta, n_layers=self.n_layers, components=list(self.components),
                    labels={k: vars(v) for k, v in self.labels.items()})
        with open(os.path.join(path, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1, default=_json_default)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ProbeResults":
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        L, comps = meta.pop("n_layers"), tuple(meta.pop("components"))
        labels = {k: LabelSpec(**v) for k, v in meta.pop("labels").items()}
        preds_df = pd.read_parquet(os.path.join(path, "predictions.parquet"))
        preds = {}
        for name in labels:
            d = preds_df[preds_df.label == name]
            d0 = d[(d.layer == 0) & (d.component == 0)]
            nr = len(d0)
            preds[name] = LabelPredictions(d0.row.to_numpy(np.int64), d0.y.to_numpy(), d0.group.to_numpy(np.int64),
                                           d0.fold.to_numpy(np.int16),
                                           d.oof.to_numpy(np.float32).reshape(L, len(comps), nr))
        return cls(pd.read_parquet(os.path.join(path, "scores.parquet")), preds,
                   pd.read_parquet(os.path.join(path, "baselines.parquet")), labels, L, comps, meta)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))
