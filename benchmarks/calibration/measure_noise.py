"""How much noise is in an experiment's layer profile, really? (issue 9, section 2)

probekit's bootstrap CIs of a layer profile reweight the out-of-fold (OOF)
predictions of the fitted probes (group bootstrap, no refitting,
:meth:`probekit.probes.ProbeResults.bootstrap_profiles`). They leave out the
variance of the fitting itself and of the CV split. This script measures, on the
real embedded models' activations, for the experiment mean profile exactly as
:func:`probekit.experiments.experiment_profile` builds it (primary labels,
balanced accuracy):

* ``sd_reweight[l]``: sd of the pipeline's 1000 group-bootstrap replicates;
* ``sd_refit[l]``: sd over B full refits on group-bootstrap-resampled data
  (groups drawn with replacement, every copy of a group keeps the group's id so
  all copies land in the same CV fold; stimuli rebuilt, shuffled-control column
  regenerated, the same probe grid rerun: same estimator, same stratified 6-fold
  group CV, a different fold seed per refit);
* ``sd_cvseed[l]``: sd over fold seeds alone (same data, refit);
* ``kappa = sd_refit / sd_reweight`` and its median / p90 / max over layers;
* lag-1 / lag-2 correlations across layers of the replicate deviations;
* the same profiles (mean and bootstrap sd) for a randomly initialised SmolLM2
  (``from_config`` under ``torch.manual_seed(seed)``, own fingerprint).

Usage (from the repository root)::

    nice -n 10 python benchmarks/calibration/measure_noise.py            # the full measurement
    python benchmarks/calibration/measure_noise.py --quick               # a smoke run (minutes),
                                                                         # -> results/calibration/

Writes ``probekit/studies/bogdan2025/noise_measured.json`` (the study's data, shipped in the wheel) (``--out`` to change) and, next
to it, ``noise_measured.npz`` with the raw replicates (``<model>/<experiment>/<component>/
{profile, reweight, refit, cvseed}``, arrays ``[B, n_layers]``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
# the study reads its measured noise from its own folder (package data): the .json beside its MEASURED_FILE
from probekit.studies.bogdan2025.claims import MEASURED_FILE  # noqa: E402

MEASURED_JSON = MEASURED_FILE.with_suffix(".json")
COMPONENTS = ("resid_pre", "attn_out")
EXPERIMENT_NAMES = ("items", "relations", "analogies")
N_SAVE_REWEIGHT = 200          # reweighting replicates kept in the .npz (all 1000 go into the sds)
METRIC = "balanced_accuracy"


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ------------------------------------------------------------ the grid ---

def grid_labels(stim: pd.DataFrame, primary: list[str]) -> list[str]:
    """The labels whose columns decide the primary labels' split plan.

    The pipeline's grid (``probe_experiment``) fits every label of the set plus a
    shuffled copy of each primary label; the folds of the primary labels' plan are
    stratified on the joint pattern of the plan's *binary* labels, in order. The
    OOF predictions of a label depend only on the folds (the ridge penalty is chosen
    per column), so fitting just these binary labels, in the same order, gives the
    primary labels exactly the pipeline's OOF predictions (checked in ``measure``).
    """
    from probekit.probes.grid import resolve_labels
    specs, Y = resolve_labels(stim, None)
    g = {s.name: s for s in specs}
    ref = g[primary[0]]
    mask = np.isfinite(Y[primary[0]].to_numpy())
    return [s.name for s in specs if s.kind == "binary" and s.group == ref.group
            and np.array_equal(np.isfinite(Y[s.name].to_numpy()), mask)]


def run_grid(X: dict, stim: pd.DataFrame, primary: list[str], seed: int, layers: list[int],
             rows: np.ndarray | None = None, n_bootstrap: int = 0):
    """Experiment profile ``[L, C]`` (NaN outside ``layers``) from one fit of the grid.

    ``rows`` (default all) selects and repeats stimuli: a resampled data set.
    Returns ``(profile, ProbeResults)``.
    """
    from probekit.core.activations import ActivationSet
    from probekit.pipeline import with_shuffled_controls
    from probekit.probes.grid import probe_grid
    n_layers = 1 + max(l for l, _ in X)
    d = next(iter(X.values())).shape[1]
    if rows is None:
        rows = np.arange(len(stim))
    s = stim.iloc[rows].reset_index(drop=True)
    s.attrs = dict(stim.attrs)
    acts = ActivationSet(stimuli=s, n_layers=n_layers, d_model=d, model_name="noise",
                         _loader=lambda l, c: X[(l, c)][rows])
    acts = with_shuffled_controls(acts, primary, seed)
    labels = grid_labels(acts.stimuli, primary)
    res = probe_grid(acts, labels, n_permutations=0, n_bootstrap=n_bootstrap, control_task=False,
                     surface_baseline=False, seed=seed, components=COMPONENTS, layers=layers, n_threads=1)
    prof = np.full((n_layers, len(COMPONENTS)), np.nan)
    sc = res.scores[(res.scores.metric == METRIC) & res.scores.label.isin(primary)]
    piv = sc.groupby(["layer", "component"]).value.mean().unstack()
    for ci, comp in enumerate(COMPONENTS):
        prof[piv.index.to_numpy(), ci] = piv[comp].to_numpy()
    return prof, res


def folds_match(stim: pd.DataFrame, primary: list[str], seed: int = 0) -> bool:
    """The primary labels' CV folds in :func:`run_grid` equal those of ``probe_experiment``'s grid."""
    from probekit.core.activations import ActivationSet
    from probekit.pipeline import with_shuffled_controls
    from probekit.probes.grid import grid_columns
    acts = with_shuffled_controls(ActivationSet(stimuli=stim, n_layers=1, d_model=1), primary, seed)
    kw = dict(seed=seed, n_permutations=0, control_task=False)
    full = grid_columns(acts.stimuli, None, **kw)
    mine = grid_columns(acts.stimuli, grid_labels(acts.stimuli, primary), **kw)
    pf = next(p for p in full.plans if primary[0] in p.labels)
    pm = next(p for p in mine.plans if primary[0] in p.labels)
    return (np.array_equal(pf.rows, pm.rows) and pf.stratified_on == pm.stratified_on
            and all(np.array_equal(a[1], b[1]) for a, b in zip(pf.folds, pm.folds)))


def resample_rows(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of a group bootstrap: draw n_groups groups with replacement, keep all their rows.

    Copies keep their group's id (the ``group`` column is not touched), so the CV
    treats every copy of a group as that one group and puts them in one fold.
    """
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    draw = rng.integers(0, len(uniq), size=len(uniq))
    return np.concatenate([members[g] for g in draw])


