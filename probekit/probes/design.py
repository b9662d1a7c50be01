"""The probe design: which labels are fitted, on which rows, with which folds, in which columns.

It owns everything :func:`probekit.probes.grid.probe_grid` decides before it reads an activation:
label specs (:func:`resolve_labels`: kind, role, CV group column), split plans
(:func:`make_plans`: labels that share a group column and non-missing rows share one set of
seeded group-CV folds, stratified on the joint pattern of their binary labels while every joint
class keeps >= n_splits rows, else ``GroupKFold``), the label columns of each plan
(:class:`LabelColumns`: real labels, group-aware permutations, Hewitt & Liang control draws,
laid out by :class:`ColumnBlock`), the surface-feature matrix of the baseline, and the errors
for labels and groups that cannot be probed (:class:`ProbeInputError`, raised before any fit).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from probekit.probes import stats
from probekit.core.activations import carry_metadata

SURFACE_COLUMNS: tuple[str, ...] = ("n_letters", "zipf", "n_target_tokens")


class ProbeInputError(ValueError):
    """Bad input to the probes (labels, groups, activations)."""


@dataclass(frozen=True)
class LabelSpec:
    """One probed label: its stimulus column, what it holds, what it is for, and its CV group column."""
    name: str
    kind: str                 # "binary" | "continuous"
    role: str = "semantic"    # "semantic" | "surface" | "control"
    group: str = "group"      # CV group column


def _infer_kind(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    return "binary" if len(v) and np.all(np.isin(v, (0, 1))) else "continuous"


def resolve_labels(stimuli: pd.DataFrame, labels=None) -> tuple[list[LabelSpec], pd.DataFrame]:
    """Turn the ``labels`` argument into specs and a float frame aligned with ``stimuli``.

    ``labels`` may be None (every label in ``stimuli.attrs["labels"]``), a name
    or list of names, a mapping ``name -> spec dict`` (values from the stimulus
    column of that name) or ``name -> array`` (values given; length must match),
    or a DataFrame of label columns (same length as the stimuli; its
    ``attrs["labels"]`` give the specs, else the kind is inferred).
    """
    n = len(stimuli)
    meta: Mapping[str, Any] = stimuli.attrs.get("labels", {}) or {}
    values: dict[str, np.ndarray] = {}
    specs: dict[str, dict] = {}

    def from_column(name: str, spec: Mapping | None):
        if name not in stimuli.columns:
            known = sorted(set(meta) | {c for c in stimuli.columns})
            raise KeyError(f"unknown label {name!r}; stimulus labels: {sorted(meta)}, columns: {known}")
        values[name] = pd.to_numeric(stimuli[name], errors="coerce").to_numpy(np.float64)
        specs[name] = dict(spec or meta.get(name, {}))

    if labels is None:
        if not meta:
            raise ProbeInputError("stimuli.attrs['labels'] is empty: pass labels=[...] explicitly")
        for name, spec in meta.items():
            from_column(name, spec)
    elif isinstance(labels, str):
        from_column(labels, None)
    elif isinstance(labels, pd.DataFrame):
        if len(labels) != n:
            raise ProbeInputError(f"label frame has {len(labels)} rows but the activations have {n} stimuli")
        lmeta = labels.attrs.get("labels", {}) or {}
        for name in labels.columns:
            if name in stimuli.columns and name not in lmeta and name not in meta and labels[name].dtype == object:
                continue
            values[name] = pd.to_numeric(labels[name], errors="coerce").to_numpy(np.float64)
            specs[name] = dict(lmeta.get(name, meta.get(name, {})))
    elif isinstance(labels, Mapping):
        for name, v in labels.items():
            if isinstance(v, Mapping) or v is None:
                from_column(name, v)
            else:
                arr = np.asarray(v, dtype=np.float64)
                if arr.ndim != 1 or len(arr) != n:
                    raise ProbeInputError(f"label {name!r} has {arr.shape[0] if arr.ndim else 0} values "
                                          f"but the activations have {n} stimuli")
                values[name] = arr
                specs[name] = dict(meta.get(name, {}))
    elif isinstance(labels, Iterable):
        for name in labels:
            if not isinstance(name, str):
                raise ProbeInputError(f"label names must be strings, got {name!r}")
            from_column(name, None)
    else:
        raise ProbeInputError(f"cannot interpret labels={labels!r}")

    out = []
    for name, spec in specs.items():
        y = values[name]
        if np.isinf(y).any():
            raise ProbeInputError(f"label {name!r} has infinite values")
        kind = spec.get("kind") or _infer_kind(y)
        if kind not in ("binary", "continuous"):
            raise ProbeInputError(f"label {name!r}: unknown kind {kind!r}")
        out.append(LabelSpec(name, kind, spec.get("role", "semantic"), spec.get("group", "group")))
    return out, pd.DataFrame(values, index=stimuli.index)


@dataclass
class SplitPlan:
    """Rows used, their groups and the CV folds shared by a set of labels."""
    rows: np.ndarray                    # indices into the stimuli
    groups: np.ndarray                  # group ids of those rows
    folds: list[tuple[np.ndarray, np.ndarray]]   # (train, test) positions within rows
    labels: list[str]
    stratified_on: tuple[str, ...] = ()           # binary labels in the stratification key

    def fold_ids(self) -> np.ndarray:
        f = np.empty(len(self.rows), dtype=np.int16)
        for k, (_, te) in enumerate(self.folds):
            f[te] = k
        return f


def _check_label(spec: LabelSpec, y: np.ndarray, groups: np.ndarray, n_splits: int) -> None:
    name = spec.name
    if len(y) == 0:
        raise ProbeInputError(f"label {name!r} has no non-missing values")
    if spec.kind == "binary":
        if not np.all(np.isin(y, (0, 1))):
            raise ProbeInputError(f"binary label {name!r} must be 0/1, got values {np.unique(y)[:5]}")
        if len(np.unique(y)) < 2:
            raise ProbeInputError(f"binary label {name!r} has a single class ({int(y[0])}) "
                                  f"in all {len(y)} rows: nothing to classify")
    elif np.nanstd(y) == 0:
        raise ProbeInputError(f"continuous label {name!r} is constant ({y[0]}): nothing to regress")
    n_groups = len(np.unique(groups))
    if len(y) < n_splits:
        raise ProbeInputError(f"label {name!r}: {len(y)} stimuli is fewer than n_splits={n_splits}")
    if n_groups == 1:
        raise ProbeInputError(f"label {name!r}: group column {spec.group!r} puts all {len(y)} stimuli in "
                              f"one group; group CV needs at least n_splits={n_splits} groups")
    if n_groups < n_splits:
        raise ProbeInputError(f"label {name!r}: only {n_groups} groups in column {spec.group!r}, "
                              f"fewer than n_splits={n_splits}")


def make_plans(stimuli: pd.DataFrame, specs: Sequence[LabelSpec], Y: pd.DataFrame, n_splits: int,
               seed: int, stratify: str = "joint") -> list[SplitPlan]:
    """Group labels into split plans (see module docstring) and build their folds."""
    keyed: dict[tuple, list[LabelSpec]] = {}
    for spec in specs:
        if spec.group not in stimuli.columns:
            raise ProbeInputError(f"label {spec.name!r}: group column {spec.group!r} not in stimuli "
                                  f"(columns: {list(stimuli.columns)})")
        y = Y[spec.name].to_numpy()
        mask = np.isfinite(y)
        groups = stimuli[spec.group].to_numpy()[mask]
        _check_label(spec, y[mask], groups, n_splits)
        key = (spec.group, mask.tobytes())
        if stratify == "per_label" and spec.kind == "binary":
            key = key + (spec.name,)
        keyed.setdefault(key, []).append(spec)

    plans = []
    for (gcol, mbytes, *_), lspecs in keyed.items():
        mask = np.frombuffer(mbytes, dtype=bool)
        rows = np.flatnonzero(mask)
        groups = stimuli[gcol].to_numpy()[rows]
        _, ginv = np.unique(groups, return_inverse=True)
        binary = [s.name for s in lspecs if s.kind == "binary"]
        X0 = np.zeros((len(rows), 1))
        if binary:
            # stratify on the joint 0/1 pattern of the plan's binary labels, adding
            # labels in order only while every joint class keeps >= n_splits members
            B = Y[binary].to_numpy()[rows].astype(np.int64)
            strat = B[:, 0]
            strat_on = [binary[0]]
            for j in range(1, B.shape[1]):
                _, cand = np.unique(np.column_stack([strat, B[:, j]]), axis=0, return_inverse=True)
                if np.bincount(cand.ravel()).min() < n_splits:
                    break
                strat = cand.ravel()
                strat_on.append(binary[j])
            split = lambda k: _split_folds(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed),
                                           X0, strat.ravel(), ginv)
        else:
            strat_on = []
            split = lambda k: _split_folds(GroupKFold(n_splits=k, shuffle=True, random_state=seed), X0, None, ginv)
        folds = split(n_splits)
        if folds is None:       # too few stimuli/groups per class for n_splits: say how many and what works
            raise ProbeInputError(_too_small_message(lspecs, Y, rows, ginv, n_splits, split))
        plans.append(SplitPlan(rows, ginv, folds, [s.name for s in lspecs], tuple(strat_on)))
    return plans


def _split_folds(cv, X0, strat, ginv):
    """``cv``'s folds, or None when they cannot be made (sklearn refuses, or a fold is empty)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class")
            folds = list(cv.split(X0, strat, ginv))
    except ValueError:
        return None
    return None if any(len(te) == 0 or len(tr) == 0 for tr, te in folds) else folds


