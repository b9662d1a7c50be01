"""Experiments as data: which stimulus set, which rows, which labels make its profile.

A study (:mod:`probekit.studies`) registers its experiments; this module knows none by name.

An experiment's *profile* is the mean, over its primary labels, of the
balanced-accuracy profile of each label (binary semantic labels of the set,
unless listed explicitly). Its bootstrap replicates are the same mean over the
labels' group-bootstrap replicates; all primary labels of an experiment share
their rows and CV groups, so the replicates resample the same groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from probekit.core.activations import carry_metadata
from probekit.stimuli.sets import load as load_stimulus_set
from probekit.stimuli.sets import load_file as load_stimulus_file


@dataclass(frozen=True)
class Experiment:
    name: str
    stimulus_set: str
    description: str
    paper: str                                  # which experiment of the paper this is
    query: str | None = None                    # pandas query selecting rows of the set
    primary: tuple[str, ...] | None = None      # labels whose mean makes the profile
    metric: str = "balanced_accuracy"
    extra_labels: tuple[str, ...] = field(default_factory=tuple)  # also probed (ratings, surface)

    def stimulus_frame(self) -> pd.DataFrame:
        """The whole stimulus set: a shipped set by name, or a CSV/parquet file by path (a study's own set)."""
        return load_stimulus_file(self.stimulus_set) if str(self.stimulus_set).endswith((".csv", ".parquet")) \
            else load_stimulus_set(self.stimulus_set)

    def rows(self, frame: pd.DataFrame) -> np.ndarray:
        """Positions of this experiment's rows (its ``query``) in ``frame``, the whole set."""
        if not self.query:
            return np.arange(len(frame))
        return np.flatnonzero(frame.eval(self.query).to_numpy(dtype=bool))

    def select(self, frame: pd.DataFrame, rows: np.ndarray | None = None) -> pd.DataFrame:
        """This experiment's rows of ``frame`` (the whole set, or its extracted stimuli), metadata carried;
        ``rows``: :meth:`rows` of ``frame`` when the caller has them already."""
        if not self.query:
            return frame
        rows = self.rows(frame) if rows is None else rows
        return carry_metadata(frame.iloc[rows].reset_index(drop=True), frame,
                              name=f"{self.stimulus_set}[{self.query}]")

    def stimuli(self) -> pd.DataFrame:
        """This experiment's stimuli: :meth:`select` of :meth:`stimulus_frame`."""
        return self.select(self.stimulus_frame())

    def activations(self, acts):
        """This experiment's rows of ``acts``, the activations of its whole stimulus set (extracted once
        for every experiment that queries the set)."""
        if not self.query:
            return acts
        rows = self.rows(acts.stimuli)                    # the query evaluated once
        return acts.take(rows, self.select(acts.stimuli, rows))

    def primary_labels(self, stimuli: pd.DataFrame) -> list[str]:
        if self.primary:
            return list(self.primary)
        specs = stimuli.attrs.get("labels", {})
        return [k for k, v in specs.items() if v.get("kind") == "binary" and v.get("role") == "semantic"]


def experiment_profile(res, exp: Experiment, component: str, labels: list[str] | None = None):
    """``(values[L], replicates[B, L])`` of an experiment's mean profile on one component."""
    labels = list(labels or res.meta.get("primary") or exp.primary or [])
    if not labels:
        raise KeyError(f"experiment {exp.name}: no primary labels in the results")
    rows = [res.predictions[l].rows for l in labels]
    if any(len(r) != len(rows[0]) or (r != rows[0]).any() for r in rows[1:]):
        raise ValueError(f"experiment {exp.name}: primary labels {labels} cover different rows; "
                         f"their bootstrap replicates cannot be averaged")
    values = np.mean([res.profile(l, component, exp.metric).value.to_numpy() for l in labels], axis=0)
    boot = np.mean([res.bootstrap_profiles(l, component, exp.metric) for l in labels], axis=0)
    return values, boot
