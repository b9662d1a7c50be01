"""Calibration: every claim's decision rule run on its simulated nulls and planted effects.

For each claim x scenario x depth, ``n_draws`` synthetic evidences go through the
claim's own ``measure`` and the study's ``judge`` — the exact path of a real run —
and the *rejection rate* is counted: how often the verdict says "the effect is
there" (a pass for a positive claim, a failure for a control claim). Under a null
that is the false-positive rate (must be <= 5%); under a planted effect, power.
Rates come with exact 95% Clopper-Pearson intervals.

A claim's rule is its ``reference_model``'s rows; a claim may also state a
contrast for another model (``Claim.contrasts``, e.g. "absent in the 3B"), whose
rows are calibrated on their own scenarios. Such a rule's ``alternative``
scenarios are worlds where the absence is false: the rate there is how often the
absence verdict misses the effect (a non-rejection's weakness, reported, not bounded).

``python -m probekit calibrate --out DIR`` writes ``DIR/calibration.parquet`` and
``DIR/calibration.md``.
"""
from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.atomic import atomic_write_parquet, atomic_write_text
from probekit.core.inflation import Inflation
from probekit.claims.claim import by_metric, bounds_text, judge_rows, normalised_paper_rows
from probekit.probes.stats import LEVEL, binomial_interval
from probekit.models.registry import parse_random
from probekit.profiles.metrics import boot_sd, depth_centroid, maxt_quantile
from probekit.studies import BUILTIN, load_study

COLUMNS = ["study", "claim", "rule_model", "rule", "n_layers", "scenario", "kind", "description", "n_draws", "n_effect", "rate",
           "ci_low", "ci_high", "n_reproduced", "n_contradicted", "n_inconclusive", "seconds"]
DEPTHS = (18, 28, 30, 80)
ALPHA = 0.05


def rule_text(expected_rows: pd.DataFrame) -> str:
    """The claim's rule as one line: every paper row it must pass."""
    parts = []
    for r in expected_rows.itertuples():
        on = "interval" if r.direction == "within" else r.judge_on
        parts.append(f"{r.metric} [{on}] {bounds_text(r.direction, r.low, r.high, r.expected, r.tolerance)}")
    return " AND ".join(parts)


def verdict(claim, ev, rules: list[dict]) -> bool:
    """The claim's verdict on one piece of evidence (True = passes): its ``measure`` judged on ``rules``
    (its paper rows normalised to the evidence's depth) by the judging core of real runs."""
    return verdict_and_answer(claim, ev, rules)[0]


def verdict_and_answer(claim, ev, rules: list[dict], absence: bool = False) -> tuple[bool, str]:
    """The verdict and the claim's three-way answer (:meth:`probekit.claim.Claim.answer`) on one evidence."""
    m = claim.measure(ev) if claim.applies(ev) else []
    passed = bool(m) and all(v["passed"] for v in judge_rows(m, rules, "paper-normalised"))
    return passed, claim.answer(passed, by_metric(m), absence=absence).get("answer", "")


def calibrate_claim(study, claim, n_layers: int, scenario, n_draws: int, seed: int = 0,
                    rule_model: str | None = None) -> dict:
    """One cell: ``n_draws`` simulations of ``scenario`` judged on the claim's rows of ``rule_model``
    (default: its ``reference_model``), normalised to ``n_layers``."""
    expected = study.expected()
    mine = expected[expected.claim == claim.id]
    rule_model = rule_model or claim.reference_model
    # a stable seed per cell (Python's str hash changes between processes): the table is reproducible
    tag = f"{claim.id}/{scenario.name}" if rule_model == claim.reference_model else \
        f"{claim.id}@{rule_model}/{scenario.name}"
    rng = np.random.default_rng([seed, n_layers, zlib.crc32(tag.encode())])
    norm = normalised_paper_rows(mine, study.claims, n_layers, "simulated", source=rule_model)
    if norm.empty:
        raise LookupError(f"{claim.id}: no paper rows for {rule_model}")
    rules = norm.to_dict("records")
    t = time.perf_counter()
    k = 0
    answers = {"reproduced": 0, "contradicted": 0, "inconclusive": 0}
    absence = rule_model in claim.contrasts
    for _ in range(n_draws):
        ev = claim.simulate(scenario, n_layers, rng)
        passed, ans = verdict_and_answer(claim, ev, rules, absence)
        k += passed == claim.effect_verdict
        if ans in answers:
            answers[ans] += 1
    lo, hi = binomial_interval(k, n_draws)
    return {"study": study.id, "claim": claim.id, "rule_model": rule_model, "rule": rule_text(norm), "n_layers": n_layers,
            "scenario": scenario.name, "kind": scenario.kind, "description": scenario.description,
            "n_draws": n_draws, "n_effect": k, "rate": k / n_draws, "ci_low": lo, "ci_high": hi,
            **{f"n_{a}": n for a, n in answers.items()}, "seconds": round(time.perf_counter() - t, 2)}