def _too_small_message(lspecs, Y, rows, ginv, n_splits, split) -> str:
    names = [s.name for s in lspecs]
    parts = [f"{len(rows)} stimuli in {len(np.unique(ginv))} groups"]
    for s in lspecs:
        if s.kind == "binary":
            y = Y[s.name].to_numpy()[rows]
            per = ", ".join(f"class {c}: {int((y == c).sum())} stimuli in {len(np.unique(ginv[y == c]))} groups"
                            for c in (0, 1))
            parts.append(f"{s.name!r}: {per}")
    works = next((k for k in range(n_splits - 1, 1, -1) if split(k) is not None), None)
    fix = (f"use n_splits={works} or fewer" if works else "no n_splits >= 2 works") + \
        f", or add stimuli (groups) so each class has at least {n_splits} groups"
    return (f"label(s) {names}: {'; '.join(parts)}: too few for {n_splits}-fold group CV "
            f"(stratified on the binary classes, every fold needs test and training rows); {fix}")


def surface_matrix(stimuli: pd.DataFrame, exclude: str) -> tuple[np.ndarray | None, list[str]]:
    """The surface-baseline features (:data:`SURFACE_COLUMNS` present, less ``exclude``), missing
    values set to the column median; ``(None, [])`` when there are none."""
    cols = [c for c in SURFACE_COLUMNS if c in stimuli.columns and c != exclude]
    if not cols:
        return None, []
    X = stimuli[cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    med = np.nanmedian(X, axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    X = np.where(np.isnan(X), med[None, :], X)
    return X.astype(np.float32), cols


class ColumnBlock(NamedTuple):
    """Where one label's columns sit in its plan's :class:`LabelColumns`:
    ``[real | n_permutations permuted | n_control control draws]`` from column ``start``."""
    start: int
    n_permutations: int
    n_control: int

    @property
    def stop(self) -> int:
        return self.start + 1 + self.n_permutations + self.n_control


class LabelColumns(NamedTuple):
    """The label columns one split plan fits (a tuple, so ``values, targets, is_binary, layout = cols``).

    ``values [rows, cols]``: what each column holds -- 0/1 classes for binary labels, the rating for
    continuous ones; ``targets``: the regression targets (binary as -1/+1, continuous unchanged);
    ``is_binary [cols]``; ``layout[name]``: that label's :class:`ColumnBlock`.
    """
    values: np.ndarray
    targets: np.ndarray
    is_binary: np.ndarray
    layout: dict[str, ColumnBlock]


def _label_columns(stim: pd.DataFrame, plans: Sequence[SplitPlan], specs: Mapping[str, LabelSpec],
                  Y: pd.DataFrame, *, n_permutations: int, control_task: bool, n_control: int,
                  control_column: str, rng: np.random.Generator):
    """Per plan, its :class:`LabelColumns`: for each label ``[real | permutations | control draws]``."""
    plan_cols, schemes = [], {}
    for plan in plans:
        blocks, layout = [], {}
        col = 0
        for name in plan.labels:
            spec = specs[name]
            y = Y[name].to_numpy()[plan.rows]
            perms = np.empty((len(y), 0))
            if n_permutations:
                # folds stratified on this label -> permute within folds (see group_permutations)
                strata = plan.fold_ids() if name in plan.stratified_on else None
                perms, schemes[name] = stats.group_permutations(y, plan.groups, n_permutations, rng, strata)
            ctrl = np.empty((len(y), 0))
            if control_task:
                tcol = control_column if control_column in stim.columns else spec.group
                types = stim[tcol].map(lambda v: "|".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray))
                                       else str(v)).to_numpy()[plan.rows]
                ctrl = stats.type_control_labels(y, types, n_control, rng, spec.kind)
            block = np.column_stack([y[:, None], perms, ctrl]).astype(np.float64)
            layout[name] = ColumnBlock(col, perms.shape[1], ctrl.shape[1])
            col += block.shape[1]
            blocks.append(block)
        values = np.concatenate(blocks, axis=1)
        is_binary = np.concatenate([np.full(b.shape[1], specs[nm].kind == "binary")
                                    for b, nm in zip(blocks, plan.labels)])
        targets = np.where(is_binary[None, :], 2 * values - 1, values)
        plan_cols.append(LabelColumns(values, targets, is_binary, layout))
    return plan_cols, schemes


