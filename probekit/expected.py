"""Expected values for the claims: ``expected/*.parquet``, one row per (model, claim, metric).

Columns (validated by :func:`validate`):

=================  ==========================================================
model              alias (``llama-3.2-3b``, ``smollm2-135m``, ...)
n_layers           the model's number of layers (for normalised-depth audits)
claim, metric      as produced by :func:`probekit.claims.measure`
unit               layer, depth, balanced_accuracy, rho, p, bool, fraction, ...
direction          ``range``   low <= value <= high
                   ``greater`` value > low          ``less``  value < high
                   ``min``     value >= low         ``max``   value <= high
                   ``equal``   |value - expected| <= tolerance
expected           the central value (paper number or measured estimate)
tolerance          half-width used by ``equal`` (measured rows: from the CI)
low, high          the bounds (NaN where a direction has none)
judge_on           ``value`` (the point estimate), ``ci_low`` or ``ci_high``
provenance         ``paper`` or ``measured``
source             paper: where in arXiv 2501.07359 the number is;
                   measured: probekit version, date and the CI it came from
probekit_version   version that wrote the row
date               ISO date the row was written
note               free text
=================  ==========================================================
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .atomic import atomic_write_parquet

COLUMNS = ["model", "n_layers", "claim", "metric", "unit", "direction", "expected", "tolerance", "low", "high",
           "judge_on", "provenance", "source", "probekit_version", "date", "note"]
DIRECTIONS = ("range", "greater", "less", "min", "max", "equal")
PAPER_FILE = "paper.parquet"
MEASURED_FILE = "measured.parquet"


class ExpectedTableError(ValueError):
    """A row of expected/*.parquet is malformed."""


def expected_dir() -> Path:
    env = os.environ.get("PROBEKIT_EXPECTED_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "expected"


def _r(model, n_layers, claim, metric, unit, direction, *, low=np.nan, high=np.nan, expected=np.nan,
       tolerance=np.nan, judge_on="value", source="", note="", provenance="paper", version=None, date=None):
    return {"model": model, "n_layers": n_layers, "claim": claim, "metric": metric, "unit": unit,
            "direction": direction, "expected": expected, "tolerance": tolerance, "low": low, "high": high,
            "judge_on": judge_on, "provenance": provenance, "source": source,
            "probekit_version": version or __version__, "date": date or "2025-01-13", "note": note}


ABSTRACT = "arXiv 2501.07359v1, abstract"
_CHANCE = "not a number from the paper: chance level is what the probing logic requires of a shuffled control"


def paper_rows() -> pd.DataFrame:
    """The paper's numbers, as data. (``date`` = the paper's submission date.)"""
    rows = []
    for model, L in (("llama-3.2-3b", 28), ("llama-3.3-70b", 80)):
        rows += [
            _r(model, L, "buried_decodable", "buried.deep_value", "balanced_accuracy", "greater", low=0.5,
               source=f"{ABSTRACT}: 'deep layers also compress information from early portions of the context "
                      f"window'", note="deep = last third of the layers; last-token readout"),
            _r(model, L, "buried_decodable", "buried.deep_min_p_fwer", "p", "less", high=0.05,
               source=f"{ABSTRACT} (decodable = above chance, family-wise over layers x components)"),
            _r(model, L, "shuffled_at_chance", "max_abs_null_minus_chance", "score", "max", high=0.02,
               source=_CHANCE),
            _r(model, L, "shuffled_at_chance", "shuffled_fwer_positive_rate", "fraction", "max", high=0.05,
               judge_on="ci_low", source=_CHANCE),
        ]
    m, L = "llama-3.2-3b", 28
    rows += [
        _r(m, L, "item_peak_early", "items.peak_layer", "layer", "range", low=2, high=7, expected=4.5,
           source=f"{ABSTRACT}: 'Item-level semantics are most strongly represented early (layers 2-7)'"),
        _r(m, L, "relations_deeper", "relations.peak_layer", "layer", "range", low=8, high=12, expected=10,
           source=f"{ABSTRACT}: 'then two-item relations (layers 8-12)'"),
        _r(m, L, "relations_deeper", "relations_minus_items.peak_depth", "depth", "greater", low=0.0,
           source=f"{ABSTRACT}: relations peak after items"),
        _r(m, L, "analogies_deeper", "analogies.peak_layer", "layer", "range", low=10, high=15, expected=12.5,
           source=f"{ABSTRACT}: 'and then four-item analogies (layers 10-15)'"),
        _r(m, L, "analogies_deeper", "analogies_minus_relations.peak_depth", "depth", "min", low=0.0,
           source=f"{ABSTRACT}: analogies after relations (the ranges 8-12 and 10-15 overlap, so 'not shallower')"),
    ]
    m, L = "llama-3.3-70b", 80
    for exp in ("relations", "analogies"):
        rows += [
            _r(m, L, "double_peak", f"{exp}.double_peak_found", "bool", "equal", expected=1, tolerance=0,
               source=f"{ABSTRACT}: 'two-item relations and four-item analogies initially increase ..., then "
                      f"markedly decrease, and afterward increase again'"),
            _r(m, L, "double_peak", f"{exp}.first_peak_layer", "layer", "range", low=12, high=16, expected=14,
               source="arXiv 2501.07359v1, 70B results (Exp 2-3): first peak around layers 12-16 of 80"),
            _r(m, L, "double_peak", f"{exp}.second_peak_layer", "layer", "range", low=25, high=33, expected=29,
               source="arXiv 2501.07359v1, 70B results (Exp 2-3): second peak around layers 25-33 of 80, valley between"),
        ]
    rows += [
        _r(m, L, "anti_persistence", "mean_rho_attn_back_half", "rho", "equal", expected=-0.33, tolerance=0.15,
           source="arXiv 2501.07359v1, 70B results: adjacent attention layers anti-persistent, rho ~ -0.33",
           note="tolerance 0.15 is probekit's choice; the paper gives no CI"),
        _r(m, L, "anti_persistence", "p_vs_null", "p", "less", high=0.05,
           source="arXiv 2501.07359v1, 70B results (the calibrated surrogate null is probekit's: first differences of white noise "
                  "already give rho ~ -0.5)"),
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def validate(df: pd.DataFrame, where: str = "expected table") -> pd.DataFrame:
    """Raise ExpectedTableError listing every malformed row."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ExpectedTableError(f"{where}: missing columns {missing}")
    problems = []
    for i, r in df.iterrows():
        tag = f"row {i} ({r.model}, {r.metric})"
        if r.direction not in DIRECTIONS:
            problems.append(f"{tag}: direction {r.direction!r} not in {DIRECTIONS}")
        if r.provenance not in ("paper", "measured"):
            problems.append(f"{tag}: provenance {r.provenance!r} must be 'paper' or 'measured'")
        if not str(r.source).strip():
            problems.append(f"{tag}: empty source (say where the number comes from)")
        if r.judge_on not in ("value", "ci_low", "ci_high"):
            problems.append(f"{tag}: judge_on {r.judge_on!r}")
        need = {"range": ("low", "high"), "greater": ("low",), "min": ("low",), "less": ("high",),
                "max": ("high",), "equal": ("expected", "tolerance")}.get(r.direction, ())
        for c in need:
            if pd.isna(r[c]):
                problems.append(f"{tag}: direction {r.direction} needs {c}")
        if r.direction == "range" and not pd.isna(r.low) and not pd.isna(r.high) and r.low > r.high:
            problems.append(f"{tag}: low {r.low} > high {r.high}")
        if r.provenance == "measured" and "CI" not in str(r.source) and r.direction == "range":
            problems.append(f"{tag}: a measured range must name the CI it came from in source")
    dup = df.duplicated(["model", "claim", "metric"], keep=False)
    for i in np.flatnonzero(dup.to_numpy()):
        problems.append(f"row {i}: duplicate (model, claim, metric) = {tuple(df.iloc[i][['model', 'claim', 'metric']])}")
    if problems:
        raise ExpectedTableError(f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return df


def load(directory: str | os.PathLike | None = None) -> pd.DataFrame:
    """Every ``expected/*.parquet``, validated, as one table."""
    d = Path(directory) if directory else expected_dir()
    parts = [pd.read_parquet(p) for p in sorted(d.glob("*.parquet"))]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return validate(pd.concat(parts, ignore_index=True), str(d))


def write_paper(directory: str | os.PathLike | None = None) -> Path:
    d = Path(directory) if directory else expected_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / PAPER_FILE
    atomic_write_parquet(validate(paper_rows()), path)
    return path


# which measured metrics become regression rows, and how they are judged
_NO_CI_TOL = {"rho": 0.10, "score": 0.02}


def measured_rows(measurements: pd.DataFrame, date: str | None = None) -> pd.DataFrame:
    """Regression references for an embedded model from one of its runs.

    Metrics with a bootstrap CI become ``range`` rows on the CI; booleans
    ``equal``; p-values keep their side of 0.05; rho and score metrics without a
    CI get a fixed tolerance (``_NO_CI_TOL``)."""
    date = date or _dt.date.today().isoformat()
    rows = []
    for _, m in measurements.iterrows():
        src = f"measured: probekit {__version__}, {date}"
        common = dict(provenance="measured", date=date, note=str(m.detail))
        if m.metric == "shuffled_fwer_positive_rate":
            rows.append(_r(m.model, m.n_layers, m.claim, m.metric, m.unit, "max", high=0.05, judge_on="ci_low",
                           expected=m.value, source=src + " (chance-level requirement, judged on the binomial CI)",
                           **common))
        elif m.metric == "max_abs_null_minus_chance":
            rows.append(_r(m.model, m.n_layers, m.claim, m.metric, m.unit, "max", high=0.02, expected=m.value,
                           source=src + " (chance-level requirement)", **common))
        elif m.unit == "bool":
            rows.append(_r(m.model, m.n_layers, m.claim, m.metric, m.unit, "equal", expected=m.value, tolerance=0,
                           source=src, **common))
        elif m.unit == "p":
            if np.isnan(m.value):
                continue
            sig = m.value < 0.05
            rows.append(_r(m.model, m.n_layers, m.claim, m.metric, m.unit, "less" if sig else "min",
                           high=0.05 if sig else np.nan, low=np.nan if sig else 0.05, expected=m.value,
                           source=src + f" (p = {m.value:.3g}: keeps its side of 0.05)", **common))
        elif not np.isnan(m.ci_low) and not np.isnan(m.ci_high) and m.metric != "mean_rho_attn_back_half" \
                and m.metric != "mean_null_r":
            rows.append(_r(m.model, m.n_layers, m.claim, m.metric, m.unit, "range", low=m.ci_low, high=m.ci_high,
                           expected=m.value, tolerance=(m.ci_high - m.ci_low) / 2,
                           source=src + f", 95% group-bootstrap CI [{m.ci_low:.3g}, {m.ci_high:.3g}]", **common))
        elif m.unit in _NO_CI_TOL:
            tol = _NO_CI_TOL[m.unit]
            rows.append(_r(m.model, m.n_layers, m.claim, m.metric, m.unit, "equal", expected=m.value, tolerance=tol,
                           source=src + f" (no CI: fixed tolerance {tol})", **common))
    return pd.DataFrame(rows, columns=COLUMNS)


def write_measured(measurements: pd.DataFrame, directory: str | os.PathLike | None = None) -> Path:
    """Replace the measured rows of the models in ``measurements`` (other models' rows are kept)."""
    d = Path(directory) if directory else expected_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / MEASURED_FILE
    new = measured_rows(measurements)
    old = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=COLUMNS)
    keep = old[~old.model.isin(set(new.model))]
    out = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    atomic_write_parquet(validate(out.reset_index(drop=True)), path)
    return path
