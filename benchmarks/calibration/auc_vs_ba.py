"""AUC of the probe margins beside balanced accuracy, on the embedded models (issue 18, item 7).

Balanced accuracy thresholds the LS-SVM's out-of-fold margins at 0; the ROC AUC of the same margins
(``probe_grid(metrics=("auc",))``, :func:`probekit.probes.stats.weighted_auc`) keeps their order. Does it
give more signal per unit of noise? For each model x experiment (the study's primary labels, component
``resid_pre``, the pipeline's folds: :func:`benchmarks.calibration.measure_noise.grid_labels`) this script
fits the grid once and, from the same out-of-fold predictions and the same ``--n-boot`` group-bootstrap
weights (the pipeline's reweighting replicates), reports for each metric:

* per layer the experiment profile's value and replicate sd, and the signal-to-noise
  ``(value - 0.5) / sd``; the ratio AUC/BA of the SNRs, median over layers;
* the claims' derived statistics: the peak gain over layer 0 (at each metric's own gain layer) over the
  replicate sd of that difference; the depth centroid (:func:`probekit.profiles.metrics.depth_centroid`)
  and its replicate sd (ratio BA sd / AUC sd: the centroid's precision ratio);
* what a ratio ``r`` is worth in stimuli: ``r^2`` times as many (SE ~ 1/sqrt(n));
* the permutation null of one shuffled label (``shuffled_<primary>``, the pipeline's control copy) with
  ``--n-perm`` fold-stratified group permutations: the null's mean against chance 0.5 and the share of
  layers with p < 0.05, for both metrics.

Noise here is the reweighting bootstrap only (no refits: it is the same for both metrics, and the
refit/reweight inflation is per metric unknown for AUC; see docs/auc_vs_ba.md).

Usage (from the repository root; PROBEKIT_CACHE must hold or be able to fetch the models)::

    nice python benchmarks/calibration/auc_vs_ba.py            # both models, 3 sets, 200 replicates
    python benchmarks/calibration/auc_vs_ba.py --quick         # one model, relations, 6 layers (a smoke run)

Writes ``docs/auc_vs_ba.md`` and ``benchmarks/calibration/auc_vs_ba.json`` (``--md`` / ``--json``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESID = "resid_pre"
METRICS = ("balanced_accuracy", "auc")
SHORT = {"balanced_accuracy": "BA", "auc": "AUC"}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def profiles(res, primary: list[str], n_boot: int, seed: int = 0) -> dict:
    """``{metric: (values[L], replicates[B, L])}``: the experiment profile as ``experiment_profile`` builds it
    (mean over the primary labels of the values and of the replicates, one set of bootstrap weights)."""
    out = {}
    for mt in METRICS:
        v = np.mean([res.profile(l, RESID, mt).value.to_numpy() for l in primary], axis=0)
        b = np.mean([res.bootstrap_profiles(l, RESID, mt, n_boot=n_boot, seed=seed) for l in primary], axis=0)
        out[mt] = (v, b)
    return out


def derived(v: np.ndarray, reps: np.ndarray) -> dict:
    """Per-layer SNR, the gain over layer 0 and its SNR, the depth centroid and its replicate sd."""
    from probekit.profiles.metrics import depth_centroid
    sd = reps.std(0, ddof=1)
    g = v - v[0]
    gl = int(np.nanargmax(g[1:]) + 1)
    gain_sd = float(np.std(reps[:, gl] - reps[:, 0], ddof=1))
    c = depth_centroid(v)
    rc = depth_centroid(reps)
    return {"value": v.tolist(), "sd": sd.tolist(), "snr": ((v - 0.5) / sd).tolist(),
            "gain_layer": gl, "gain": float(g[gl]), "gain_sd": gain_sd, "gain_snr": float(g[gl] / gain_sd),
            "centroid": float(c), "centroid_sd": float(np.nanstd(rc, ddof=1)),
            "centroid_nan_share": float(np.mean(np.isnan(rc)))}


def compare(d: dict) -> dict:
    ba, au = d["balanced_accuracy"], d["auc"]
    r = np.asarray(au["snr"]) / np.asarray(ba["snr"])
    ok = np.asarray(ba["snr"]) > 2                       # layers where BA itself is clearly above chance
    sdr = np.asarray(au["sd"]) / np.asarray(ba["sd"])
    out = {"snr_ratio_median": float(np.median(r)),
           "snr_ratio_median_ba_snr_gt2": float(np.median(r[ok])) if ok.any() else None,
           "n_layers_ba_snr_gt2": int(ok.sum()),
           "sd_ratio_median": float(np.median(sdr)),
           "gain_snr_ratio": au["gain_snr"] / ba["gain_snr"],
           "centroid_precision_ratio": ba["centroid_sd"] / au["centroid_sd"]}
    out["stimuli_factor_per_layer"] = out["snr_ratio_median"] ** 2
    out["stimuli_factor_gain"] = out["gain_snr_ratio"] ** 2
    out["stimuli_factor_centroid"] = out["centroid_precision_ratio"] ** 2
    return out


def null_size(acts, primary: list[str], n_perm: int, layers, seed: int = 0) -> dict:
    """The permutation null of the pipeline's shuffled copy of the first primary label, both metrics."""
    from probekit.pipeline import SHUFFLED_PREFIX, with_shuffled_controls
    from probekit.probes.grid import probe_grid
    lab = SHUFFLED_PREFIX + primary[0]
    a2 = with_shuffled_controls(acts, primary, seed)
    res = probe_grid(a2, [lab], n_permutations=n_perm, n_bootstrap=0, control_task=False, surface_baseline=False,
                     components=(RESID,), layers=layers, seed=seed, n_threads=1, n_jobs=1, metrics=("auc",),
                     progress=False)
    out = {"label": lab, "n_permutations": n_perm, "scheme": res.meta["perm_scheme"]}
    for mt in METRICS:
        s = res.scores[(res.scores.metric == mt)].sort_values("layer")
        out[mt] = {"observed_mean": float(s.value.mean()), "null_mean": float(s.null_mean.mean()),
                   "null_mean_minus_chance": float(s.null_mean.mean() - 0.5),
                   "share_p_lt_0.05": float((s.p_value < 0.05).mean()), "min_p_fwer": float(s.p_fwer.min()),
                   "n_layers": int(len(s))}
    return out