def rule_sets(claim) -> list[tuple[str, tuple]]:
    """``(model, scenarios)`` for each rule of a claim: its reference model's, then its contrasts'."""
    return [(claim.reference_model, claim.scenarios)] + list(claim.contrasts.items())


def _cell(args):
    study_key, claim_id, rule_model, L, sc_name, n_draws, seed = args
    study = load_study(study_key)
    claim = study.claim(claim_id)
    sc = next(s for s in dict(rule_sets(claim))[rule_model] if s.name == sc_name)
    try:
        return calibrate_claim(study, claim, L, sc, n_draws, seed, rule_model)
    except LookupError as exc:                      # e.g. no untrained-model profiles recorded
        return f"{claim.id} {sc.name} L={L}: skipped ({exc})"


def calibrate(study, n_draws: int = 500, depths=DEPTHS, claims=None, kinds=("null", "planted", "alternative"),
              seed: int = 0,
              workers: int = 1, log=None) -> pd.DataFrame:
    """The calibration table of a study (``claims``: ids or short names to restrict to; ``workers``:
    processes, each cell is independent and seeded by (seed, depth, claim, scenario))."""
    chosen = [c for c in study.claims if not claims or c.id in claims or c.id.split(".", 1)[-1] in claims]
    key = str(study.folder) if study.folder and study.id not in BUILTIN else study.id
    jobs = [(key, c.id, model, L, sc.name, n_draws, seed) for c in chosen for model, scenarios in rule_sets(c)
            for sc in scenarios if sc.kind in kinds for L in depths]
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.imap(_cell, jobs)
            results = [_log(r, log) for r in results]
    else:
        results = [_log(_cell(j), log) for j in jobs]
    return pd.DataFrame([r for r in results if isinstance(r, dict)], columns=COLUMNS)


def _log(r, log):
    if log:
        log(f"  {r}" if isinstance(r, str) else
            f"  {r['claim']:<34} {r['rule_model']:<14} {r['scenario']:<26} L={r['n_layers']:<3} rate {r['rate']:.3f} "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] ({r['seconds']} s)")
    return r


