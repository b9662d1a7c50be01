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
from statistics import NormalDist

import numpy as np
import pandas as pd

from probekit.core.inflation import Inflation  # noqa: F401  (re-exported: a claim's intervals use it)
from probekit.stimuli.experiments import experiment_profile
from probekit.profiles.metrics import layer_range_depths
from probekit.probes.stats import LEVEL

MEASUREMENT_COLUMNS = ["model", "n_layers", "claim", "metric", "unit", "value", "ci_low", "ci_high",
                       "interval", "detail"]
ANSWER_COLUMNS = ["answer", "answer_reason", "effect_metric", "effect", "effect_se", "paper_effect",
                  "paper_size_assumed", "power_at_paper", "mde80", "p_effect", "p_holm"]
HOLM_ALPHA = 0.05
VERDICT_COLUMNS = ["model", "claim", "metric", "unit", "value", "ci_low", "ci_high", "interval", "judged",
                   "direction", "low", "high", "expected", "tolerance", "provenance", "basis", "passed", "reason",
                   "source"] + ANSWER_COLUMNS
ANSWERS = ("reproduced", "contradicted", "inconclusive")
REGRESSION = "regression"          # the answer column of rows judged against a model's own measured reference
_N = NormalDist()
Z = _N.inv_cdf((1 + LEVEL) / 2)    # the intervals' two-sided normal quantile (stats.LEVEL: 1.96)
Z80 = _N.inv_cdf(0.8)              # power 0.8
# ----------------------------------------------------------------------------- evidence

class ReplicationEvidence:
    """A real run's evidence: profiles of the study's experiments from a :class:`~probekit.pipeline.Replication`."""

    def __init__(self, rep, study):
        self.rep, self.study = rep, study
        self.model, self.n_layers = rep.model, rep.n_layers
        self.causal = getattr(rep, "causal", None)         # a causal run's data (probekit.causal), if any
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
    causal: dict | None = None                          # simulated causal-run data, for causal claims

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


@dataclass(frozen=True)
class Effect:
    """A claim's effect as one estimand, on which its three answers and its power are read.

    ``metrics``: the measurement rows carrying the estimate and its interval (several = the claim needs the
    effect in each, an intersection); ``null``: the estimand at no effect (the rule's threshold); ``paper``:
    the estimand at the paper's size; ``sense``: ``greater`` (the effect lifts the estimand above ``null``)
    or ``less``. ``size_source`` says where ``paper`` comes from, ``assumed`` whether it is a magnitude the
    paper does not give (the paper states layer ranges, not heights, dips or correlation sizes).
    ``se_suffix``: when set, the estimate's standard error is the measured row ``<metric><se_suffix>`` and
    the row's near bound is the rule's own critical bound; otherwise the interval is a normal-scale
    ``LEVEL`` interval and se = (estimate - near bound) / Z."""
    metrics: tuple[str, ...]
    null: float
    paper: float
    sense: str = "greater"
    size_source: str = ""
    assumed: bool = True
    se_suffix: str | None = None
    p_metric: str | None = None      # a measured p-value row that tests the effect (else one from the reading)

    def __post_init__(self):
        if self.sense not in ("greater", "less"):
            raise ValueError(f"Effect.sense must be 'greater' or 'less', got {self.sense!r}")

    @property
    def paper_effect(self) -> float:
        """The paper's size as an effect (distance from ``null`` in the claim's direction)."""
        return (self.paper - self.null) * (1 if self.sense == "greater" else -1)


@dataclass(frozen=True)
class EffectReading:
    """One effect metric read from a run's measurement rows, in effect units (distance from the null in the
    claim's direction): estimate ``e``, the rule's margin ``h`` (the rule detects when ``e - h > 0``), the
    far margin ``f`` (the data exclude the paper's size when ``e + f < paper_effect``) and ``se``."""
    metric: str
    e: float
    h: float
    f: float
    se: float

    @property
    def detected(self) -> bool:
        return self.e - self.h > 0

    def excludes(self, size: float) -> bool:
        return self.e + self.f < size

    def power(self, size: float) -> float:
        """P(the rule detects | true effect ``size``), normal approximation with this run's se."""
        return _N.cdf((size - self.h) / self.se) if self.se > 0 else float(size > self.h)

    def p_value(self) -> float:
        """One-sided p of "no effect", scaled so that the rule's bound touching the null (``e = h``) is
        p = (1 - LEVEL) / 2, the level of a LEVEL interval's one side: ``1 - Phi(Z e / h)``
        (= ``1 - Phi(e / se)`` for a normal-scale interval)."""
        return 1 - _N.cdf(Z * self.e / self.h) if self.h > 0 else float(self.e <= 0)

    def mde(self) -> float:
        """The smallest true effect detected with probability 0.8."""
        return self.h + Z80 * self.se

    def exclusion_power(self, size: float) -> float:
        """P(the data exclude ``size`` | no effect): the power of an absence claim."""
        return _N.cdf((size - self.f) / self.se) if self.se > 0 else float(size > self.f)

    def exclusion_mde(self) -> float:
        """The smallest size excluded with probability 0.8 when there is no effect."""
        return self.f + Z80 * self.se