def cvseed_noise(acts, primary: list[str], n_seeds: int, n_boot: int, layers=None) -> dict:
    """The noise of the CV split itself, which the reweighting bootstrap leaves out, per metric: the sd over
    ``n_seeds`` other fold seeds (same data, refit; the shuffled copy redrawn as the pipeline would) of the
    experiment profile, over the reweighting sd (``kappa_cvseed``; sqrt(1 + kappa^2) is the inflation the
    split alone asks of the reweighting intervals), and the same for the gain and the centroid."""
    from benchmarks.calibration.measure_noise import grid_labels
    from probekit.pipeline import with_shuffled_controls
    from probekit.probes.grid import probe_grid
    from probekit.profiles.metrics import depth_centroid
    profs = {mt: [] for mt in METRICS}
    for k in range(n_seeds + 1):
        seed = 0 if k == 0 else 5_000 + k
        a2 = with_shuffled_controls(acts, primary, seed)
        res = probe_grid(a2, grid_labels(a2.stimuli, primary), n_permutations=0, n_bootstrap=0, control_task=False,
                         surface_baseline=False, components=(RESID,), layers=layers, seed=seed, n_threads=1,
                         n_jobs=1, metrics=("auc",), progress=False)
        if k == 0:
            if layers is not None:
                for p in res.predictions.values():
                    p.oof = p.oof[list(layers)]
            base = profiles(res, primary, n_boot)
            continue
        for mt in METRICS:
            profs[mt].append(np.mean([res.profile(l, RESID, mt).value.to_numpy() for l in primary], axis=0))
    out = {"n_seeds": n_seeds}
    for mt in METRICS:
        P = np.asarray(profs[mt])
        v, reps = base[mt]
        sd_rw = reps.std(0, ddof=1)
        sd_cv = P.std(0, ddof=1)
        gl = int(np.nanargmax((v - v[0])[1:]) + 1)
        out[mt] = {"kappa_cvseed_median": float(np.median(sd_cv / sd_rw)),
                   "sd_cvseed_median": float(np.median(sd_cv)), "sd_reweight_median": float(np.median(sd_rw)),
                   "gain_sd_cvseed": float(np.std(P[:, gl] - P[:, 0], ddof=1)),
                   "gain_sd_reweight": float(np.std(reps[:, gl] - reps[:, 0], ddof=1)),
                   "centroid_sd_cvseed": float(np.nanstd(depth_centroid(P), ddof=1)),
                   "centroid_sd_reweight": float(np.nanstd(depth_centroid(reps), ddof=1))}
        # total noise of one run ~ reweighting and split variances added: the SNRs on that noise
        tot = np.sqrt(sd_rw ** 2 + sd_cv ** 2)
        out[mt]["snr_total"] = ((v - 0.5) / tot).tolist()
        out[mt]["gain_snr_total"] = float((v[gl] - v[0]) / np.hypot(out[mt]["gain_sd_cvseed"],
                                                                     out[mt]["gain_sd_reweight"]))
    ba, au = out["balanced_accuracy"], out["auc"]
    r = np.asarray(au["snr_total"]) / np.asarray(ba["snr_total"])
    ok = np.asarray(ba["snr_total"]) > 2
    out["snr_total_ratio_median"] = float(np.median(r))
    out["snr_total_ratio_median_ba_snr_gt2"] = float(np.median(r[ok])) if ok.any() else None
    out["gain_snr_total_ratio"] = au["gain_snr_total"] / ba["gain_snr_total"]
    out["centroid_precision_ratio_total"] = float(
        np.hypot(ba["centroid_sd_cvseed"], ba["centroid_sd_reweight"])
        / np.hypot(au["centroid_sd_cvseed"], au["centroid_sd_reweight"]))
    return out