def exceeds(table: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Null rows whose rejection rate is significantly above ``alpha`` (the CI's lower bound above it)."""
    t = table[table.kind == "null"]
    return t[t.ci_low > alpha]


def markdown(table: pd.DataFrame, title: str = "Calibration of the decision rules") -> str:
    lines = [f"# {title}", "",
             "Rate = how often a claim's rule declares its effect (a pass for a positive claim, a failure for a "
             "control claim) on simulated evidence, through the claim's own `measure` and the study's `judge`. "
             f"Nulls must stay at or below {ALPHA:.0%} (95% Clopper-Pearson interval in brackets); planted rows "
             "are power; alternative rows (rules that state an absence) are how often the absence is wrongly "
             "confirmed when the effect is there.", ""]
    bad = exceeds(table)
    lines += [f"**{'No' if bad.empty else len(bad)} null row(s) significantly above {ALPHA:.0%}.**", ""]
    depths = sorted(table.n_layers.unique())
    for (claim, model, kind), g in table.groupby(["claim", "rule_model", "kind"], sort=False):
        if kind == "null":
            lines += [f"## `{claim}`: the rows of {model}", "", f"Rule: {g.rule.iloc[-1]}", ""]
        lines += [f"| {kind} scenario | " + " | ".join(f"L = {L}" for L in depths) + " |",
                  "|---|" + "---|" * len(depths)]
        for sc, s in g.groupby("scenario", sort=False):
            cells = []
            for L in depths:
                x = s[s.n_layers == L]
                cells.append("—" if x.empty else f"{x.rate.iloc[0]:.3f} [{x.ci_low.iloc[0]:.3f}, {x.ci_high.iloc[0]:.3f}]")
            lines.append(f"| {sc}: {s.description.iloc[0]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += answers_markdown(table)
    draws = sorted({int(x) for x in table.n_draws}) if len(table) else [0]
    per = f"{draws[0]} draws per cell" if len(draws) == 1 else "draws per cell: " + ", ".join(
        f"{d} ({', '.join(c.split('.', 1)[-1] for c in dict.fromkeys(table[table.n_draws == d].claim))})"
        for d in draws)
    lines += [f"{per}; {table.seconds.sum():.0f} s in all.", ""]
    return "\n".join(lines)


def answers_markdown(table: pd.DataFrame) -> list[str]:
    """The three answers per cell (fractions reproduced / contradicted / inconclusive): under a null the
    reproduced share is the false-positive rate; where the paper's effect is planted at its size, the
    contradicted share is how often the data wrongly exclude it."""
    if "n_contradicted" not in table or table.n_contradicted.isna().all():
        return []
    depths = sorted(table.n_layers.unique())
    lines = ["## The three answers per cell", "",
             "reproduced / contradicted / inconclusive, as fractions of the draws (`probekit.claim.answer_claim`).",
             "", "| claim (rows of) | scenario | " + " | ".join(f"L = {L}" for L in depths) + " |",
             "|---|---|" + "---|" * len(depths)]
    for (claim, model, sc), g in table.groupby(["claim", "rule_model", "scenario"], sort=False):
        cells = []
        for L in depths:
            x = g[g.n_layers == L]
            if x.empty:
                cells.append("—")
                continue
            r = x.iloc[0]
            cells.append(f"{r.n_reproduced / r.n_draws:.2f} / {r.n_contradicted / r.n_draws:.2f} / "
                         f"{r.n_inconclusive / r.n_draws:.2f}")
        lines.append(f"| `{claim}` ({model}) | {sc} ({g.kind.iloc[0]}) | " + " | ".join(cells) + " |")
    return lines + [""]


def summary_markdown(table: pd.DataFrame) -> str:
    """One row per claim: the worst null rate (and its scenario) and the best planted rate at each depth."""
    depths = sorted(table.n_layers.unique())
    lines = ["| claim (rows of) | " + " | ".join(f"worst null, L = {L}" for L in depths) + " | " +
             " | ".join(f"power, L = {L}" for L in depths) + " |",
             "|---|" + "---|" * (2 * len(depths))]
    for (claim, model), g in table.groupby(["claim", "rule_model"], sort=False):
        cells = []
        for L in depths:
            n = g[(g.kind == "null") & (g.n_layers == L)]
            if n.empty:
                cells.append("—")
                continue
            w = n.loc[n.rate.idxmax()]
            cells.append(f"{w.rate:.3f} [{w.ci_low:.3f}, {w.ci_high:.3f}] ({w.scenario})")
        for L in depths:
            p = g[(g.kind == "planted") & (g.n_layers == L)]
            cells.append("—" if p.empty else f"{p.rate.max():.2f} ({p.loc[p.rate.idxmax()].scenario})")
        lines.append(f"| `{claim}` ({model}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(table: pd.DataFrame, out_dir) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"parquet": atomic_write_parquet(table, out / "calibration.parquet"),
            "markdown": atomic_write_text(out / "calibration.md", markdown(table))}


# ----------------------------------------------------------------------------- interval inflation on refits

INFLATION_COLUMNS = ["model", "statistic", "kind", "layers", "n_refit", "n_reweight", "sd_ratio",
                     "coverage_at_study", "kappa_for_95", "study_inflation"]


def _devs(x: np.ndarray) -> np.ndarray:
    x = x[np.isfinite(x)]
    return x - np.median(x)


def _coverage(refit_dev: np.ndarray, rw_dev: np.ndarray, kappa: float, level: float) -> float:
    """Share of refit deviations inside ``kappa`` x the reweighting deviations' central ``level`` range
    (how the claims build a CI: estimate + kappa x deviation quantiles)."""
    a = (1 - level) / 2
    lo, hi = np.quantile(rw_dev, [a, 1 - a])
    return float(np.mean((refit_dev >= kappa * lo) & (refit_dev <= kappa * hi)))


def _band_coverage(refit: np.ndarray, rw: np.ndarray, kappa: float, level: float) -> float:
    sd = boot_sd(rw)
    c = maxt_quantile(rw - np.nanmean(rw, axis=0), sd, level, two_sided=True)
    dev = refit - np.nanmedian(refit, axis=0)
    return float(np.mean(np.all(np.abs(dev) <= kappa * c * sd, axis=1)))


def _kappa_for(cover, target: float) -> float:
    for k in np.arange(1.0, 6.01, 0.01):
        if cover(k) >= target:
            return float(round(k, 2))
    return float("nan")


def inflation_table(npz_path, inflation, component: str = "resid_pre", level: float = LEVEL,
                    pairs=(("relations", "items"), ("analogies", "relations"))) -> pd.DataFrame:
    """Per model and statistic the claims use (centroids, centroid differences, the simultaneous band), from
    the measured refit and reweighting replicates (``probekit/studies/bogdan2025/noise_measured.npz``): the
    refit/reweight sd ratio, the coverage of the refit replicates by the study's interval (the study's
    :class:`~probekit.claims.Inflation` for that kind x the reweighting deviations; level shifts of the refits
    removed: deviations from each one's median) and the inflation a 95% coverage needs. ``inflation``: an
    ``Inflation`` (or one number for every kind). A centroid needs the whole profile, so its rows need refits
    at every layer; a model whose refits cover a subset of the layers gives band rows over that subset
    (column ``layers``: ``refit layers/all``), an out-of-sample check of the band factor."""
    if not isinstance(inflation, Inflation):
        inflation = Inflation(depth=float(inflation), band=float(inflation))
    z = np.load(npz_path)
    keys = {tuple(k.split("/")) for k in z.files}
    models = sorted({k[0] for k in keys if parse_random(k[0])[1] is None})
    rows = []

    def row(m, name, kind, layers, n_r, n_w, ratio, cover):
        k = inflation.of(kind)
        rows.append({"model": m, "statistic": name, "kind": kind, "layers": layers, "n_refit": n_r,
                     "n_reweight": n_w, "sd_ratio": ratio, "coverage_at_study": cover(k),
                     "kappa_for_95": _kappa_for(cover, 0.95), "study_inflation": k})

    for m in models:
        exps = sorted({k[1] for k in keys if k[0] == m and k[2] == component})
        data, partial = {}, {}
        for e in exps:
            ref, rw = z.get(f"{m}/{e}/{component}/refit"), z.get(f"{m}/{e}/{component}/reweight")
            if ref is None or rw is None:
                continue
            cols = ~np.isnan(ref).any(axis=0)
            if cols.all():
                data[e] = (ref, rw)
            elif cols.sum() >= 3:
                partial[e] = (ref[:, cols], rw[:, cols], f"{int(cols.sum())}/{len(cols)}")
        stats_ = {}
        for e, (ref, rw) in data.items():
            stats_[f"{e}.depth"] = (depth_centroid(ref), depth_centroid(rw))
        for a, b in pairs:
            if a in data and b in data:
                (ra, wa), (rb, wb) = data[a], data[b]
                n_r, n_w = min(len(ra), len(rb)), min(len(wa), len(wb))
                stats_[f"{a}_minus_{b}.depth"] = (depth_centroid(ra[:n_r]) - depth_centroid(rb[:n_r]),
                                                  depth_centroid(wa[:n_w]) - depth_centroid(wb[:n_w]))
        for name, (sr, sw) in stats_.items():
            dr, dw = _devs(sr), _devs(sw)
            if len(dr) < 20 or len(dw) < 20:
                continue
            row(m, name, "ci", "all", len(dr), len(dw), float(np.std(dr, ddof=1) / np.std(dw, ddof=1)),
                lambda k, dr=dr, dw=dw: _coverage(dr, dw, k, level))
        bands = {e: (ref, rw, "all") for e, (ref, rw) in data.items()} | partial
        for e, (ref, rw, layers) in sorted(bands.items()):
            if len(ref) < 20:
                continue
            row(m, f"{e}.band", "simultaneous band", layers, len(ref), len(rw),
                float(np.nanmedian(np.nanstd(ref, 0, ddof=1) / np.nanstd(rw, 0, ddof=1))),
                lambda k, ref=ref, rw=rw: _band_coverage(ref, rw, k, level))
    return pd.DataFrame(rows, columns=INFLATION_COLUMNS)


def inflation_markdown(table: pd.DataFrame, source: str) -> str:
    """The coverage table as markdown (see :func:`inflation_table`)."""
    lines = ["# Do the study's intervals cover the refit variance?", "",
             f"From `{source}`: per statistic the claims use, the sd ratio of the refit replicates (probes refit "
             "on group-resampled data) to the reweighting bootstrap's, the share of refit replicates the study's "
             "interval covers (inflation x the reweighting deviations, each set of replicates centred on its "
             "median, so the refits' level shift from fewer distinct groups is removed), and the inflation a 95% "
             "coverage needs. Centroids are measured where the refits cover every layer (a centroid needs the whole "
             "profile); a model with refits at a subset of the layers gives band rows over that subset (`layers`).",
             "", "| model | statistic | interval | layers | refits / reweights | sd ratio | coverage at the study's "
             "inflation | inflation for 95% |", "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.model} | `{r.statistic}` | {r.kind} | {r.layers} | {r.n_refit} / {r.n_reweight} | "
                     f"{r.sd_ratio:.2f} | "
                     f"{r.coverage_at_study:.2f} (x{r.study_inflation:g}) | {r.kappa_for_95:.2f} |")
    return "\n".join(lines + [""])
