"""Expected values for the claims: ``expected/*.parquet``, one row per (model, claim, metric).

Columns (validated by :func:`validate`):

=================  ==========================================================
model              alias (``llama-3.2-3b``, ``smollm2-135m``, ...)
n_layers           the model's number of layers (for normalised-depth audits)
claim, metric      ``<study>.<claim>`` and a metric of the claim's ``measure``
unit               layer, depth, balanced_accuracy, rho, p, bool, fraction, ...
direction          ``range``   low <= value <= high
                   ``greater`` value > low          ``less``  value < high
                   ``min``     value >= low         ``max``   value <= high
                   ``equal``   |value - expected| <= tolerance
                   ``within``  the interval [ci_low, ci_high] inside [low, high]
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

from probekit.core.version import __version__
from probekit.core.atomic import atomic_write_parquet

COLUMNS = ["model", "n_layers", "claim", "metric", "unit", "direction", "expected", "tolerance", "low", "high",
           "judge_on", "provenance", "source", "probekit_version", "date", "note"]
DIRECTIONS = ("range", "greater", "less", "min", "max", "equal", "within")
PAPER_FILE = "paper.parquet"
MEASURED_FILE = "measured.parquet"


class ExpectedTableError(ValueError):
    """A row of expected/*.parquet is malformed."""


def expected_dir(default: str | os.PathLike | None = None) -> Path:
    """$PROBEKIT_EXPECTED_DIR if set, else ``default`` (a study's ``<folder>/expected``: ``Study.expected_dir``)."""
    env = os.environ.get("PROBEKIT_EXPECTED_DIR")
    if env:
        return Path(env)
    if default is None:
        raise ExpectedTableError("no expected directory: pass one (a study's Study.expected_dir) or set "
                                 "PROBEKIT_EXPECTED_DIR")
    return Path(default)


def check_env_dir() -> None:
    """A set PROBEKIT_EXPECTED_DIR must be a folder: one that is missing (a typo) or a file used to be read as
    "no tables written yet", so the measured regression rows were dropped and every verdict switched to the
    paper rows without a word."""
    env = os.environ.get("PROBEKIT_EXPECTED_DIR")
    if env and not Path(env).expanduser().is_dir():
        state = "is a file, not a folder" if Path(env).expanduser().exists() else "does not exist"
        raise ExpectedTableError(f"PROBEKIT_EXPECTED_DIR={env} {state}; point it at the folder holding the expected "
                                 f"tables (*.parquet), or unset it to use the study's own")


def expected_row(model, n_layers, claim, metric, unit, direction, *, low=np.nan, high=np.nan, expected=np.nan,
                 tolerance=np.nan, judge_on="value", source="", note="", provenance="paper", version=None,
                 date=None) -> dict:
    """One row of an expected table (see the module doc for the columns)."""
    return {"model": model, "n_layers": n_layers, "claim": claim, "metric": metric, "unit": unit,
            "direction": direction, "expected": expected, "tolerance": tolerance, "low": low, "high": high,
            "judge_on": judge_on, "provenance": provenance, "source": source,
            "probekit_version": version or __version__, "date": date or _dt.date.today().isoformat(), "note": note}


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
        need = {"range": ("low", "high"), "within": ("low", "high"), "greater": ("low",), "min": ("low",), "less": ("high",),
                "max": ("high",), "equal": ("expected", "tolerance")}.get(r.direction, ())
        for c in need:
            if pd.isna(r[c]):
                problems.append(f"{tag}: direction {r.direction} needs {c}")
        if r.direction in ("range", "within") and not pd.isna(r.low) and not pd.isna(r.high) and r.low > r.high:
            problems.append(f"{tag}: low {r.low} > high {r.high}")
        if r.provenance == "measured" and "CI" not in str(r.source) and r.direction == "range":
            problems.append(f"{tag}: a measured range must name the CI it came from in source")
    dup = df.duplicated(["model", "claim", "metric"], keep=False)
    for i in np.flatnonzero(dup.to_numpy()):
        problems.append(f"row {i}: duplicate (model, claim, metric) = {tuple(df.iloc[i][['model', 'claim', 'metric']])}")
    if problems:
        raise ExpectedTableError(f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return df


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:          # pyarrow's ArrowInvalid (a truncated file) is a ValueError
        raise ExpectedTableError(f"{path}: not a readable parquet table ({type(exc).__name__}: {str(exc)[:160]}); "
                                 f"restore it (git checkout {path.name}) or move it out of {path.parent} "
                                 f"(every *.parquet there is read)") from None


def check_claim_ids(table: pd.DataFrame, study, where: str = "expected table") -> None:
    """Refuse rows naming a claim of ``study`` (``<study id>.<name>``) that the study does not have: a typo
    would otherwise drop the rows silently and switch the claim's verdict to another basis."""
    if not len(table):
        return
    prefix = f"{study.id}."
    known = {c.id for c in study.claims}
    bad = sorted({c for c in table.claim.astype(str) if c.startswith(prefix) and c not in known})
    if bad:
        raise ExpectedTableError(f"{where}: unknown claim id(s) {', '.join(bad)} of study {study.id}; known: "
                                 f"{', '.join(sorted(known))}; fix the claim column")


def load(directory: str | os.PathLike | None = None) -> pd.DataFrame:
    """Every ``expected/*.parquet``, validated, as one table."""
    d = Path(directory) if directory else expected_dir()
    parts = [_read(p) for p in sorted(d.glob("*.parquet"))]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return validate(pd.concat(parts, ignore_index=True), str(d))


def write_paper(study, directory: str | os.PathLike | None = None) -> Path:
    """Write a study's paper rows to ``<directory>/paper.parquet`` (the study's own rows replaced, other
    studies' rows kept)."""
    d = Path(directory) if directory else Path(study.expected_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / PAPER_FILE
    new = validate(study.paper_rows())
    old = _read(path) if path.exists() else pd.DataFrame(columns=COLUMNS)
    keep = old[~old.claim.map(study.owns)] if len(old) else old
    out = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    atomic_write_parquet(validate(out.reset_index(drop=True)), path)
    return path


# measured metrics without an interval: the tolerance that counts as a regression, by unit
_NO_CI_TOL = {"rho": 0.10, "score": 0.02, "depth": 0.05, "balanced_accuracy": 0.03}


def measured_rows(measurements: pd.DataFrame, date: str | None = None) -> pd.DataFrame:
    """Regression references for a model from one of its runs. What counts as a regression:

    * a metric with a CI or a confidence set moving outside it (``range`` on the interval);
    * a boolean flipping, a p-value crossing 0.05;
    * a binomial rate whose lower bound exceeds 5% (the shuffled-label rule itself);
    * a metric without an interval moving by more than ``_NO_CI_TOL[unit]``.

    Descriptions (the bootstrap argmax spread) and undefined values (NaN) get no row."""
    date = date or _dt.date.today().isoformat()
    rows = []
    for _, m in measurements.iterrows():
        src = f"measured: probekit {__version__}, {date}"
        common = dict(provenance="measured", date=date, note=str(m.detail))
        kind = getattr(m, "interval", "") or ""
        if pd.isna(m.value) or kind == "spread":
            continue
        if kind == "binomial":
            rows.append(expected_row(m.model, m.n_layers, m.claim, m.metric, m.unit, "max", high=0.05,
                                     judge_on="ci_low", expected=m.value,
                                     source=src + " (chance-level requirement, judged on the binomial bound)", **common))
        elif m.unit == "bool":
            rows.append(expected_row(m.model, m.n_layers, m.claim, m.metric, m.unit, "equal", expected=m.value,
                                     tolerance=0, source=src, **common))
        elif m.unit == "p":
            sig = m.value < 0.05
            rows.append(expected_row(m.model, m.n_layers, m.claim, m.metric, m.unit, "less" if sig else "min",
                                     high=0.05 if sig else np.nan, low=np.nan if sig else 0.05, expected=m.value,
                                     source=src + f" (p = {m.value:.3g}: keeps its side of 0.05)", **common))
        elif kind in ("ci", "set") and not np.isnan(m.ci_low) and not np.isnan(m.ci_high):
            rows.append(expected_row(m.model, m.n_layers, m.claim, m.metric, m.unit, "range", low=m.ci_low,
                                     high=m.ci_high, expected=m.value, tolerance=(m.ci_high - m.ci_low) / 2,
                                     source=src + f", 95% {'CI' if kind == 'ci' else 'confidence set (CI)'} "
                                                  f"[{m.ci_low:.3g}, {m.ci_high:.3g}]", **common))
        elif m.unit in _NO_CI_TOL:
            tol = _NO_CI_TOL[m.unit]
            rows.append(expected_row(m.model, m.n_layers, m.claim, m.metric, m.unit, "equal", expected=m.value,
                                     tolerance=tol, source=src + f" (no CI: fixed tolerance {tol})", **common))
    return pd.DataFrame(rows, columns=COLUMNS)


def write_measured(measurements: pd.DataFrame, directory: str | os.PathLike | None = None) -> Path:
    """Replace the measured rows of the (model, claim) pairs in ``measurements`` (other rows are kept)."""
    d = Path(directory) if directory else expected_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / MEASURED_FILE
    new = measured_rows(measurements)
    old = _read(path) if path.exists() else pd.DataFrame(columns=COLUMNS)
    done = set(zip(measurements.model, measurements.claim))
    keep = old[[(m, c) not in done for m, c in zip(old.model, old.claim)]] if len(old) else old
    out = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    atomic_write_parquet(validate(out.reset_index(drop=True)), path)
    return path
