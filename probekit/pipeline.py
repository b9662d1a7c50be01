"""The whole replication for one model: stimuli -> activations -> probes, cached at each stage.

``replicate("smollm2-135m")`` loads the model, extracts every experiment's
activations through the activation store, fits the probe grid (with controls and
bootstraps) and returns a :class:`Replication`. Probe results are cached too,
keyed by the activation entry, the stimulus set's full content hash (labels
included), the probe settings and the probekit version, so a warm run costs a
model load and some parquet reads.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .atomic import atomic_directory
from .experiments import EXPERIMENTS, Experiment

DEFAULT_PROBE = dict(n_splits=6, n_permutations=100, n_bootstrap=1000, control_task=True, seed=0)


@dataclass
class Replication:
    model: str
    n_layers: int
    d_model: int
    markers: tuple[str, ...]
    fingerprint: str
    results: dict = field(default_factory=dict)        # experiment name -> ProbeResults
    timings: dict = field(default_factory=dict)

    def scores(self) -> pd.DataFrame:
        """One tidy table: every experiment's scores with model/experiment columns."""
        parts = []
        for name, res in self.results.items():
            d = res.scores.copy()
            d.insert(0, "experiment", name)
            d.insert(0, "model", self.model)
            parts.append(d)
        return pd.concat(parts, ignore_index=True)

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write probes/<experiment>/, scores.parquet and replication.json into ``out_dir``.

        Everything is written into a temporary sibling first and swapped in, so a
        crash leaves either the previous results or the new ones, never a mix."""
        out = Path(out_dir)
        owned = ("probes", "scores.parquet", "replication.json")
        with atomic_directory(out, keep=lambda name: name not in owned) as tmp:   # keeps figures, reports
            for name, res in self.results.items():
                res.save(tmp / "probes" / name)
            self.scores().to_parquet(tmp / "scores.parquet", index=False)
            meta = {"model": self.model, "n_layers": self.n_layers, "d_model": self.d_model,
                    "markers": list(self.markers), "fingerprint": self.fingerprint,
                    "probekit_version": __version__, "timings": self.timings,
                    "experiments": list(self.results)}
            (tmp / "replication.json").write_text(json.dumps(meta, indent=1))
        return out

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Replication":
        from .probes import ProbeResults
        out = Path(out_dir)
        meta = json.loads((out / "replication.json").read_text())
        rep = cls(meta["model"], meta["n_layers"], meta["d_model"], tuple(meta["markers"]), meta["fingerprint"],
                  timings=meta.get("timings", {}))
        for name in meta["experiments"]:
            rep.results[name] = ProbeResults.load(out / "probes" / name)
        return rep


def _results_key(acts, stimuli: pd.DataFrame, probe_kw: dict, primary: list[str]) -> str:
    from .hashing import frame_hash
    from .probes import SOLVER_VERSION
    blob = json.dumps({"activations": acts.meta.get("store") and Path(acts.meta["store"]).name,
                       "fingerprint": acts.meta.get("model_fingerprint"), "pooling": acts.pooling,
                       "stimuli": frame_hash(stimuli, sorted(stimuli.columns)), "probe": probe_kw,
                       "primary": primary, "version": __version__, "solver": SOLVER_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


SHUFFLED_PREFIX = "shuffled_"


def with_shuffled_controls(acts, primary: list[str], seed: int = 0):
    """The same activations with one shuffled copy of each primary label (``shuffled_<label>``).

    The copy is permuted with the group structure respected
    (:func:`probekit.stats.group_permutations`) and then goes through exactly the
    same probe code as the real label: the shuffled-label control of claim 7.
    """
    import dataclasses

    from .stats import group_permutations
    stim = acts.stimuli.copy()
    specs = dict(acts.stimuli.attrs.get("labels", {}))
    rng = np.random.default_rng(seed + 7919)
    for name in primary:
        spec = specs[name]
        y = stim[name].to_numpy()
        ok = ~pd.isna(y)
        col = np.full(len(stim), np.nan)
        perm, _ = group_permutations(y[ok].astype(float), stim[spec.get("group", "group")].to_numpy()[ok], 1, rng)
        col[ok] = perm[:, 0]
        stim[SHUFFLED_PREFIX + name] = col
        specs[SHUFFLED_PREFIX + name] = dict(spec, role="control",
                                             description=f"{name}, permuted across/within CV groups (control)")
    stim.attrs = dict(acts.stimuli.attrs, labels=specs)
    return dataclasses.replace(acts, stimuli=stim)


def probe_experiment(acts, exp: Experiment, probe_kw: dict | None = None, cache: bool | str = True):
    """Probe grid for one experiment's activations, cached under ``<cache_dir>/results``."""
    from .models import cache_dir
    from .probes import ProbeResults, probe_grid
    probe_kw = dict(DEFAULT_PROBE, **(probe_kw or {}))
    stim = acts.stimuli
    primary = exp.primary_labels(stim)
    path = None
    if cache and acts.meta.get("store"):
        root = cache_dir() / "results" if cache is True else Path(cache)
        path = root / _results_key(acts, stim, probe_kw, primary)
        if (path / "meta.json").exists():
            try:
                return ProbeResults.load(path)
            except Exception:            # unreadable: recompute below
                shutil.rmtree(path, ignore_errors=True)
    res = probe_grid(with_shuffled_controls(acts, primary, probe_kw["seed"]), **probe_kw)
    res.meta["primary"] = primary
    res.meta["experiment"] = exp.name
    if path is not None:
        with atomic_directory(path) as tmp:
            res.save(tmp)
    return res


