"""Figures, claims tables and per-model reports from a :class:`~probekit.pipeline.Replication`.

* :func:`plot_profiles` -- one PNG per experiment x component, plus a per-model
  overview (every experiment's ``resid_pre`` profile in normalised depth);
* :func:`claims_markdown` / :func:`write_claims_table` -- the claims table
  (one row per model x claim, PASS/FAIL, key metric with its CI, the reason
  on failure), separately for ``own`` judgements and the ``paper-normalised``
  audit; written as ``claims.md`` + ``verdicts.parquet``;
* :func:`write_report` -- everything for one model in one directory.

Every file is written atomically (temporary file in the same directory, then
``os.replace``), so an interrupted run never leaves a half-written result.
Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas):
no display and no pyplot global state.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from probekit import __version__
from probekit.claims import calibration
from probekit.probes import stats
from probekit.claims import claim as claim_module
from probekit.profiles import metrics as P
from probekit.core.atomic import atomic_file as _atomic
from probekit.core.atomic import atomic_write_parquet, atomic_write_text  # noqa: F401  (re-exported for the CLI)
from probekit.claims import verdicts as verdicts_module
from probekit.claims.claim import ANSWER_COLUMNS, ANSWERS, REGRESSION
# judging lives in probekit.claims.verdicts; all_verdicts and measure_run are re-exported here for one release
from probekit.claims.verdicts import all_verdicts, measure_run, twin_verdicts  # noqa: F401
from probekit.stimuli.experiments import Experiment, experiment_profile
from probekit.profiles.metrics import layer_range_depths
from probekit.studies import load_study, study_of_claim
from probekit.causal import drops, rank_test

CHANCE = 0.5
OVERVIEW_COMPONENT = "resid_pre"

BASIS_TITLES = {
    "own": ("Own expected rows",
            "Each model judged against rows of its own: the paper's numbers for Llama-3.2-3B / Llama-3.3-70B "
            "(layer for layer), measured regression rows (`expected/measured.parquet`) for the embedded models."),
    "paper-normalised": ("Paper-normalised audit",
                         "Each model judged against the paper's rows re-expressed in normalised depth "
                         "(layer / n_layers; 3B rows where the paper gives them, else 70B rows). An audit of how "
                         "the paper's claims transfer to this model, not a regression test."),
}


# ----------------------------------------------------------------------------- atomic writes


# characters of a model's name kept in its figure file names (a file name may have 255 bytes; the experiment,
# component and the atomic write's temporary suffix need the rest)
FIGURE_STEM_MAX = 96


def figure_stem(model: str) -> str:
    """The model's part of its figure file names: the name itself for the usual names; a hub id's ``/`` as
    ``_`` (the figures stay in ``figures/``, where the report links them: they went into a sub-folder the
    report did not link); a name too long for a file name cut to :data:`FIGURE_STEM_MAX` bytes plus 8 hex of
    its hash (a 240-character checkpoint name was ``OSError: File name too long`` at the figures, after all
    the work)."""
    stem = model.replace("/", "_").replace(os.sep, "_")
    if len(stem.encode()) <= FIGURE_STEM_MAX:
        return stem
    cut = stem.encode()[:FIGURE_STEM_MAX].decode(errors="ignore")
    return f"{cut}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def _save_fig(fig, path) -> Path:
    return _atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


# ----------------------------------------------------------------------------- profiles

def _study(rep):
    return load_study(getattr(rep, "study", None))


def _experiment(rep, name: str) -> Experiment:
    return _study(rep).experiments.get(name) or Experiment(name, name, "", "")


def _primary(res, exp: Experiment) -> list[str]:
    return [l for l in res.labels if l in set(exp.primary or res.meta.get("primary", []))] \
        or list(res.meta.get("primary", []))


def _range_in_layers(rng: dict, n_layers: int) -> tuple[float, float]:
    """A paper range on this model's layer axis: layers ``l`` of an ``L``-layer model cover depths
    ``[l/L, (l+1)/L)`` (the convention :func:`probekit.claims.claim.normalised_paper_rows` judges with)."""
    lo, hi = layer_range_depths(rng["low"], rng["high"], rng["n_layers"])
    return lo * n_layers, hi * n_layers


def _range_label(rng: dict) -> str:
    size = rng["model"].split("-")[-1].upper()
    return f"paper {size} {rng['what']}: layers {rng['low']:.0f}-{rng['high']:.0f} of {rng['n_layers']}"


def profile_summary(res, exp: Experiment, component: str, profile=None, inflation: float = 1.0) -> dict:
    """Peak layer with its confidence set, peak value, layer-0 baseline, surface baseline and selectivity
    (:func:`probekit.profiles.metrics.peak_summary`, the one peak summary of claims and report).

    ``profile``: ``(values, replicates)`` from :func:`experiment_profile` when the caller has them."""
    v, boot = profile if profile is not None else experiment_profile(res, exp, component)
    ps = P.peak_summary(v, boot, P.LEVEL, inflation)
    s = res.scores
    d = s[s.label.isin(_primary(res, exp)) & (s.component == component) & (s.metric == exp.metric)]
    at_peak = d[d.layer == ps.layer]
    return {"peak_layer": ps.layer, "peak_ci_low": ps.set_low, "peak_ci_high": ps.set_high,
            "peak_depth": ps.layer / res.n_layers, "peak_value": ps.value,
            "peak_value_ci": (ps.value_lo, ps.value_hi), "layer0_value": ps.layer0,
            "peak_gain": ps.gain, "peak_gain_ci": (ps.gain_lo, ps.gain_hi),
            "surface_baseline": float(d.surface_baseline.mean()) if "surface_baseline" in d and len(d) else np.nan,
            "selectivity_at_peak": float(at_peak.selectivity.mean()) if "selectivity" in d and len(at_peak) else np.nan,
            "n_layers": len(v)}


def _fig(width=9.5, height=4.5):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))


def plot_experiment(rep, name: str, component: str):
    """The figure of one experiment x component (see :func:`plot_profiles`)."""
    res = rep.results[name]
    study = _study(rep)
    exp = _experiment(rep, name)
    v, boot = experiment_profile(res, exp, component)
    L = rep.n_layers
    x = np.arange(len(v))
    fig = _fig()
    ax = fig.add_subplot(111)
    colors = ["#d9d9d9", "#f0d9b5", "#cfe3c6", "#e3cfe0"]
    for i, rng in enumerate(study.paper_ranges.get(name, [])):
        a, b = _range_in_layers(rng, L)
        ax.axvspan(a, b, color=colors[i % len(colors)], alpha=0.6, lw=0, label=_range_label(rng))
    for lab in _primary(res, exp):
        p = res.profile(lab, component, exp.metric)
        ax.plot(p.layer, p.value, lw=0.7, alpha=0.45, color="0.35")
    if len(_primary(res, exp)) > 1:
        ax.plot([], [], lw=0.7, alpha=0.45, color="0.35", label="single primary labels")
    if len(boot):
        lo, hi = np.quantile(boot, P.central(), axis=0)
        ax.fill_between(x, lo, hi, color="C0", alpha=0.25, lw=0, label=f"{P.LEVEL:.0%} group-bootstrap CI")
    ax.plot(x, v, color="C0", lw=2.2, marker="o", ms=3.5, label=f"mean of {len(_primary(res, exp))} primary label(s)")
    ax.axhline(CHANCE, color="k", ls="--", lw=1, label="chance (0.5)")
    ax.plot([0], [v[0]], marker="s", ms=8, mfc="none", mec="C3", mew=1.8, ls="none",
            label=f"layer-0 baseline (embeddings) {v[0]:.3f}")
    sm = profile_summary(res, exp, component, (v, boot), study.inflation.band)
    ax.errorbar([sm["peak_layer"]], [sm["peak_value"]],
                xerr=[[sm["peak_layer"] - sm["peak_ci_low"]], [sm["peak_ci_high"] - sm["peak_layer"]]],
                fmt="v", color="C1", ms=8, capsize=4,
                label=f"peak layer {sm['peak_layer']} ({P.LEVEL:.0%} confidence set {sm['peak_ci_low']:.0f}-"
                      f"{sm['peak_ci_high']:.0f})")
    ax.set_xlim(-0.6, len(v) - 0.4)
    ax.set_xlabel("layer")
    ax.set_ylabel(exp.metric.replace("_", " "))
    sec = ax.secondary_xaxis("top", functions=(lambda l: l / L, lambda d: d * L))
    sec.set_xlabel("normalised depth (layer / n_layers)", fontsize=8)
    sec.tick_params(labelsize=7)
    ax.set_title(f"{rep.model}: {name} ({component})", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    return fig


def plot_overview(rep, component: str = OVERVIEW_COMPONENT):
    """Every experiment's profile on ``component`` against normalised depth; the paper's peak ranges
    (in depth) as bars in a strip under the plot."""
    ranges = _study(rep).paper_ranges
    names = [n for n in rep.results if component in rep.results[n].components]
    bars = [(i, name, rng) for i, name in enumerate(names) for rng in ranges.get(name, [])]
    fig = _fig(10, 5.5 if bars else 5)
    if bars:
        gs = fig.add_gridspec(2, 1, height_ratios=[5, 0.25 + 0.28 * len(bars)], hspace=0.08)
        ax, axb = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
        axb.sharex(ax)
    else:
        ax, axb = fig.add_subplot(111), None
    for i, name in enumerate(names):
        res = rep.results[name]
        exp = _experiment(rep, name)
        v, boot = experiment_profile(res, exp, component)
        d = np.arange(len(v)) / rep.n_layers
        c = f"C{i % 10}"
        if len(boot):
            lo, hi = np.quantile(boot, P.central(), axis=0)
            ax.fill_between(d, lo, hi, color=c, alpha=0.15, lw=0)
        ax.plot(d, v, color=c, lw=2, marker="o", ms=2.5, label=name)
    ax.axhline(CHANCE, color="k", ls="--", lw=1, label="chance (0.5)")
    ax.set_ylabel("balanced accuracy (mean of primary labels)")
    ax.set_xlim(-0.02, 1.0)
    ax.set_title(f"{rep.model} ({rep.n_layers} layers): {component} profiles, shaded {P.LEVEL:.0%} CIs", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    xlabel = "normalised depth (layer / n_layers); depth 0 = layer-0 baseline (embeddings)"
    if axb is None:
        ax.set_xlabel(xlabel)
        return fig
    ax.tick_params(labelbottom=False)
    for k, (i, name, rng) in enumerate(bars):
        a, b = layer_range_depths(rng["low"], rng["high"], rng["n_layers"])
        y = len(bars) - k
        axb.plot([a, b], [y, y], color=f"C{i % 10}", lw=5, solid_capstyle="butt")
        axb.text(b + 0.006, y, f"{name}: paper {rng['model'].split('-')[-1].upper()} {rng['what']}",
                 fontsize=6.5, va="center", color=f"C{i % 10}")
    axb.set_ylim(0.3, len(bars) + 0.7)
    axb.set_yticks([])
    axb.set_ylabel("paper", fontsize=7)
    axb.grid(axis="x", alpha=0.3)
    axb.set_xlabel(xlabel)
    return fig


def plot_causal(rep, claim_id: str, test: dict):
    """A layer-set causal test: left, the experiment's ordinary profile and its profile with the peak set's
    blocks ablated (each with its 95% bootstrap band); right, the read-out drop of every random set, the
    peak set's marked."""
    fig = _fig(11, 4.2)
    ax, bx = fig.add_subplot(121), fig.add_subplot(122)
    x = np.arange(test["n_layers"])
    for name, lab, col in (("ordinary", "ordinary", "C0"), ("peak", "peak set ablated", "C3")):
        ax.fill_between(x, test[f"{name}_lo"], test[f"{name}_hi"], color=col, alpha=0.2, lw=0)
        ax.plot(x, test[f"{name}_profile"], color=col, lw=2, marker="o", ms=3,
                label=f"{lab} ({P.LEVEL:.0%} band)")
    ps = test["peak_set"]
    ax.axvspan(min(ps) - 0.5, max(ps) + 0.5, color="0.85", lw=0, label=f"ablated blocks {ps}")
    ax.axvline(test["readout_layer"], color="k", ls=":", lw=1, label=f"read-out (layer {test['readout_layer']})")
    ax.axhline(CHANCE, color="k", ls="--", lw=0.8)
    ax.set_xlabel("layer (resid_pre)")
    ax.set_ylabel("balanced accuracy")
    ax.set_title(f"{rep.model}: {test['experiment']}, peak blocks mean-ablated", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    drop, _ = drops(test)
    bx.hist(drop[1:], bins=20, color="0.6", label=f"{len(drop) - 1} random sets of {test['k']} blocks")
    bx.axvline(drop[0], color="C3", lw=2.5, label=f"peak set {ps}: {drop[0]:.3f}")
    bx.set_xlabel(f"drop in read-out balanced accuracy (layer {test['readout_layer']})")
    bx.set_ylabel("layer sets")
    bx.set_title(f"{claim_id.split('.', 1)[-1]}", fontsize=10)
    bx.legend(fontsize=7)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def causal_lines(rep, figures, out_dir) -> list[str]:
    """The report's causal section: per layer-set test, what was ablated and how the peak set ranks."""
    tests = ((getattr(rep, "causal", None) or {}).get("tests") or {})
    if not tests:
        return []
    rel = {Path(p).name: os.path.relpath(p, out_dir) for p in figures}
    lines = ["## Causal checks", "",
             "Mean ablation (by token position) of `attn_out` + `mlp_out` over the blocks around each experiment's "
             "probe peak, against random sets of as many blocks (docs/causal.md). Read-out: the experiment's probe at "
             "the last layer (`resid_pre`), judged, and the log-likelihood of each text's last token (nats, mean "
             "over texts), reported, from one forward pass per set. Drops are unablated minus ablated (negative: "
             "the ablation raised it). The verdicts are in the claims table below.", "",
             "| claim | ablated blocks | read-out unablated | drop: peak set | drop: random sets (median, 5-95%) | "
             "random sets as damaging | last-token log-lik drop: peak / median random | passes | s | figure |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cid, t in tests.items():
        drop, ll = drops(t)
        q = np.quantile(drop[1:], [0.05, 0.95])
        k = rank_test(drop[0], drop[1:])[0]
        fn = f"{figure_stem(rep.model)}_causal_{t['experiment']}.png"
        lines.append(f"| `{cid}` | {t['peak_set']} (peak {t['peak_layer']}) | {t['ordinary_readout']:.3f} | "
                     f"{drop[0]:.3f} | {np.median(drop[1:]):.3f} [{q[0]:.3f}, {q[1]:.3f}] | {k} of {len(drop) - 1} | "
                     f"{ll[0]:.3f} / {np.median(ll[1:]):.3f} | {t['forward_passes']} | {t['seconds']} | "
                     + (f"[png]({rel[fn]})" if fn in rel else "—")
                     + " |")
    return lines + [""]


def plot_profiles(rep, out_dir) -> list[Path]:
    """``<model>_<experiment>_<component>.png`` for every experiment x component and ``<model>_overview.png``
    (the study's paper ranges shaded; ``<model>``: :func:`figure_stem`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, res in rep.results.items():
        for comp in res.components:
            fig = plot_experiment(rep, name, comp)
            paths.append(_save_fig(fig, out / f"{figure_stem(rep.model)}_{name}_{comp}.png"))
    if rep.results:
        paths.append(_save_fig(plot_overview(rep), out / f"{figure_stem(rep.model)}_overview.png"))
    for cid, t in ((getattr(rep, "causal", None) or {}).get("tests") or {}).items():
        paths.append(_save_fig(plot_causal(rep, cid, t), out / f"{figure_stem(rep.model)}_causal_{t['experiment']}.png"))
    return paths


# ----------------------------------------------------------------------------- claims table

def _fmt(x, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "—"
    if unit == "bool":
        return "yes" if x >= 0.5 else "no"
    if unit == "layer" and float(x).is_integer():
        return f"{x:.0f}"
    if unit == "p":
        return f"{x:.3g}"
    return f"{x:.3f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2g}"


def format_ci(lo, hi, unit="", interval="") -> str:
    if pd.isna(lo) or pd.isna(hi):
        return "—"
    text = f"[{_fmt(lo, unit)}, {_fmt(hi, unit)}]"
    return {"null": f"null {text}", "set": f"set {text}", "spread": f"spread {text}"}.get(interval, text)


def _claim(claim_id: str):
    try:
        return study_of_claim(claim_id).claim(claim_id)
    except Exception:            # a claim of a study that is not loadable here: shown by id
        return None


def _claim_order(claim: str) -> tuple:
    c = _claim(claim)
    if c is None:
        return (claim, 0)
    st = study_of_claim(claim)
    return (st.id, st.claims.index(c))


def _md_cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def claim_rows(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per (basis, model, claim): verdict, key metric with value and CI, reasons of the failed metrics."""
    rows = []
    for (basis, model, claim), g in verdicts.groupby(["basis", "model", "claim"], sort=False):
        c = _claim(claim)
        key = c.key_metric if c is not None and c.key_metric in set(g.metric) else g.metric.iloc[0]
        k = g[g.metric == key].iloc[0]
        failed = g[~g.passed.astype(bool)]
        rows.append({"basis": basis, "model": model, "claim": claim, "passed": bool(len(failed) == 0),
                     "n_passed": int(len(g) - len(failed)), "n_metrics": int(len(g)), "key_metric": key,
                     "unit": k.unit, "value": k.value, "ci_low": k.ci_low, "ci_high": k.ci_high,
                     "interval": getattr(k, "interval", ""),
                     "provenance": k.provenance,
                     "reason": "; ".join(f"{r.metric}: {r.reason}" for r in failed.itertuples()),
                     **{c: getattr(k, c, np.nan) for c in ANSWER_COLUMNS}})
    out = pd.DataFrame(rows)
    if len(out):
        out = out.assign(_o=out.claim.map(_claim_order)).sort_values(["basis", "model", "_o"]).drop(columns="_o")
    return out.reset_index(drop=True)


def answer_headline(claim_table: pd.DataFrame) -> str:
    """The count of the three answers (rows judged against the paper) and of the regression rows' passes."""
    ans = (claim_table["answer"].astype(object).fillna("").astype(str) if "answer" in claim_table
           else pd.Series([""] * len(claim_table), index=claim_table.index))
    scored = claim_table[ans.isin(ANSWERS)]
    bits = []
    if len(scored):
        n = scored.answer.value_counts()
        bits.append(f"Against the paper: {', '.join(f'{int(n.get(a, 0))} {a}' for a in ANSWERS)} of {len(scored)} "
                    f"model x claim rows (power at the paper's size and the MDE at 80% power beside each; "
                    f"see docs/statistics.md).")
    reg = claim_table[ans == REGRESSION]
    if len(reg):
        bits.append(f"Regression against the models' own measured references: {int(reg.passed.sum())} of "
                    f"{len(reg)} rows pass (a regression check, not a test of the paper).")
    rest = claim_table[~ans.isin(ANSWERS + (REGRESSION,))]
    if len(rest):
        bits.append(f"Without an answer: {int(rest.passed.sum())} of {len(rest)} rows pass their rule.")
    return " ".join(bits)


def claims_markdown(verdicts: pd.DataFrame, title: str = "Claims", level: int = 1) -> str:
    """The claims table as markdown: a section per basis (``own``, ``paper-normalised``), one row per
    model x claim with PASS/FAIL, the key metric with its 95% CI and, on failure, the failed metrics' reasons;
    then every judged metric in a details block."""
    h = "#" * level
    lines = [f"{h} {title}", ""]
    if verdicts is None or verdicts.empty:
        return "\n".join(lines + ["No verdicts.", ""])
    cr = claim_rows(verdicts)
    for basis in [b for b in ("own", "paper-normalised") if b in set(cr.basis)] + \
            sorted(set(cr.basis) - {"own", "paper-normalised"}):
        part = cr[cr.basis == basis]
        head, blurb = BASIS_TITLES.get(basis, (basis, ""))
        lines += [f"{h}# {head} (basis `{basis}`)", "", blurb, "", answer_headline(part), "",
                  "| model | claim | answer | power at the paper's size | MDE (80%) / paper's size "
                  "| p (Holm) | rule | key metric | value | interval (CI; set: the peak's confidence set; "
                  f"null: the null's central {P.LEVEL:.0%}; spread: bootstrap argmaxes) | against "
                  "| metrics passed | why |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in part.itertuples():
            c = _claim(r.claim)
            title_ = c.title if c is not None else r.claim
            ans = str(getattr(r, "answer", "") or "")
            scored = ans in ANSWERS
            why = (str(r.answer_reason) if scored else "") + ("" if r.passed else
                                                             ("; " if scored else "") + r.reason)
            lines.append("| " + " | ".join(_md_cell(c) for c in [
                r.model, f"`{r.claim}` {title_}",
                {"reproduced": "reproduced", "contradicted": "**contradicted**",
                 "inconclusive": "*inconclusive*"}.get(ans, ans or "—"),
                _fmt(r.power_at_paper) if scored else "—",
                (f"{_fmt(r.mde80)} / {_fmt(r.paper_effect)}{' (assumed)' if r.paper_size_assumed else ''}"
                 if scored else "—"),
                (f"{_fmt(r.p_effect, 'p')} ({_fmt(r.p_holm, 'p')})" if scored and pd.notna(r.p_effect) else "—"),
                "PASS" if r.passed else "**FAIL**", f"`{r.key_metric}`",
                _fmt(r.value, r.unit), format_ci(r.ci_low, r.ci_high, r.unit, r.interval), r.provenance,
                f"{r.n_passed}/{r.n_metrics}", why]) + " |")
        lines += ["", "<details><summary>every judged metric</summary>", "",
                  f"| model | claim | metric | value | {P.LEVEL:.0%} CI | judged on | verdict | reason |",
                  "|---|---|---|---|---|---|---|---|"]
        v = verdicts[verdicts.basis == basis]
        v = v.assign(_o=v.claim.map(_claim_order)).sort_values(["model", "_o"], kind="stable")
        for r in v.itertuples():
            lines.append("| " + " | ".join(_md_cell(c) for c in [
                r.model, r.claim, f"`{r.metric}`", _fmt(r.value, r.unit),
                format_ci(r.ci_low, r.ci_high, r.unit, getattr(r, "interval", "")),
                r.judged, "PASS" if r.passed else "FAIL", r.reason]) + " |")
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def write_claims_table(verdicts: pd.DataFrame, out_dir) -> dict[str, Path]:
    """``claims.md`` and ``verdicts.parquet`` in ``out_dir`` (atomic writes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"verdicts": atomic_write_parquet(verdicts.reset_index(drop=True), out / "verdicts.parquet"),
            "claims": atomic_write_text(out / "claims.md", claims_markdown(verdicts))}


def twin_markdown(verdicts: pd.DataFrame) -> str:
    """The untrained-model control as a markdown table: the rows of
    :func:`probekit.claims.verdicts.twin_verdicts` (paper-normalised basis); "" without a twin."""
    t = twin_verdicts(verdicts)
    if t.empty:
        return ""
    has_answers = bool((t.judged_on == "answer").any())
    lines = ["## Against the untrained twin (paper-normalised)", "",
             "A positive claim counts as reproduced for a model only if it is reproduced there (PASS) and not on "
             "the model's random-init twin (same architecture and tokenizer, weights re-initialised with a fixed "
             "seed). For the control claim (shuffled labels at chance) both must pass." +
             (" PASS = the answer *reproduced*; fail = contradicted or inconclusive." if has_answers else ""), "",
             "| model | twin | claim | model | twin | reproduced |", "|---|---|---|---|---|---|"]
    for r in t.itertuples():
        lines.append(f"| {r.model} | {r.twin} | `{r.claim}` | {'PASS' if r.model_passed else 'fail'} | "
                     f"{'PASS' if r.twin_passed else 'fail'} | {'**yes**' if r.reproduced else 'no'} |")
    return "\n".join(lines + [""])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def preregistration(study) -> dict:
    """The record that ties a run to rules fixed before it ran: probekit's version, and sha256 hashes of the
    rule code (the judging core and the study's own modules), of the expected rows (``expected_dir/*.parquet``,
    the study's rows only, in a canonical order) and of every claim's scenarios and effect estimand."""
    root = Path(claim_module.__file__).resolve().parents[1]          # the probekit package
    # keyed by the path inside the package ("claims/claim.py"): a module's name alone is ambiguous
    code = {Path(m.__file__).resolve().relative_to(root).as_posix(): _sha256(Path(m.__file__).read_bytes())
            for m in (claim_module, verdicts_module, P, stats, calibration)}
    if study.folder:
        for f in sorted(Path(study.folder).glob("*.py")):
            code[f"{study.id}/{f.name}"] = _sha256(f.read_bytes())
    exp = study.expected()
    exp = exp.sort_values(list(exp.columns[:5]), kind="stable").reset_index(drop=True)
    rows = _sha256(exp.to_csv(index=False).encode())
    specs = []
    for c in study.claims:
        scen = [(s.name, s.kind, repr(sorted(s.params.items(), key=str))) for s in c.scenarios]
        contrast = {m: [(s.name, s.kind, repr(sorted(s.params.items(), key=str))) for s in sc]
                    for m, sc in c.contrasts.items()}
        eff = dataclasses.asdict(c.effect) if getattr(c, "effect", None) is not None else None
        specs.append({"claim": c.id, "scenarios": scen, "contrasts": contrast, "effect": eff})
    return {"probekit": __version__, "study": study.id, "code_sha256": code, "expected_rows_sha256": rows,
            "n_expected_rows": int(len(exp)),
            "scenarios_sha256": _sha256(json.dumps(specs, sort_keys=True, default=str).encode())}


def write_claim_profiles(profiles: dict, path) -> Path:
    """The profiles the claims read, as ``<experiment>/<component>/values`` (float64) and ``.../boot``
    (float32, the bootstrap replicates) in one ``.npz``: with ``measurements.parquet`` enough to re-judge
    every verdict without the model (``probekit.claims.claim.SyntheticEvidence(profiles=...)``)."""
    arrays = {}
    for (exp, comp), (v, boot) in sorted(profiles.items()):
        arrays[f"{exp}/{comp}/values"] = np.asarray(v, float)
        arrays[f"{exp}/{comp}/boot"] = np.asarray(boot, np.float32)
    def write(tmp):
        with open(tmp, "wb") as f:                  # a file object: savez would append .npz to a name
            np.savez_compressed(f, **arrays)
    return _atomic(Path(path), write)


# ----------------------------------------------------------------------------- per-model report

def write_report(rep, out_dir, measurements: pd.DataFrame | None = None) -> dict[str, object]:
    """Everything for one model in ``out_dir``: the saved Replication (``scores.parquet``,
    ``replication.json``, ``probes/``), ``measurements.parquet``, ``verdicts.parquet`` + ``claims.md``
    (basis auto and the paper-normalised audit), ``figures/*.png`` and ``report.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = _study(rep)
    rep.save(out)
    used: dict = {}
    meas = measure_run(rep, used) if measurements is None else measurements
    if measurements is not None:
        measure_run(rep, used)                  # the profiles only (the measurements were given)
    paths: dict[str, object] = {"replication": out / "replication.json", "scores": out / "scores.parquet",
                                "measurements": atomic_write_parquet(meas, out / "measurements.parquet")}
    if used:
        paths["claim_profiles"] = write_claim_profiles(used, out / "claim_profiles.npz")
    prereg = preregistration(study)
    paths["preregistration"] = atomic_write_text(out / "preregistration.json", json.dumps(prereg, indent=1) + "\n")
    verdicts = all_verdicts(meas, study) if len(meas) else pd.DataFrame()
    if len(verdicts):
        paths.update(write_claims_table(verdicts, out))
    figs = plot_profiles(rep, out / "figures")
    paths["figures"] = figs
    paths["report"] = atomic_write_text(out / "report.md", report_markdown(rep, verdicts, figs, out))
    paths["verdicts_df"] = verdicts
    return paths


def transfer_lines(rep, component: str = OVERVIEW_COMPONENT) -> list[str]:
    """The held-out transfer table: per label, the probe trained on the experiment's stimuli and tested on
    a disjoint set, at layer 0 and at its best layer, next to the within-set cross-validated value."""
    t = getattr(rep, "transfer", None)
    if t is None or not len(t):
        return []
    t = t[(t.component == component) & t.metric.isin(["balanced_accuracy", "r"])]
    lines = ["## Held-out transfer", "",
             f"Probe trained on every stimulus of the experiment, tested on a stimulus set with no shared lemma "
             f"({component}). A profile that reflects the feature transfers; one that reflects the particular "
             f"nouns does not. `cv` = the same label's within-set group-CV value at the same layer.", "",
             "| train -> test | label | metric | layer 0 | best layer | transfer at best | cv at best |",
             "|---|---|---|---|---|---|---|"]
    for (train, test, label, metric), g in t.groupby(["train", "test", "label", "metric"], sort=False):
        g = g.sort_values("layer")
        best = g.loc[g.value.idxmax()]
        cv = np.nan
        res = rep.results.get(train)
        if res is not None and label in res.labels:
            p = res.profile(label, component, metric)
            hit = p[p.layer == best.layer]
            cv = float(hit.value.iloc[0]) if len(hit) else np.nan
        lines.append(f"| {train} -> {test} | {label} | {metric} | {_fmt(g.value.iloc[0])} | {int(best.layer)} | "
                     f"{_fmt(best.value)} | {_fmt(cv)} |")
    mean = t[t.metric == "balanced_accuracy"].groupby("layer").value.mean()
    if len(mean):
        lines += ["", f"Mean transfer balanced accuracy over binary labels: layer 0 {mean.iloc[0]:.3f}, best "
                      f"{mean.max():.3f} at layer {int(mean.idxmax())}.", ""]
    return lines + [""]


def report_markdown(rep, verdicts: pd.DataFrame, figures: list[Path], out_dir: Path) -> str:
    rel = {Path(p).name: os.path.relpath(p, out_dir) for p in figures}
    lines = [f"# probekit report: {rep.model}", "",
             f"{rep.n_layers} layers, d_model {rep.d_model}, markers {', '.join(rep.markers) or '—'}, "
             f"fingerprint `{rep.fingerprint}`, study `{_study(rep).id}`, probekit {__version__}.", ""]
    t = rep.timings or {}
    if t:
        bits = [f"load {t.get('load_model_s', '—')} s"] + [
            f"{k} {v.get('n_stimuli', '?')} stimuli / extract {v.get('extract_s', '—')} s / probes {v.get('probe_s', '—')} s"
            for k, v in t.items() if isinstance(v, dict)] + [f"total {t.get('total_s', '—')} s"]
        lines += ["Timings: " + "; ".join(bits) + ".", ""]
    ov = f"{figure_stem(rep.model)}_overview.png"
    if ov in rel:
        lines += [f"![overview]({rel[ov]})", ""]
    lines += ["## Profiles", "",
              "Experiment profile = mean balanced accuracy of the experiment's primary labels. Peak set: the "
              f"layers that may be the true peak (a simultaneous {P.LEVEL:.0%} band, widened by the study's inflation factor; "
              "see probekit.profiles.metrics). Layer 0 = the embeddings (baseline). "
              "Surface baseline: the same CV from surface features only (letters, frequency, tokens). "
              "Selectivity: value minus the control-task value (Hewitt & Liang), at the peak layer.", "",
              f"| experiment | component | peak layer | peak {P.LEVEL:.0%} set | peak depth | peak value [{P.LEVEL:.0%} CI] | layer 0 | "
              "surface baseline | selectivity at peak | figure |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    study = _study(rep)
    for name, res in rep.results.items():
        exp = _experiment(rep, name)
        for comp in res.components:
            try:
                s = profile_summary(res, exp, comp, inflation=study.inflation.band)
            except (KeyError, ValueError) as exc:
                lines.append(f"| {name} | {comp} | — | — | — | — | — | — | — | ({_md_cell(exc)}) |")
                continue
            fn = f"{figure_stem(rep.model)}_{name}_{comp}.png"
            lo, hi = s["peak_value_ci"]
            lines.append("| " + " | ".join([
                name, comp, str(s["peak_layer"]), f"{s['peak_ci_low']:.0f}-{s['peak_ci_high']:.0f}",
                f"{s['peak_depth']:.2f}", f"{s['peak_value']:.3f} [{_fmt(lo)}, {_fmt(hi)}]",
                _fmt(s["layer0_value"]), _fmt(s["surface_baseline"]), _fmt(s["selectivity_at_peak"]),
                f"[png]({rel[fn]})" if fn in rel else "—"]) + " |")
    lines += [""] + transfer_lines(rep) + causal_lines(rep, figures, out_dir)
    pr = preregistration(study)
    lines += ["## Pre-registration", "",
              f"Judged with rules fixed in code and data before this report was written (`preregistration.json`): "
              f"probekit {pr['probekit']}, study `{pr['study']}`, expected rows sha256 `{pr['expected_rows_sha256'][:16]}` "
              f"({pr['n_expected_rows']} rows), scenarios and effect sizes sha256 `{pr['scenarios_sha256'][:16]}`, rule "
              f"code " + ", ".join(f"`{k}` `{v[:12]}`" for k, v in pr["code_sha256"].items()) + ".", ""]
    if verdicts is not None and len(verdicts):
        lines += [claims_markdown(verdicts, title=f"Claims ({study.title})", level=2)]
    else:
        lines += ["## Claims", "", "No claim could be measured (experiments missing).", ""]
    return "\n".join(lines)
