"""The claim as the unit: what it measures, how it is judged, and the nulls it is calibrated on.

A :class:`Claim` (registered by a study, :mod:`probekit.studies`) owns

* ``measure(evidence)`` -> rows (metric, unit, value, interval, detail), built on the
  primitives of :mod:`probekit.profiles`;
* its decision rule: the study's expected rows for the claim (``expected/*.parquet``,
  the design card), all of which must pass — :func:`judge`;
* ``scenarios`` and ``simulate(scenario, n_layers, rng)``: synthetic evidence under
  its nulls and planted effects, on which :mod:`probekit.calibration` runs the very
  same ``measure`` + ``judge`` to measure the rule's error rates.

*Evidence* is anything with ``model``, ``n_layers``, ``profile(exp, component)``
(``(values[L], replicates[B, L])``), ``cells(exp)`` (the probe grid's tidy scores)
and ``primary(exp)``: :class:`ReplicationEvidence` wraps a real run,
:class:`SyntheticEvidence` a simulated one. The core knows no claim by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .experiments import experiment_profile
from .profiles import layer_range_depths

MEASUREMENT_COLUMNS = ["model", "n_layers", "claim", "metric", "unit", "value", "ci_low", "ci_high",
                       "interval", "detail"]
VERDICT_COLUMNS = ["model", "claim", "metric", "unit", "value", "ci_low", "ci_high", "interval", "judged",
                   "direction", "low", "high", "expected", "tolerance", "provenance", "basis", "passed", "reason",
                   "source"]
# ----------------------------------------------------------------------------- evidence

class ReplicationEvidence:
    """A real run's evidence: profiles of the study's experiments from a :class:`~probekit.pipeline.Replication`."""

    def __init__(self, rep, study):
        self.rep, self.study = rep, study
        self.model, self.n_layers = rep.model, rep.n_layers
        self._cache: dict = {}

    def has(self, exp: str) -> bool:
        return exp in self.rep.results

    def profile(self, exp: str, component: str):
        key = (exp, component)
        if key not in self._cache:
            self._cache[key] = experiment_profile(self.rep.results[exp], self.study.experiment(exp), component)
        return self._cache[key]

    def cells(self, exp: str) -> pd.DataFrame:
        return self.rep.results[exp].scores

    def primary(self, exp: str) -> list[str]:
        return list(self.rep.results[exp].meta.get("primary", []))


@dataclass
class SyntheticEvidence:
    """Simulated evidence: ``profiles[(exp, component)] = (values, boot)``, ``tables[exp]`` = scores."""
    n_layers: int
    profiles: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    primaries: dict = field(default_factory=dict)
    model: str = "simulated"

    def has(self, exp: str) -> bool:
        return any(e == exp for e, _ in self.profiles) or exp in self.tables

    def profile(self, exp: str, component: str):
        return self.profiles[(exp, component)]

    def cells(self, exp: str) -> pd.DataFrame:
        return self.tables[exp]

    def primary(self, exp: str) -> list[str]:
        return list(self.primaries.get(exp, []))


# ----------------------------------------------------------------------------- claims

@dataclass(frozen=True)
class Scenario:
    """A simulated world for calibration: ``kind`` ``null`` (the rule must reject its claim's effect at
    most 5% of the time) or ``planted`` (the rate is the rule's power)."""
    name: str
    kind: str
    description: str
    params: dict = field(default_factory=dict, hash=False, compare=False)


class Claim:
    """Base class of a study's claims (subclass and set the attributes; see the module doc).

    ``effect_verdict``: the verdict that means "the effect is there" — ``True`` for a positive claim
    (a null world must not pass), ``False`` for a control claim such as "shuffled labels at chance"
    (a healthy pipeline must pass; the effect to detect is leakage)."""
    id: str = ""
    title: str = ""
    paper: str = ""
    needs: tuple[str, ...] = ()
    key_metric: str = ""
    reference_model: str = ""        # whose paper rows a model without rows of its own is judged against
    effect_verdict: bool = True
    scenarios: tuple[Scenario, ...] = ()
    # a second rule the paper states for another model (e.g. "absent in the 3B"), with its own scenarios:
    # ``{model: scenarios}``; calibration runs each model's rows on its scenarios
    contrasts: dict = {}

    def measure(self, ev) -> list[dict]:
        raise NotImplementedError

    def simulate(self, scenario: Scenario, n_layers: int, rng: np.random.Generator):
        raise NotImplementedError

    def applies(self, ev) -> bool:
        return all(ev.has(e) for e in self.needs)

    def __repr__(self) -> str:
        return f"<Claim {self.id}: {self.title}>"


def row(ev, claim: Claim, metric: str, unit: str, value, lo=np.nan, hi=np.nan, interval: str = "",
        detail: str = "") -> dict:
    """One measurement row (the metric name is plain; the claim id carries the study)."""
    return {"model": ev.model, "n_layers": ev.n_layers, "claim": claim.id, "metric": metric, "unit": unit,
            "value": float(value), "ci_low": float(lo), "ci_high": float(hi),
            "interval": interval if not (np.isnan(float(lo)) and np.isnan(float(hi))) else "", "detail": detail}


def measure(claims, ev) -> pd.DataFrame:
    """Every applicable claim's rows for one piece of evidence (claims whose experiments are missing are
    left out)."""
    rows: list[dict] = []
    for c in claims:
        if c.applies(ev):
            rows += c.measure(ev)
    return pd.DataFrame(rows, columns=MEASUREMENT_COLUMNS)


# ----------------------------------------------------------------------------- judging

def check(x: float, direction: str, low=np.nan, high=np.nan, expected=np.nan, tolerance=np.nan,
          x_high: float = np.nan) -> bool:
    """One expected row's test. ``within`` needs the interval ``[x, x_high]`` inside ``[low, high]``."""
    if np.isnan(x):
        return False
    if direction == "range":
        return low <= x <= high
    if direction == "greater":
        return x > low
    if direction == "less":
        return x < high
    if direction == "min":
        return x >= low
    if direction == "max":
        return x <= high
    if direction == "equal":
        return abs(x - expected) <= tolerance + 1e-12
    if direction == "within":
        return not np.isnan(x_high) and low <= x and x_high <= high
    raise ValueError(f"unknown direction {direction!r}")


def bounds_text(direction: str, low, high, expected, tolerance) -> str:
    return {"range": f"in [{low:.4g}, {high:.4g}]", "greater": f"> {low:.4g}", "less": f"< {high:.4g}",
            "min": f">= {low:.4g}", "max": f"<= {high:.4g}", "equal": f"= {expected:.4g} +- {tolerance:.4g}",
            "within": f"inside [{low:.4g}, {high:.4g}]"}[direction]


def _with_depth_versions(meas: list[dict]) -> dict[str, dict]:
    """Measurements by metric, plus ``<metric>@depth`` (value and interval / n_layers) for every layer-unit
    metric (the first row of a metric wins)."""
    out: dict[str, dict] = {}
    for m in meas:
        out.setdefault(m["metric"], m)
        if m["unit"] == "layer":
            L = m["n_layers"]
            out.setdefault(m["metric"] + "@depth", dict(m, metric=m["metric"] + "@depth", unit="depth",
                                                        value=m["value"] / L, ci_low=m["ci_low"] / L,
                                                        ci_high=m["ci_high"] / L))
    return out


def normalised_paper_rows(expected: pd.DataFrame, claims, n_layers: int, model: str,
                          source: str | None = None) -> pd.DataFrame:
    """The paper's rows re-expressed for a model with ``n_layers`` layers: each claim's rows of its
    ``reference_model`` (or of ``source``, when given); layer rows become ``<metric>@depth`` rows, a layer
    ``l`` of an ``L``-layer model spanning depths ``[l/L, (l+1)/L)`` (half-open: the next layer's start is
    outside)."""
    paper = expected[expected.provenance == "paper"]
    ref = {c.id: c.reference_model for c in claims}
    rows = []
    for claim, grp in paper.groupby("claim", sort=False):
        src = source or ref.get(claim) or grp.model.iloc[0]
        for r in grp[grp.model == src].to_dict("records"):
            if r["unit"] == "layer":
                L = r["n_layers"]
                lo, hi = layer_range_depths(r["low"], r["high"], L)
                r.update(metric=r["metric"] + "@depth", unit="depth", low=lo, high=hi - 1e-9)
                if not pd.isna(r["expected"]):
                    r["expected"] = r["expected"] / L
            r.update(note=f"normalised from {src} ({r['n_layers']} layers) to {n_layers} layers", model=model,
                     n_layers=n_layers)
            rows.append(r)
    return pd.DataFrame(rows, columns=expected.columns)


def judge_rows(meas: list[dict], rules: list[dict], basis: str) -> list[dict]:
    """The judging core on plain rows (``rules``: expected rows already chosen for this model and basis)."""
    m = _with_depth_versions(meas)
    model = meas[0]["model"] if meas else ""
    out = []
    for r in rules:
        value = lo = hi = np.nan
        interval = ""
        mm = m.get(r["metric"])
        if mm is not None:
            value, lo, hi, interval = mm["value"], mm["ci_low"], mm["ci_high"], mm["interval"]
            txt = bounds_text(r["direction"], r["low"], r["high"], r["expected"], r["tolerance"])
            if r["direction"] == "within":
                x = lo
                ok = check(lo, "within", r["low"], r["high"], x_high=hi)
                reason = f"interval [{lo:.4g}, {hi:.4g}] {'is' if ok else 'is not'} {txt}"
            else:
                x = {"value": value, "ci_low": lo, "ci_high": hi}[r["judge_on"]]
                ok = check(x, r["direction"], r["low"], r["high"], r["expected"], r["tolerance"])
                reason = f"{r['judge_on']} {x:.4g} {'is' if ok else 'is not'} {txt}"
            if not ok and np.isnan(x) and mm["detail"]:
                reason = str(mm["detail"])
        else:
            ok, reason = False, "not measured (experiment missing from the run?)"
        out.append({"model": model, "claim": r["claim"], "metric": r["metric"], "unit": r["unit"], "value": value,
                    "ci_low": lo, "ci_high": hi, "interval": interval,
                    "judged": "interval" if r["direction"] == "within" else r["judge_on"],
                    "direction": r["direction"], "low": r["low"], "high": r["high"], "expected": r["expected"],
                    "tolerance": r["tolerance"], "provenance": r["provenance"], "basis": basis, "passed": bool(ok),
                    "reason": reason, "source": r["source"]})
    return out


def judge(measurements: pd.DataFrame, expected: pd.DataFrame, claims=(), basis: str = "auto") -> pd.DataFrame:
    """One verdict per expected row that applies to the measured model.

    ``basis``: ``"own"`` (rows for this model), ``"paper-normalised"`` (the paper's rows in normalised
    depth, each claim's ``reference_model``), or ``"auto"``: own rows if any, else the normalised paper rows.
    A row whose metric was not measured fails ("not measured"); a measured NaN fails with the
    measurement's own explanation (its ``detail``)."""
    if measurements.empty:
        raise ValueError("no measurements to judge")
    model = measurements.model.iloc[0]
    n_layers = int(measurements.n_layers.iloc[0])
    own = expected[expected.model == model]
    if basis == "auto":
        basis = "own" if len(own) else "paper-normalised"
    rules = own if basis == "own" else normalised_paper_rows(expected, claims, n_layers, model)
    meas = measurements.to_dict("records")
    return pd.DataFrame(judge_rows(meas, rules.to_dict("records"), basis), columns=VERDICT_COLUMNS)