def read_effect(eff: Effect, rows: dict[str, dict], metric: str) -> EffectReading | str:
    """The reading of ``metric`` (``rows``: measurements by metric), or why it cannot be read."""
    m = rows.get(metric)
    if m is None:
        return f"{metric} not measured"
    sgn = 1.0 if eff.sense == "greater" else -1.0
    v, lo, hi = float(m["value"]), float(m["ci_low"]), float(m["ci_high"])
    near, far = (lo, hi) if sgn > 0 else (hi, lo)
    if np.isnan(v) or np.isnan(near):
        return f"{metric} has no estimate or interval ({m.get('detail') or 'NaN'})"
    e = sgn * (v - eff.null)
    h = sgn * (v - near)
    if eff.se_suffix:
        s = rows.get(metric + eff.se_suffix)
        se = float(s["value"]) if s is not None else np.nan
        f = Z * se
    else:
        se = h / Z
        f = sgn * (far - v)
    if not np.isfinite(se) or np.isnan(f):
        return f"{metric}: no standard error"
    return EffectReading(metric, e, h, f, se)


def answer_claim(eff: Effect, rule_passed: bool, rows: dict[str, dict], absence: bool = False) -> dict:
    """The three answers for one claim x model from its rule's verdict and its effect metrics.

    A presence claim (the paper says the effect is there) is *reproduced* when its registered rule passes,
    *contradicted* when the data exclude the paper's size (the far bound of some effect metric lies short of
    it) and *inconclusive* otherwise. An absence claim (the paper says the effect is not there, e.g. the
    70B's double peak in the 3B) is *contradicted* when some effect metric detects the effect, *reproduced*
    when the rule passes and every metric excludes the paper's size (the burden is on the data: "not found"
    is not enough), and *inconclusive* otherwise. Power at the paper's size and the MDE at 80% power come
    from the run's own standard errors (normal approximation): of the presence rule's key metrics (the
    product over metrics, as if independent, for the power; the largest MDE), or of the exclusion for an
    absence claim (power = P(reproduced | no effect))."""
    size = eff.paper_effect
    reads = [read_effect(eff, rows, m) for m in eff.metrics]
    bad = [r for r in reads if isinstance(r, str)]
    good = [r for r in reads if not isinstance(r, str)]
    out = {"effect_metric": ", ".join(eff.metrics), "paper_effect": size, "paper_size_assumed": bool(eff.assumed),
           "effect": min((r.e for r in good), default=np.nan),
           "effect_se": max((r.se for r in good), default=np.nan), "power_at_paper": np.nan, "mde80": np.nan,
           "p_effect": np.nan}
    if not absence:            # an intersection of metrics: the largest p (each must reject)
        pm = rows.get(eff.p_metric) if eff.p_metric else None
        if pm is not None and np.isfinite(float(pm["value"])):
            out["p_effect"] = float(pm["value"])
        elif good and not bad and not eff.p_metric:
            out["p_effect"] = max(r.p_value() for r in good)
    if good and not bad:
        if absence:
            out["power_at_paper"] = float(np.prod([r.exclusion_power(size) for r in good]))
            out["mde80"] = max(r.exclusion_mde() for r in good)
        else:
            out["power_at_paper"] = float(np.prod([r.power(size) for r in good]))
            out["mde80"] = max(r.mde() for r in good)
    size_txt = f"the paper's size {size:.3g} ({'assumed' if eff.assumed else 'from its layer ranges'})"
    excluded = [r for r in good if r.excludes(size)]
    if absence:
        detected = [r for r in good if r.detected]
        if detected:
            ans = ("contradicted", f"the effect is detected: {detected[0].metric} {detected[0].e:.3g} - margin "
                                   f"{detected[0].h:.3g} > 0")
        elif rule_passed and not bad and len(excluded) == len(good):
            ans = ("reproduced", f"the rule passes and every effect metric excludes {size_txt}")
        else:
            why = "; ".join(bad) if bad else (
                "the rule fails" if not rule_passed else
                f"{', '.join(r.metric for r in good if not r.excludes(size))} cannot exclude {size_txt}")
            ans = ("inconclusive", why)
    else:
        if rule_passed:
            note = f" (though {excluded[0].metric} excludes {size_txt}: smaller than the paper's)" if excluded else ""
            ans = ("reproduced", "the registered rule passes" + note)
        elif excluded:
            r = excluded[0]
            ans = ("contradicted", f"{r.metric}: effect {r.e:.3g}, its far bound {r.e + r.f:.3g} < {size_txt}")
        else:
            ans = ("inconclusive", "; ".join(bad) if bad else
                   f"the rule fails but the data do not exclude {size_txt}")
    out["answer"], out["answer_reason"] = ans
    return out


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
    # the estimand the three answers are read on (None: the claim gets no answer, only its verdict)
    effect: Effect | None = None
    # measured only when its evidence is there (a causal claim without a causal run): its rows are then left
    # out of the judging instead of failing "not measured"
    optional: bool = False
    # a causal claim's plan (probekit.causal.LayerSetPlan): what `probekit run --causal` runs for it
    causal = None

    def answer(self, rule_passed: bool, rows: dict[str, dict], absence: bool = False) -> dict:
        """The claim's answer (:func:`answer_claim`); a claim with a different logic overrides this."""
        if self.effect is None:
            return {"answer": "", "answer_reason": "no effect estimand registered for this claim"}
        return answer_claim(self.effect, rule_passed, rows, absence)

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


