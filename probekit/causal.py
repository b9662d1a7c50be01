"""Causal checks: do the layers the probes point at matter to the model? (docs/causal.md, issue 22)

A causal claim of a study declares a :class:`LayerSetPlan` (its attribute ``causal``): for one experiment,
mean-ablate ``attn_out`` and ``mlp_out`` (by token position) over the ``k`` blocks around the experiment's
probe peak, and over
``n_random`` sets of ``k`` blocks drawn at random, and read out, under each, the experiment's decodability at
the last layer and the model's log-likelihood of each text's last token (for "A church and organ": the second
item given the first), from one forward pass per set
(:func:`probekit.extraction.readout.readout`). The claim then ranks the peak set's damage among the random
sets' (a randomization test, exact by construction: :mod:`probekit.studies.bogdan2025.causal`).

:func:`run_causal` runs every plan of a study on a loaded model, given the ordinary run's probe results (the
peak comes from them), and returns plain data (lists and numbers, saved as ``causal.json`` in the run's
folder beside ``replication.json``); claims read it through ``ReplicationEvidence.causal``.

Stages: stimuli -> extraction (under interventions) -> probes (one layer per set) -> here -> claims.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from probekit.core.activations import ActivationSet
from probekit.core.version import __version__
from probekit.extraction.interventions import Intervention, MeanAblation
from probekit.extraction.readout import readout, set_means
from probekit.probes.grid import probe_grid
from probekit.profiles.metrics import central
from probekit.stimuli.experiments import experiment_profile

CAUSAL_FILE = "causal.json"
#: what a plan computes, for the cache key: bump it when that changes (1: means pooled over positions;
#: 2: means by token position, the last token's log p; 3: the unablated profile probed with the read-out's folds)
CAUSAL_VERSION = 3
#: the probe settings of the per-set read-out (the pipeline's folds and seed; no permutations, no
#: bootstrap, no controls: the test is the ranking over layer sets, not a per-cell p-value)
READOUT_PROBE = dict(n_splits=6, seed=0, n_permutations=0, n_bootstrap=0, control_task=False,
                     surface_baseline=False)
PROFILE_BOOTSTRAP = 200          # replicates of the peak set's whole intervened profile (the figure's band)


@dataclass(frozen=True)
class LayerSetPlan:
    """What a layer-set claim runs: ``experiment``'s probe peak (argmax of its primary-label mean profile on
    ``resid_pre``) -> the ``k`` blocks centred on it (``k = max(2, round(L * k_fraction))``); ``n_random``
    further sets of ``k`` distinct blocks drawn uniformly (seed ``seed``) from the blocks that can reach the
    read-out (``0 .. L-2``), none equal to the peak set; under each, ``attn_out`` and ``mlp_out`` of those
    blocks mean-ablated *by token position* (at token ``t``, the mean at ``t`` over the experiment's own texts:
    a model's first-token attention sink keeps its massive activation there, instead of a pooled mean
    spreading it to every token and freezing the stream, docs/causal.md) and the read-out taken at
    ``resid_pre`` of the last layer. ``n_random = 39`` makes a rank p of 0.05 reachable with one random set
    at least as damaging (p = (1 + #)/(1 + n_random))."""
    experiment: str
    n_random: int = 39
    k_fraction: float = 0.1
    seed: int = 0
    span: str = "last"               # the behavioural read-out: log p of each text's last token (readout.SPANS)

    def k(self, n_layers: int) -> int:
        return max(2, int(round(n_layers * self.k_fraction)))


def peak_window(peak: int, k: int, n_layers: int) -> tuple[int, ...]:
    """The ``k`` blocks centred on ``peak`` (``peak - k // 2`` onwards), shifted to lie in ``0 .. L-2``."""
    hi = n_layers - 2
    start = min(max(0, peak - k // 2), hi - k + 1)
    return tuple(range(start, start + k))


def random_sets(n_layers: int, k: int, n: int, seed: int, exclude: tuple[int, ...]) -> list[tuple[int, ...]]:
    """``n`` distinct sets of ``k`` blocks from ``0 .. L-2`` (sorted tuples), none equal to ``exclude``."""
    from math import comb
    pool = n_layers - 1
    if comb(pool, k) - 1 < n:
        raise ValueError(f"only {comb(pool, k) - 1} sets of {k} of {pool} blocks besides the peak set; "
                         f"{n} random sets asked for")
    rng = np.random.default_rng(seed)
    seen, out = {tuple(exclude)}, []
    while len(out) < n:
        s = tuple(sorted(int(x) for x in rng.choice(pool, size=k, replace=False)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def ablation(blocks: tuple[int, ...], means: dict) -> Intervention:
    """Mean-ablate ``attn_out`` and ``mlp_out`` at ``blocks`` with the set's position-wise means."""
    return Intervention(tuple(MeanAblation(c, blocks, means={l: means[(l, c)] for l in blocks}, by_position=True)
                              for c in ("attn_out", "mlp_out")))


def decodability(stimuli: pd.DataFrame, arrays: dict, n_layers: int, labels: list[str], layers,
                 n_bootstrap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The probe's balanced accuracy (mean over ``labels``) at each of ``layers`` from pooled ``resid_pre``
    vectors ``arrays[(layer, 'resid_pre')]``: ``(values[len(layers)], replicates[B, len(layers)])``."""
    layers = list(layers)
    d = next(iter(arrays.values())).shape[1]
    acts = ActivationSet(stimuli=stimuli, n_layers=n_layers, d_model=d, model_name="causal",
                         _loader=lambda l, c: arrays[(l, c)], components=("resid_pre",))
    res = probe_grid(acts, labels, layers=layers, components=("resid_pre",),
                     **dict(READOUT_PROBE, n_bootstrap=n_bootstrap), progress=False)
    vals = np.mean([res.profile(l, "resid_pre", "balanced_accuracy").set_index("layer").value.loc[layers]
                    .to_numpy() for l in labels], axis=0)
    boot = (np.mean([res.bootstrap_profiles(l, "resid_pre", "balanced_accuracy") for l in labels], axis=0)
            if n_bootstrap else np.zeros((0, len(layers))))
    return vals, boot


def rank_test(peak: float, random) -> tuple[int, float, float]:
    """``(exceed, p, u_hat)``: random values at least as large as ``peak`` (ties against the claim), the
    randomization p ``(1 + exceed) / (1 + R)``, and the fraction of random values strictly below ``peak``."""
    random = np.asarray(random, float)
    exceed = int(np.sum(random >= peak - 1e-12))
    return exceed, (1 + exceed) / (1 + len(random)), float(np.mean(random < peak - 1e-12))


def drops(test: dict) -> tuple[np.ndarray, np.ndarray]:
    """A layer-set test's read-out drops (unablated minus ablated decodability) and log-likelihood drops,
    ``[0]`` the peak set's, then the random sets'."""
    return (test["ordinary_readout"] - np.asarray(test["readout_values"], float),
            -np.asarray(test["loglik_change"], float))


def layer_set_test(model, study, plan: LayerSetPlan, results, log=None) -> dict:
    """Run one plan on ``model`` (a LoadedModel, in memory) with the ordinary run's ``results`` (its
    ProbeResults by experiment; the peak comes from them): plain data for ``causal.json``. The unablated and
    the peak set's profiles are probed with the read-out's own folds, so the two curves of the figure, and
    the read-out, compare like with like. ``log``: a progress line every 10 sets."""
    t0 = time.perf_counter()
    exp = study.experiment(plan.experiment)
    res = results[plan.experiment]
    stim = exp.stimuli()
    labels = list(res.meta.get("primary") or exp.primary_labels(stim))
    L = model.n_layers
    peak = int(np.nanargmax(experiment_profile(res, exp, "resid_pre", labels)[0]))
    k = plan.k(L)
    peak_set = peak_window(peak, k, L)
    sets = random_sets(L, k, plan.n_random, plan.seed, peak_set)
    readout_layer = L - 1
    means = set_means(model, stim, [(l, c) for l in range(L - 1) for c in ("attn_out", "mlp_out")], by_position=True)
    every = [(l, "resid_pre") for l in range(L)]
    profiles = {}
    for name, iv in (("ordinary", None), ("peak", ablation(peak_set, means))):   # every layer: the figure
        ro = readout(model, stim, iv, keys=every, span=plan.span)
        v, boot = decodability(stim, ro.pooled, L, labels, range(L), n_bootstrap=PROFILE_BOOTSTRAP)
        profiles[name] = (v, *np.quantile(boot, central(), axis=0), ro.loglik)
    base_ll = profiles["ordinary"][3]
    values, ll = [float(profiles["peak"][0][readout_layer])], [float(np.mean(profiles["peak"][3] - base_ll))]
    key = (readout_layer, "resid_pre")
    for i, s in enumerate(sets, 1):
        r = readout(model, stim, ablation(s, means), keys=[key], span=plan.span)
        values.append(float(decodability(stim, r.pooled, L, labels, [readout_layer])[0][0]))
        ll.append(float(np.mean(r.loglik - base_ll)))
        if log and (i % 10 == 0 or i == len(sets)):
            log(f"[{model.name}] causal {plan.experiment}: {i}/{len(sets)} random sets, "
                f"{time.perf_counter() - t0:.0f} s")
    lists = {f"{name}_{part}": [float(x) for x in arr] for name, (v, lo, hi, _) in
             (("ordinary", profiles["ordinary"]), ("peak", profiles["peak"]))
             for part, arr in (("profile", v), ("lo", lo), ("hi", hi))}
    return dict(
        kind="layer_set", plan=asdict(plan), experiment=plan.experiment, span=plan.span, labels=labels, n_layers=L,
        k=k, peak_layer=peak, peak_set=list(peak_set), random_sets=[list(s) for s in sets],
        readout_layer=readout_layer, readout_component="resid_pre",
        intervention="mean-ablation of attn_out and mlp_out by token position (the set's means at each position)",
        ordinary_readout=lists["ordinary_profile"][readout_layer], readout_values=values, loglik_change=ll, **lists,
        n_stimuli=int(len(stim)), forward_passes=3 + len(sets), seconds=round(time.perf_counter() - t0, 2))


def plans_of(study) -> list[tuple[str, LayerSetPlan]]:
    """``(claim id, plan)`` for every claim of ``study`` that declares one."""
    return [(c.id, c.causal) for c in study.claims if getattr(c, "causal", None) is not None]


def check_plans(study, model_n_layers: int | None, experiments) -> None:
    """Refuse, before any pass, a study without causal claims, a plan whose experiment the run lacks or
    (given ``model_n_layers``) whose model has too few blocks for its random sets."""
    if not plans_of(study):
        raise ValueError(f"--causal: study {study.id} has no causal claims")
    for cid, plan in plans_of(study):
        if plan.experiment not in experiments:
            raise ValueError(f"--causal: claim {cid} needs experiment {plan.experiment!r}, which this run does not "
                             f"have; run it too (drop --experiments, or add {plan.experiment})")
        if model_n_layers is None:
            continue
        k = plan.k(model_n_layers)
        random_sets(model_n_layers, k, plan.n_random, plan.seed, peak_window(0, k, model_n_layers))


def run_causal(model, study, results, fingerprint: str = "", log=None) -> dict:
    """Every causal plan of ``study`` on ``model``: the data :class:`ReplicationEvidence` hands the causal
    claims (``{"tests": {claim id: ...}}``), with what was run and on which weights."""
    check_plans(study, model.n_layers, results)
    tests = {cid: layer_set_test(model, study, plan, results, log) for cid, plan in plans_of(study)}
    return {"model": model.name, "fingerprint": fingerprint, "probekit_version": __version__,
            "causal_version": CAUSAL_VERSION, "tests": tests}