# ------------------------------------------------------------- summaries ---

def lag_corr(reps: np.ndarray, lag: int) -> float:
    """Median over layers of corr(dev[:, l], dev[:, l + lag]) across replicates."""
    out = []
    for l in range(reps.shape[1] - lag):
        a, b = reps[:, l], reps[:, l + lag]
        if np.std(a) > 0 and np.std(b) > 0:
            out.append(np.corrcoef(a, b)[0, 1])
    return float(np.median(out)) if out else float("nan")


def lag_corr_subset(reps: np.ndarray, layers: list[int], lag: int) -> float:
    """``lag_corr`` when only ``layers`` were refitted (pairs l, l+lag both present)."""
    have = set(layers)
    out = []
    for l in layers:
        if l + lag in have:
            a, b = reps[:, l], reps[:, l + lag]
            if np.std(a) > 0 and np.std(b) > 0:
                out.append(np.corrcoef(a, b)[0, 1])
    return float(np.median(out)) if out else float("nan")


def summ(v) -> dict:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {}
    return {"min": float(v.min()), "median": float(np.median(v)), "p90": float(np.quantile(v, 0.9)),
            "max": float(v.max()), "mean": float(v.mean())}


def rnd(a, k: int = 5):
    a = np.asarray(a, dtype=float)
    return [None if not np.isfinite(x) else round(float(x), k) for x in a.ravel()]