def measure(model, exp_name: str, n_boot: int, layers=None) -> dict:
    import probekit
    from benchmarks.calibration.measure_noise import folds_match, grid_labels
    from probekit.pipeline import with_shuffled_controls
    from probekit.probes.grid import probe_grid
    from probekit.studies.bogdan2025.experiments import EXPERIMENTS
    exp = EXPERIMENTS[exp_name]
    t0 = time.perf_counter()
    acts = exp.activations(probekit.extract(model, exp.stimulus_frame(), store=True, progress=False))
    t_ext = time.perf_counter() - t0
    stim = acts.stimuli
    primary = exp.primary_labels(stim)
    a2 = with_shuffled_controls(acts, primary, 0)
    labels = grid_labels(a2.stimuli, primary)            # the pipeline's folds for the primary labels
    if not folds_match(stim, primary):
        raise RuntimeError(f"{exp_name}: this script's folds differ from the pipeline's (measure_noise.grid_labels)")
    t1 = time.perf_counter()
    res = probe_grid(a2, labels, n_permutations=0, n_bootstrap=0, control_task=False, surface_baseline=False,
                     components=(RESID,), layers=layers, seed=0, n_threads=1, n_jobs=1, metrics=("auc",),
                     progress=False)
    if layers is not None:                               # a quick run: the profile on the fitted layers only
        res.scores = res.scores[res.scores.layer.isin(layers)]
        for p in res.predictions.values():
            p.oof = p.oof[list(layers)]
    prof = profiles(res, primary, n_boot)
    d = {mt: derived(*prof[mt]) for mt in METRICS}
    out = {"model": model.name, "experiment": exp_name, "n_stimuli": len(stim),
           "n_groups": int(stim["group"].nunique()), "n_layers": acts.n_layers, "primary": primary,
           "labels_fitted": labels, "metrics": d, "compare": compare(d),
           "timing_s": {"extract": round(t_ext, 1), "grid": round(time.perf_counter() - t1, 1)}}
    log(f"{model.name} {exp_name}: SNR ratio AUC/BA median {out['compare']['snr_ratio_median']:.2f}, "
        f"gain {out['compare']['gain_snr_ratio']:.2f}, centroid {out['compare']['centroid_precision_ratio']:.2f}")
    return out, acts, primary