def by_metric(meas: list[dict]) -> dict[str, dict]:
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
    m = by_metric(meas)
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
    absent = {c.id for c in claims if getattr(c, "optional", False)} - set(measurements.claim)
    rules = rules[~rules.claim.isin(absent)]
    meas = measurements.to_dict("records")
    out = pd.DataFrame(judge_rows(meas, rules.to_dict("records"), basis), columns=VERDICT_COLUMNS)
    return add_answers(out, measurements, claims)


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control; NaN entries are not in the family)."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def add_answers(verdicts: pd.DataFrame, measurements: pd.DataFrame, claims) -> pd.DataFrame:
    """Fill the answer columns (:data:`ANSWER_COLUMNS`) of each (model, claim, basis) block of ``verdicts``.

    Rows judged against the model's own *measured* reference get ``answer = "regression"`` (their PASS/FAIL
    is a regression check, not a test of the paper). Otherwise the claim's rule model decides the logic: a
    model the claim states an absence for (``Claim.contrasts``, e.g. the 3B's "no double peak") is read as an
    absence claim, every other as the paper's presence claim (:func:`answer_claim`). ``p_holm``: Holm's
    adjustment of ``p_effect`` across the presence claims of one model and basis (reported beside the raw
    answers; a claim reproduced at ``p_holm >= 0.05`` does not survive the family-wise correction)."""
    if verdicts.empty:
        return verdicts
    by_id = {c.id: c for c in claims}
    v = verdicts.copy()
    for col in ANSWER_COLUMNS:
        v[col] = pd.Series([None] * len(v), index=v.index, dtype=object)
    for (model, claim_id, basis), g in v.groupby(["model", "claim", "basis"], sort=False):
        c = by_id.get(claim_id)
        if (g.provenance == "measured").all():
            res = {"answer": REGRESSION, "answer_reason": "judged against the model's own measured reference "
                                                          "(a regression check, not a test of the paper)"}
        elif c is None:
            res = {"answer": "", "answer_reason": "claim not loaded: no answer"}
        else:
            m = measurements[(measurements.claim == claim_id) & (measurements.model == model)]
            rows = by_metric(m.to_dict("records"))
            rule_model = model if basis == "own" else c.reference_model
            res = c.answer(bool(g.passed.all()), rows, absence=rule_model in c.contrasts)
        for col in ANSWER_COLUMNS:
            val = res.get(col, np.nan)
            v.loc[g.index, col] = pd.Series([val] * len(g), index=g.index, dtype=object)
    for (model, basis), g in v.groupby(["model", "basis"], sort=False):
        first = g.drop_duplicates("claim")
        pv = pd.to_numeric(first.p_effect, errors="coerce")
        adj = holm(pv.to_numpy(float))
        for cid, a in zip(first.claim, adj):
            idx = g.index[g.claim == cid]
            v.loc[idx, "p_holm"] = pd.Series([a] * len(idx), index=idx, dtype=object)
    for col in ("effect", "effect_se", "paper_effect", "power_at_paper", "mde80", "p_effect", "p_holm"):
        v[col] = pd.to_numeric(v[col], errors="coerce").astype(float)
    v["answer"] = v["answer"].fillna("").astype(str)
    v["answer_reason"] = v["answer_reason"].fillna("").astype(str)
    v["effect_metric"] = v["effect_metric"].fillna("").astype(str)
    v["paper_size_assumed"] = v["paper_size_assumed"].astype(object)
    return v