def clean(o):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(o, dict):
        return {str(k): clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


# --------------------------------------------------------------- measure ---

def load_arrays(acts) -> dict:
    return {(l, c): np.ascontiguousarray(np.asarray(acts.get(l, c), dtype=np.float32))
            for l in range(acts.n_layers) for c in COMPONENTS}


def measure(model, exp_name: str, *, n_refit: int, n_cvseed: int, layers_mode: str, refit: bool = True,
            pipeline_check: bool = True, arrays: dict | None = None) -> dict:
    """Numbers for one model x experiment; raw replicates go into ``arrays`` (for the .npz)."""
    import probekit
    from probekit.stimuli.experiments import experiment_profile
    from probekit.studies.bogdan2025.experiments import EXPERIMENTS
    from probekit.pipeline import probe_experiment
    exp = EXPERIMENTS[exp_name]
    t0 = time.perf_counter()
    acts = probekit.extract(model, exp.stimuli(), store=True)
    stim = acts.stimuli
    primary = exp.primary_labels(stim)
    L = acts.n_layers
    X = load_arrays(acts)
    out = {"model": model.name, "fingerprint": model.fingerprint, "experiment": exp_name, "n_layers": L,
           "n_stimuli": len(stim), "n_groups": int(stim["group"].nunique()), "primary": primary,
           "metric": METRIC, "components": {}}

    # --- the pipeline's own profile and its 1000 reweighting replicates
    base_prof, base_res = run_grid(X, stim, primary, seed=0, layers=list(range(L)), n_bootstrap=1000)
    base_res.meta["primary"] = primary
    check = {}
    if pipeline_check:
        # the real pipeline result (cached for later runs): our grid must give its exact OOF predictions
        res_p = probe_experiment(acts, exp)
        for lab in primary:
            a = res_p.predictions[lab].oof[:, [res_p.components.index(c) for c in COMPONENTS]]
            b = base_res.predictions[lab].oof
            check[lab] = float(np.nanmax(np.abs(a.astype(np.float64) - b)))
        res_use = res_p
    else:
        res_use = base_res
    # cheap check always: the primary labels' folds equal those of the pipeline's full label set
    # (every label + shuffled controls); a label's OOF predictions depend only on its folds
    out["folds_equal_pipeline"] = folds_match(stim, primary)
    if not out["folds_equal_pipeline"]:
        raise RuntimeError(f"{exp_name}: this script's folds differ from the pipeline's")
    out["pipeline_check_max_abs_oof_diff"] = check
    t_base = time.perf_counter() - t0

    if layers_mode == "all":
        rlayers = list(range(L))
    elif layers_mode.startswith("triplets:"):
        # K evenly spaced runs of 3 adjacent layers: lag-1 and lag-2 pairs inside every run
        k = int(layers_mode.split(":")[1])
        starts = np.linspace(0, L - 3, k).round().astype(int)
        rlayers = sorted({int(s0) + j for s0 in starts for j in range(3)})
    else:
        k = int(layers_mode)
        rlayers = sorted(set(np.linspace(0, L - 1, k).round().astype(int).tolist()))
    out["refit_layers"] = rlayers

    # --- refits: group bootstrap of the data + new fold seed; and fold seed alone
    refit_profiles, cv_profiles = [], []
    t1 = time.perf_counter()
    if refit:
        groups = stim["group"].to_numpy()
        for b in range(n_refit):
            rng = np.random.default_rng(10_000 + b)
            rows = resample_rows(groups, rng)
            prof, _ = run_grid(X, stim, primary, seed=1 + b, layers=rlayers, rows=rows)
            refit_profiles.append(prof)
        for s in range(n_cvseed):
            prof, _ = run_grid(X, stim, primary, seed=5_000 + s, layers=rlayers)
            cv_profiles.append(prof)
    t_refit = time.perf_counter() - t1
    refit_profiles = np.asarray(refit_profiles) if refit_profiles else np.full((0, L, len(COMPONENTS)), np.nan)
    cv_profiles = np.asarray(cv_profiles) if cv_profiles else np.full((0, L, len(COMPONENTS)), np.nan)

    for ci, comp in enumerate(COMPONENTS):
        values, reps = experiment_profile(res_use, exp, comp)
        if arrays is not None:
            key = f"{model.name}/{exp_name}/{comp}"
            arrays[f"{key}/profile"] = values.astype(np.float32)
            arrays[f"{key}/reweight"] = reps[:N_SAVE_REWEIGHT].astype(np.float32)
            if len(refit_profiles):
                arrays[f"{key}/refit"] = refit_profiles[:, :, ci].astype(np.float32)
            if len(cv_profiles):
                arrays[f"{key}/cvseed"] = cv_profiles[:, :, ci].astype(np.float32)
        sd_rw = reps.std(0, ddof=1)
        lo, hi = np.nanquantile(reps, 0.025, 0), np.nanquantile(reps, 0.975, 0)
        d = {"profile": rnd(values), "sd_reweight": rnd(sd_rw), "ci_halfwidth_reweight": rnd((hi - lo) / 2),
             "summary_sd_reweight": summ(sd_rw), "summary_ci_halfwidth_reweight": summ((hi - lo) / 2),
             "lag1_corr_reweight": lag_corr(reps, 1), "lag2_corr_reweight": lag_corr(reps, 2),
             "lag1_corr_reweight_on_refit_layers": lag_corr_subset(reps, rlayers, 1)}
        if len(refit_profiles):
            R = refit_profiles[:, :, ci]
            sd_rf = np.full(L, np.nan)
            sd_rf[rlayers] = R[:, rlayers].std(0, ddof=1)
            kappa = sd_rf / sd_rw
            C = cv_profiles[:, :, ci]
            sd_cv = np.full(L, np.nan)
            if len(C) > 1:
                sd_cv[rlayers] = C[:, rlayers].std(0, ddof=1)
            rlo = np.full(L, np.nan)
            rhi = np.full(L, np.nan)
            rlo[rlayers], rhi[rlayers] = np.quantile(R[:, rlayers], 0.025, 0), np.quantile(R[:, rlayers], 0.975, 0)
            d.update({
                "n_refit": int(len(R)), "n_cvseed": int(len(C)),
                "sd_refit": rnd(sd_rf), "sd_cvseed": rnd(sd_cv), "kappa": rnd(kappa, 4),
                "kappa_cvseed_only": rnd(sd_cv / sd_rw, 4),
                # sd_refit^2 ~ sd_reweight^2 + sd_fit^2: the part the reweighting misses
                "var_share_missing": rnd(1 - (sd_rw / sd_rf) ** 2, 4),
                "summary_kappa": summ(kappa), "summary_kappa_cvseed_only": summ(sd_cv / sd_rw),
                "summary_sd_refit": summ(sd_rf), "summary_sd_cvseed": summ(sd_cv),
                "ci_halfwidth_refit_normal": rnd(1.96 * sd_rf), "ci_halfwidth_refit_percentile": rnd((rhi - rlo) / 2),
                "summary_ci_halfwidth_refit_normal": summ(1.96 * sd_rf),
                "refit_mean": rnd(np.where(np.isnan(sd_rf), np.nan, R.mean(0))),
                "refit_mean_minus_profile": summ(R[:, rlayers].mean(0) - values[rlayers]),
                "cvseed_mean_minus_profile": summ(C[:, rlayers].mean(0) - values[rlayers]) if len(C) else {},
                "lag1_corr_refit": lag_corr_subset(R, rlayers, 1), "lag2_corr_refit": lag_corr_subset(R, rlayers, 2),
                "lag1_corr_cvseed": lag_corr_subset(C, rlayers, 1) if len(C) > 2 else None,
                "lag2_corr_cvseed": lag_corr_subset(C, rlayers, 2) if len(C) > 2 else None,
            })
        out["components"][comp] = d
    out["timing_s"] = {"baseline": round(t_base, 1), "refits": round(t_refit, 1),
                       "per_refit": round(t_refit / max(1, n_refit + n_cvseed), 2)}
    log(f"{model.name} {exp_name}: baseline {t_base:.0f} s, {n_refit}+{n_cvseed} refits {t_refit:.0f} s; "
        + "; ".join(f"{c}: kappa med {out['components'][c].get('summary_kappa', {}).get('median', float('nan')):.2f}"
                    for c in COMPONENTS))
    return out


# ----------------------------------------------------------- random init ---

def random_init_model(model, seed: int = 0):
    """A randomly initialised twin of ``model`` (same architecture, config and tokenizer).

    Built with ``AutoModelForCausalLM.from_config`` under ``torch.manual_seed(seed)``
    (``model.apply(model._init_weights)`` is a silent no-op in transformers 5). Its
    fingerprint hashes a deterministic sample of the new weights, so the activation
    store can never serve the trained model's activations for it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from probekit.models.loading import LoadedModel
    from probekit.models.registry import random_name
    cfg = model.model.config
    torch.manual_seed(seed)
    rm = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    rm.eval()
    for p in rm.parameters():
        p.requires_grad_(False)
    h = hashlib.sha256()
    for name, p in sorted(rm.state_dict().items()):
        flat = p.detach().reshape(-1).float()
        k = min(4096, flat.numel())
        idx = torch.arange(k, dtype=torch.int64) * (flat.numel() - 1) // max(1, k - 1)
        h.update(name.encode())
        h.update(flat[idx].numpy().tobytes())
    fp = f"{model.fingerprint}|random-init:seed{seed}:{h.hexdigest()[:16]}"
    return LoadedModel(model=rm, tokenizer=model.tokenizer, name=random_name(model.name, seed), fingerprint=fp,
                       source=f"from_config({model.name}), torch.manual_seed({seed})", dtype="float32", markers=())


def measure_random(model, seed: int, *, n_refit: int, layers_mode: str, pipeline_check: bool,
                   arrays: dict | None = None) -> dict:
    import probekit
    from probekit.studies.bogdan2025.experiments import EXPERIMENTS
    rmodel = random_init_model(model, seed)
    # the weights really differ, and so do the activations
    p_tr = dict(model.model.named_parameters())
    diff_w = {n: float((p - p_tr[n]).abs().max()) for n, p in list(rmodel.model.named_parameters())[:3]}
    out = {"name": rmodel.name, "fingerprint": rmodel.fingerprint, "seed": seed,
           "weights_max_abs_diff_first_params": diff_w, "experiments": {}}
    for e in EXPERIMENTS_RANDOM:
        a_tr = probekit.extract(model, EXPERIMENTS[e].stimuli(), store=True)
        a_rd = probekit.extract(rmodel, EXPERIMENTS[e].stimuli(), store=True)
        mid = a_tr.n_layers // 2
        x_tr, x_rd = np.asarray(a_tr.get(mid, "resid_pre")), np.asarray(a_rd.get(mid, "resid_pre"))
        m = measure(rmodel, e, n_refit=n_refit, n_cvseed=0, layers_mode=layers_mode, refit=n_refit > 0,
                    pipeline_check=pipeline_check, arrays=arrays)
        m["activation_check"] = {"layer": mid, "store_entries_differ": a_tr.meta["store"] != a_rd.meta["store"],
                                 "max_abs_diff_resid_pre": float(np.abs(x_tr - x_rd).max()),
                                 "rel_frobenius_diff": float(np.linalg.norm(x_tr - x_rd) / np.linalg.norm(x_tr))}
        out["experiments"][e] = m
    return out


EXPERIMENTS_RANDOM = EXPERIMENT_NAMES


def add_derived(result: dict) -> dict:
    """``kappa_split``: sqrt(1 + kappa_cvseed_only^2), the inflation if the only thing the reweighting
    missed were the CV split (reweight and split variance added). The refit bootstrap's kappa also
    contains the training-sample variance, but on a bootstrap sample of ~63% distinct groups; the
    truth for the full-size fit lies between the two (see README)."""
    exps = [d for m in result["models"].values() for d in m["experiments"].values()]
    if result.get("random_init"):
        exps += list(result["random_init"]["experiments"].values())
    for d in exps:
        for c in d["components"].values():
            kc = c.get("kappa_cvseed_only")
            if kc is not None:
                ks = [None if v is None else float(np.sqrt(1 + v ** 2)) for v in kc]
                c["kappa_split"] = rnd([np.nan if v is None else v for v in ks], 4)
                c["summary_kappa_split"] = summ([np.nan if v is None else v for v in ks])
    return result


# --------------------------------------------------------------- tables ---

def f2(x, k=2):
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{k}f}"


def tables(result: dict) -> str:
    """Markdown tables of a ``noise_measured.json`` (the README's)."""
    add_derived(result)
    lines = ["| model | experiment | component | κ median | κ p90 | κ max | κ_split median "
             "| sd reweight min / med / max | sd refit min / med / max | lag-1 reweight | lag-1 refit "
             "| lag-2 reweight | lag-2 refit | CI half-width (reweight) med | refit − profile (mean) |",
             "|---" * 15 + "|"]
    for mname, m in result["models"].items():
        for e, d in m["experiments"].items():
            for comp, c in d["components"].items():
                k, kc = c.get("summary_kappa", {}), c.get("summary_kappa_split", {})
                sr, sf = c["summary_sd_reweight"], c.get("summary_sd_refit", {})
                lines.append(
                    f"| {mname} | {e} | {comp} | {f2(k.get('median'))} | {f2(k.get('p90'))} | {f2(k.get('max'))} "
                    f"| {f2(kc.get('median'))} "
                    f"| {f2(sr['min'], 3)} / {f2(sr['median'], 3)} / {f2(sr['max'], 3)} "
                    f"| {f2(sf.get('min'), 3)} / {f2(sf.get('median'), 3)} / {f2(sf.get('max'), 3)} "
                    f"| {f2(c['lag1_corr_reweight'])} | {f2(c.get('lag1_corr_refit'))} "
                    f"| {f2(c['lag2_corr_reweight'])} | {f2(c.get('lag2_corr_refit'))} "
                    f"| {f2(c['summary_ci_halfwidth_reweight']['median'], 3)} "
                    f"| {f2(c.get('refit_mean_minus_profile', {}).get('mean'), 3)} |")
    r = result.get("random_init")
    if r:
        lines += ["", f"Random-init twin `{r['name']}` (fingerprint `...{r['fingerprint'][-40:]}`):", "",
                  "| experiment | component | profile min / mean / max | layer-0 | argmax layer "
                  "| sd reweight median | κ median | activations vs trained (rel. Frobenius diff) |",
                  "|---" * 8 + "|"]
        for e, d in r["experiments"].items():
            for comp, c in d["components"].items():
                v = np.array([np.nan if x is None else x for x in c["profile"]])
                lines.append(f"| {e} | {comp} | {v.min():.3f} / {v.mean():.3f} / {v.max():.3f} | {v[0]:.3f} "
                             f"| {int(np.nanargmax(v))} | {f2(c['summary_sd_reweight']['median'], 3)} "
                             f"| {f2(c.get('summary_kappa', {}).get('median'))} "
                             f"| {f2(d['activation_check']['rel_frobenius_diff'])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ main ---

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 model, 1 experiment, 5 refits, 6 layers")
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--experiments", default=",".join(EXPERIMENT_NAMES))
    ap.add_argument("--n-refit", type=int, default=100, help="bootstrap refits per model x experiment")
    ap.add_argument("--n-cvseed", type=int, default=20, help="fold-seed-only refits per model x experiment")
    ap.add_argument("--layers", default="all", help="layers refitted: 'all', N (N evenly spaced layers) or 'triplets:K' (K evenly spaced runs "
                         "of 3 adjacent layers, so lag-1/lag-2 correlations are measured)")
    ap.add_argument("--random-seed", type=int, default=0, help="seed of the random-init SmolLM2")
    ap.add_argument("--random-refit", type=int, default=20, help="refits for the random-init model (0: none)")
    ap.add_argument("--no-random", action="store_true", help="skip the random-init model")
    ap.add_argument("--pipeline-check", action="store_true",
                    help="also run probe_experiment (the full pipeline grid: permutations, controls; slow) and "
                         "check its OOF predictions equal this script's seed-0 grid (the folds are always checked)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="combine several runs' JSON (+ .npz) files into --out and exit")
    ap.add_argument("--out", default=str(MEASURED_JSON))
    ap.add_argument("--tables", metavar="JSON", help="print the markdown tables of a measured JSON and exit")
    a = ap.parse_args(argv)
    if a.tables:
        print(tables(json.loads(Path(a.tables).read_text())))
        return 0
    if a.merge:
        merged, arrs = None, {}
        for f in a.merge:
            r = json.loads(Path(f).read_text())
            settings = dict(r["settings"], file=Path(f).name)
            if merged is None:
                merged = r
                merged["settings"] = {"runs": []}
            else:
                merged["models"].update(r["models"])
                merged["random_init"] = merged.get("random_init") or r.get("random_init")
            merged["settings"]["runs"].append(settings)
            z = np.load(Path(f).with_suffix(".npz"))
            arrs.update({k: z[k] for k in z.files})
        Path(a.out).write_text(json.dumps(clean(add_derived(merged)), indent=1, allow_nan=False))
        np.savez_compressed(Path(a.out).with_suffix(".npz"), **arrs)
        log(f"merged {len(a.merge)} runs into {a.out}")
        return 0
    import probekit
    if a.quick:
        a.models, a.experiments, a.n_refit, a.n_cvseed, a.layers, a.random_refit = (
            "smollm2-135m", "relations", 5, 3, "6", 3)
        if a.out == str(MEASURED_JSON):
            a.out = str(HERE.parents[1] / "results" / "calibration" / "noise_measured.quick.json")
    result = {"settings": {k: v for k, v in vars(a).items() if k != "out"},
              "components": list(COMPONENTS), "metric": METRIC,
              "probekit_version": probekit.__version__, "python": platform.python_version(),
              "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "models": {}, "random_init": None}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    arrays: dict = {}

    def save():
        out.write_text(json.dumps(clean(add_derived(result)), indent=1, allow_nan=False))
        # raw replicates [B, L] per model/experiment/component: profile, reweight (first
        # N_SAVE_REWEIGHT), refit, cvseed; for simulating noise with the measured structure
        np.savez_compressed(out.with_suffix(".npz"), **arrays)

    for name in a.models.split(","):
        model = probekit.load_model(name)
        result["models"][name] = {"n_layers": model.n_layers, "fingerprint": model.fingerprint, "experiments": {}}
        for e in a.experiments.split(","):
            result["models"][name]["experiments"][e] = measure(
                model, e, n_refit=a.n_refit, n_cvseed=a.n_cvseed, layers_mode=a.layers,
                pipeline_check=a.pipeline_check, arrays=arrays)
            save()
        if name == "smollm2-135m" and not a.no_random:
            global EXPERIMENTS_RANDOM
            EXPERIMENTS_RANDOM = tuple(a.experiments.split(","))
            result["random_init"] = measure_random(model, a.random_seed, n_refit=a.random_refit,
                                                   layers_mode=a.layers, pipeline_check=a.pipeline_check,
                                                   arrays=arrays)
            save()
        del model
    save()
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