ORDERINGS = (("relations", "items"), ("analogies", "relations"))     # the claims' depth orderings: deep, shallow


def orderings(runs: list[dict]) -> list[dict]:
    """The depth orderings' statistic per metric: the centroid difference deep - shallow over its sd (the two
    sets' replicates are independent, so the sds add in quadrature, as ``depth_difference``'s pairing of
    replicate r with replicate r does in expectation)."""
    by = {(r["model"], r["experiment"]): r["metrics"] for r in runs}
    out = []
    for model in dict.fromkeys(r["model"] for r in runs):
        for deep, shallow in ORDERINGS:
            if (model, deep) not in by or (model, shallow) not in by:
                continue
            row = {"model": model, "deep": deep, "shallow": shallow}
            for mt in METRICS:
                a, b = by[(model, deep)][mt], by[(model, shallow)][mt]
                diff, sd = a["centroid"] - b["centroid"], float(np.hypot(a["centroid_sd"], b["centroid_sd"]))
                row[mt] = {"difference": diff, "sd": sd, "snr": diff / sd}
            row["snr_ratio"] = row["auc"]["snr"] / row["balanced_accuracy"]["snr"]
            row["precision_ratio"] = row["balanced_accuracy"]["sd"] / row["auc"]["sd"]
            out.append(row)
    return out


def f(x, k=2):
    return "–" if x is None or not np.isfinite(x) else f"{x:.{k}f}"