@dataclass
class GridColumns:
    """Everything :func:`probekit.probes.grid.probe_grid` fits, before any activation is read.

    ``plans[i]`` holds rows, groups and folds; ``cols[i]`` (:class:`LabelColumns`) its label
    columns. ``schemes[name]`` is the permutation scheme (:func:`probekit.probes.stats.group_permutations`).
    """
    stimuli: pd.DataFrame
    specs: dict[str, LabelSpec]
    Y: pd.DataFrame
    plans: list[SplitPlan]
    cols: list[LabelColumns]
    schemes: dict[str, str]


def grid_columns(stimuli: pd.DataFrame, labels=None, *, n_splits: int = 6, seed: int = 0,
                 stratify: str = "joint", n_permutations: int = 200, control_task: bool = True,
                 n_control: int = 5, control_column: str = "target") -> GridColumns:
    """Labels, split plans and every label column (real, permuted, control task)
    exactly as :func:`probekit.probes.grid.probe_grid` with the same arguments builds them: the grid
    calls this, so a scikit-learn loop over ``grid_columns(...)`` refits the
    grid's own columns (the benchmark and the oracle tests do)."""
    stim = carry_metadata(stimuli.reset_index(drop=True), stimuli)
    spec_list, Y = resolve_labels(stim, labels)
    specs = {s.name: s for s in spec_list}
    plans = make_plans(stim, spec_list, Y, n_splits, seed, stratify)
    cols, schemes = _label_columns(stim, plans, specs, Y, n_permutations=n_permutations,
                                   control_task=control_task, n_control=n_control,
                                   control_column=control_column, rng=np.random.default_rng(seed))
    return GridColumns(stim, specs, Y, plans, cols, schemes)