def replicate(model, experiments=None, *, store=True, probe_kw: dict | None = None, batch_size: int = 32,
              dtype="auto", device="auto", stream_layers="auto", progress: bool | None = None,
              log=print) -> Replication:
    """Run ``experiments`` (default: all of :data:`EXPERIMENTS`) on ``model`` (an alias, path, or LoadedModel).

    ``dtype`` / ``device`` / ``stream_layers``: ``"auto"`` chooses by :func:`probekit.placement.plan_placement`
    (CUDA + bf16 with a GPU; else CPU in a dtype that fits; layer-streamed when it does not fit)."""
    from .extraction import extract
    from .models import LoadedModel, load_model
    t0 = time.perf_counter()
    if not isinstance(model, LoadedModel):
        model = load_model(model, dtype=dtype, device=device, stream_layers=stream_layers)
        if log and getattr(model, "placement", None) is not None:
            log(f"[{model.name}] placement: {model.placement}")
    timings = {"load_model_s": round(time.perf_counter() - t0, 2)}
    rep = Replication(model.name, model.n_layers, model.d_model, model.markers, model.fingerprint, timings=timings)
    names = list(experiments or EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise KeyError(f"unknown experiment(s) {unknown}; known: {sorted(EXPERIMENTS)}")
    if getattr(model, "streamed", False):   # one streamed pass for every experiment: each weight read once
        model.plan([EXPERIMENTS[n].stimuli() for n in names], batch_size=batch_size, store=store)
    for name in names:
        exp = EXPERIMENTS[name]
        t = time.perf_counter()
        acts = extract(model, exp.stimuli(), batch_size=batch_size, store=store, progress=progress)
        t_ex = time.perf_counter() - t
        t = time.perf_counter()
        rep.results[name] = probe_experiment(acts, exp, probe_kw, cache=bool(store))
        t_pr = time.perf_counter() - t
        timings[name] = {"extract_s": round(t_ex, 2), "probe_s": round(t_pr, 2), "n_stimuli": len(acts)}
        if log:
            log(f"[{model.name}] {name}: {len(acts)} stimuli, extract {t_ex:.1f} s, probes {t_pr:.1f} s")
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    return rep