def markdown(result: dict) -> str:
    L = [
        "# AUC of the probe margins beside balanced accuracy (issue 18, item 7)",
        "",
        "Generated by `benchmarks/calibration/auc_vs_ba.py` (numbers in `benchmarks/calibration/auc_vs_ba.json`); "
        f"{result['n_boot']} group-bootstrap (reweighting) replicates, the same weights for both metrics; "
        "component `resid_pre`; each experiment's primary labels, averaged as the claims average them; the "
        "pipeline's folds. Balanced accuracy (BA) is the share of correct signs of the out-of-fold margins, "
        "class-balanced; AUC is the ROC AUC of the same margins (ties half). Both have chance 0.5.",
        "",
        "How to read it: SNR = (value − 0.5) / replicate sd per layer; the ratio is AUC's over BA's. An SNR "
        "ratio r is worth r² times the stimuli at the same power (the SE falls as 1/√n). For the derived "
        "statistics: the peak gain over layer 0 (each metric at its own gain layer) over the replicate sd of "
        "that difference, and the depth centroid's precision ratio sd(BA) / sd(AUC).",
        "",
        "AUC is opt-in: `probe_grid(..., metrics=(\"auc\",))` (or `probe_kw={\"metrics\": [\"auc\"]}`) adds its "
        "rows to `scores` (value, bootstrap CI, permutation p-values, control task, surface baseline) and "
        "leaves every existing number bit-identical (`tests/test_auc.py`); "
        "`ProbeResults.bootstrap_profiles(label, component, \"auc\")` redraws AUC replicates from any saved "
        "result, also one computed without it.",
        "",
        "## Signal-to-noise, AUC over BA",
        "",
        "| model | experiment | n | layers | SNR ratio per layer (median) | same, layers with BA SNR > 2 | "
        "sd ratio AUC/BA (median) | gain SNR BA → AUC (ratio) | centroid sd BA → AUC (precision ratio) | "
        "stimuli worth (per layer / gain / centroid) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        c, m = r["compare"], r["metrics"]
        ba, au = m["balanced_accuracy"], m["auc"]
        L.append(f"| {r['model']} | {r['experiment']} | {r['n_stimuli']} | {r['n_layers']} | "
                 f"{f(c['snr_ratio_median'])} | {f(c['snr_ratio_median_ba_snr_gt2'])} ({c['n_layers_ba_snr_gt2']}) | "
                 f"{f(c['sd_ratio_median'])} | {f(ba['gain_snr'], 1)} → {f(au['gain_snr'], 1)} "
                 f"({f(c['gain_snr_ratio'])}) | {f(ba['centroid_sd'], 3)} → {f(au['centroid_sd'], 3)} "
                 f"({f(c['centroid_precision_ratio'])}) | {f(c['stimuli_factor_per_layer'])}× / "
                 f"{f(c['stimuli_factor_gain'])}× / {f(c['stimuli_factor_centroid'])}× |")
    L += ["", "The depth orderings (`relations_deeper`, `analogies_deeper`): centroid difference deep − shallow over "
          "its sd (independent sets: the sds in quadrature).", "",
          "| model | ordering | BA: difference / sd / SNR | AUC: difference / sd / SNR | precision ratio sd BA/AUC "
          "| SNR ratio AUC/BA |", "|---|---|---|---|---|---|"]
    for o in orderings(result["runs"]):
        ba, au = o["balanced_accuracy"], o["auc"]
        L.append(f"| {o['model']} | {o['deep']} − {o['shallow']} | {f(ba['difference'], 3)} / {f(ba['sd'], 3)} / "
                 f"{f(ba['snr'], 1)} | {f(au['difference'], 3)} / {f(au['sd'], 3)} / {f(au['snr'], 1)} | "
                 f"{f(o['precision_ratio'])} | {f(o['snr_ratio'])} |")
    L += ["", "## Per-layer values (value ± replicate sd)", ""]
    for r in result["runs"]:
        ba, au = r["metrics"]["balanced_accuracy"], r["metrics"]["auc"]
        L += [f"**{r['model']} / {r['experiment']}** (gain layer BA {ba['gain_layer']}, AUC {au['gain_layer']}; "
              f"centroid BA {f(ba['centroid'], 3)}, AUC {f(au['centroid'], 3)})", "",
              "| layer | BA | sd | SNR | AUC | sd | SNR | ratio |", "|---|---|---|---|---|---|---|---|"]
        for i in range(len(ba["value"])):
            L.append(f"| {i} | {f(ba['value'][i], 3)} | {f(ba['sd'][i], 3)} | {f(ba['snr'][i], 1)} | "
                     f"{f(au['value'][i], 3)} | {f(au['sd'][i], 3)} | {f(au['snr'][i], 1)} | "
                     f"{f(au['snr'][i] / ba['snr'][i])} |")
        L.append("")
    n = result.get("null")
    if n:
        L += ["## The permutation null of AUC (one shuffled label)", "",
              f"{n['model']} / {n['experiment']}, label `{n['label']}` (the pipeline's shuffled control copy), "
              f"{n['n_permutations']} permutations ({', '.join(f'{k}: {v}' for k, v in n['scheme'].items())}), "
              f"{n['balanced_accuracy']['n_layers']} layers.", "",
              "| metric | observed mean | null mean | null − 0.5 | share of layers p < 0.05 | min p_fwer |",
              "|---|---|---|---|---|---|"]
        for mt in METRICS:
            x = n[mt]
            L.append(f"| {SHORT[mt]} | {f(x['observed_mean'], 3)} | {f(x['null_mean'], 3)} | "
                     f"{f(x['null_mean_minus_chance'], 3)} | {f(x['share_p_lt_0.05'])} | {f(x['min_p_fwer'], 3)} |")
        L.append("")
    if result.get("cvseed"):
        L += ["## The split's own noise (fold seeds)", "",
              "The reweighting bootstrap leaves out the CV split's noise. Refit with other fold seeds (same data): "
              "κ_cvseed = sd over seeds / reweighting sd (median over layers), per metric; then the SNR ratios "
              "on the total noise of one run (reweighting and split variances added).", "",
              "| model | experiment | seeds | κ_cvseed BA | κ_cvseed AUC | gain sd split BA / AUC | "
              "centroid sd split BA / AUC | SNR ratio per layer, total noise (all / BA SNR > 2) | "
              "gain SNR ratio, total | centroid precision ratio, total |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for c in result["cvseed"]:
            ba, au = c["balanced_accuracy"], c["auc"]
            L.append(f"| {c['model']} | {c['experiment']} | {c['n_seeds']} | {f(ba['kappa_cvseed_median'])} | "
                     f"{f(au['kappa_cvseed_median'])} | {f(ba['gain_sd_cvseed'], 3)} / {f(au['gain_sd_cvseed'], 3)} | "
                     f"{f(ba['centroid_sd_cvseed'], 3)} / {f(au['centroid_sd_cvseed'], 3)} | "
                     f"{f(c['snr_total_ratio_median'])} / {f(c['snr_total_ratio_median_ba_snr_gt2'])} | "
                     f"{f(c['gain_snr_total_ratio'])} | {f(c['centroid_precision_ratio_total'])} |")
        L.append("")
    L += ["## Cost", "", result.get("cost_note", ""), "", "## Reading", "", result.get("reading", ""), "",
          f"_{result['machine']}; {result['elapsed_s']:.0f} s._", ""]
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--experiments", default="items,relations,analogies")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--n-perm", type=int, default=100, help="permutations of the one null-size check (0: none)")
    ap.add_argument("--null", default="smollm2-135m:relations", help="model:experiment of the null-size check")
    ap.add_argument("--n-cvseed", type=int, default=10, help="fold seeds of the split-noise check (0: none)")
    ap.add_argument("--cvseed-on", default="smollm2-135m:relations,gemma3-270m:analogies",
                    help="model:experiment pairs of the split-noise check")
    ap.add_argument("--quick", action="store_true", help="smoke run: smollm2-135m, relations, 6 layers")
    ap.add_argument("--md", default=str(ROOT / "docs" / "auc_vs_ba.md"))
    ap.add_argument("--json", default=str(HERE / "auc_vs_ba.json"))
    ap.add_argument("--notes", default=None, help="a JSON file with 'cost_note' and 'reading' texts for the page")
    ap.add_argument("--from-json", default=None, help="only rewrite the page from a saved JSON")
    a = ap.parse_args(argv)
    if a.from_json:
        result = json.loads(Path(a.from_json).read_text())
        _finish(result, a, json_out=a.from_json if a.notes else None)
        return
    import probekit
    t0 = time.perf_counter()
    if a.quick:
        a.models, a.experiments, a.n_perm, a.n_cvseed = "smollm2-135m", "relations", 19, 2
        a.cvseed_on = "smollm2-135m:relations"
    null_model, null_exp = a.null.split(":")
    cv_on = set(a.cvseed_on.split(",")) if a.n_cvseed else set()
    result = {"n_boot": a.n_boot, "runs": [], "null": None, "cvseed": [],
              "machine": f"{platform.machine()} {platform.python_version()}, numpy {np.__version__}"}
    for name in a.models.split(","):
        model = probekit.load_model(name)
        for e in a.experiments.split(","):
            layers = list(range(6)) if a.quick else None
            run, acts, primary = measure(model, e, a.n_boot, layers)
            result["runs"].append(run)
            if a.n_perm and (a.quick or (name == null_model and e == null_exp)):
                log(f"null size: {name} {e}, {a.n_perm} permutations")
                result["null"] = dict(null_size(acts, primary, a.n_perm, layers), model=name, experiment=e)
            if f"{name}:{e}" in cv_on:
                log(f"split noise: {name} {e}, {a.n_cvseed} fold seeds")
                result["cvseed"].append(dict(cvseed_noise(acts, primary, a.n_cvseed, a.n_boot, layers),
                                             model=name, experiment=e))
    result["elapsed_s"] = time.perf_counter() - t0
    _finish(result, a, json_out=a.json)


def _finish(result: dict, a, json_out) -> None:
    """The orderings and the notes into ``result``; the JSON (when ``json_out``) and the page written, the page
    printed."""
    from probekit.core.atomic import atomic_write_text
    result["orderings"] = orderings(result["runs"])
    if a.notes:
        result.update(json.loads(Path(a.notes).read_text()))
    if json_out:
        atomic_write_text(Path(json_out), json.dumps(result, indent=1))
    page = markdown(result)
    atomic_write_text(Path(a.md), page)
    print(page)


if __name__ == "__main__":
    main()
