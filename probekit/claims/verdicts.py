"""Judging a run: every claim of its study measured on it, the verdicts on both bases, and the
untrained-twin rule. The report (:mod:`probekit.report`) only renders what is decided here.

* :func:`measure_run` -- every claim of the run's study measured on a Replication;
* :func:`all_verdicts` -- :func:`~probekit.claims.claim.judge` with basis auto (own rows where the model
  has any) plus the paper-normalised audit;
* :func:`twin_verdicts` -- the untrained-model control (Belinkov 2022): a positive claim counts as
  reproduced for a model only if it passes on the model AND fails on its random-init twin
  (``NAME+random:SEED``, :func:`probekit.models.registry.parse_random`); a control claim (an effect
  that must be absent, e.g. shuffled labels at chance) must pass on both.
"""
from __future__ import annotations

import pandas as pd

from probekit.claims.claim import ANSWERS, ReplicationEvidence, judge, measure
from probekit.models.registry import parse_random
from probekit.studies import load_study, study_of_claim

TWIN_COLUMNS = ["model", "twin", "claim", "positive", "judged_on", "model_passed", "twin_passed", "reproduced"]


def measure_run(rep, used: dict | None = None) -> pd.DataFrame:
    """Every claim of the run's study measured on the run; ``used`` (a dict) receives the profiles the
    claims read, ``{(experiment, component): (values, boot)}``."""
    study = load_study(getattr(rep, "study", None))
    ev = ReplicationEvidence(rep, study)
    out = measure(study.claims, ev)
    if used is not None:
        used.update(ev._cache)
    return out


def all_verdicts(measurements: pd.DataFrame, study) -> pd.DataFrame:
    """``judge`` with basis auto (own rows if the model has any) plus the paper-normalised audit."""
    expected = study.expected()
    auto = judge(measurements, expected, study.claims, "auto")
    parts = [auto]
    if auto.empty or (auto.basis != "paper-normalised").any():
        parts.append(judge(measurements, expected, study.claims, "paper-normalised"))
    return pd.concat([p for p in parts if len(p)], ignore_index=True)


def _is_positive(claim_id: str) -> bool:
    """A claim that asserts an effect (True) or a control that asserts its absence (False); a claim of a
    study not loadable here counts as positive."""
    try:
        return bool(study_of_claim(claim_id).claim(claim_id).effect_verdict)
    except Exception:            # a claim of a study that is not loadable here: judged as a positive claim
        return True


def twin_verdicts(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, twin, claim) judged on the paper-normalised basis for both (:data:`TWIN_COLUMNS`).

    ``judged_on``: ``"answer"`` when the verdicts carry answers (then "passes" means the answer
    *reproduced*, for a control too: the data must exclude leakage), else ``"rule"`` (every metric passes).
    ``reproduced``: model passes and twin fails for a positive claim; both pass for a control."""
    v = verdicts[verdicts.basis == "paper-normalised"] if len(verdicts) else verdicts
    if v.empty:
        return pd.DataFrame(columns=TWIN_COLUMNS)
    has_answers = "answer" in v and v.answer.isin(ANSWERS).any()
    passed = {(m, c): (str(g.answer.iloc[0]) == "reproduced") if has_answers else bool(g.passed.all())
              for (m, c), g in v.groupby(["model", "claim"])}
    models = sorted(set(v.model))
    parsed = {m: parse_random(m) for m in models}
    twins = {m: [t for t in models if parsed[t][1] is not None and parsed[t][0] == m]
             for m in models if parsed[m][1] is None}
    rows = []
    for m, ts in twins.items():
        for c in dict.fromkeys(v[v.model == m].claim):
            positive = _is_positive(c)
            for t in ts:
                if (t, c) not in passed:
                    continue
                pm, pt = passed[(m, c)], passed[(t, c)]
                rows.append((m, t, c, positive, "answer" if has_answers else "rule", pm, pt,
                             (pm and not pt) if positive else (pm and pt)))
    return pd.DataFrame(rows, columns=TWIN_COLUMNS)
