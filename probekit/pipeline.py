"""The whole replication for one model: stimuli -> activations -> probes, cached at each stage.

``replicate("smollm2-135m")`` loads the model, extracts every experiment's
activations through the activation store, fits the probe grid (with controls and
bootstraps) and returns a :class:`Replication`. Probe results are cached too,
keyed by the activation entry, the stimulus set's full content hash (labels
included), the probe settings and the probekit version, so a warm run costs a
model load and some parquet reads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.version import __version__
from probekit.core.activations import carry_metadata
from probekit.core.atomic import atomic_directory, atomic_write_json
from probekit.core.checks import DEFAULT_PROBE, check_probe_kw, count, usable_dir
from probekit.core.cost import announce as announce_cost
from probekit.stimuli.experiments import Experiment
from probekit.extraction.forward import DEFAULT_MAX_BATCH_TOKENS, extract
from probekit.core.hashing import dir_sha256, frame_hash, sha256_problem
from probekit.core.errors import ModelUnavailableError
from probekit.extraction.batching import ExtractionError, describe_stimulus
from probekit.models import checkpoint
from probekit.models.checkpoint import check_gguf, context_length
from probekit.models.loading import LoadedModel, load_model, parse_random, resolve
from probekit.models.streamed import StreamedModel
from probekit.probes.grid import SOLVER_VERSION, ProbeResults, probe_grid
from probekit.probes.solver import probe_backend
from probekit.models.registry import cache_dir
from probekit.probes.stats import group_permutations
from probekit.stimuli.sets import load as load_stimulus_set
from probekit.extraction.store import is_read_only_error
from .studies import BUILTIN, Study, load_study
from probekit.probes.transfer import transfer_scores
from probekit.causal import (CAUSAL_FILE, CAUSAL_VERSION, PROFILE_BOOTSTRAP, READOUT_PROBE, check_plans, plans_of,
                             run_causal)


@dataclass
class Replication:
    model: str
    n_layers: int
    d_model: int
    markers: tuple[str, ...]
    fingerprint: str
    results: dict = field(default_factory=dict)        # experiment name -> ProbeResults
    timings: dict = field(default_factory=dict)
    study: str = "bogdan2025"                           # the study: a shipped id or a study folder
    transfer: pd.DataFrame | None = None                # held-out transfer scores (probekit.probes.transfer)
    source: str = ""                                    # where the weights came from (LoadedModel.source)
    folder: str = ""                                    # its results folder under --out (cli.results_folder)
    causal: dict | None = None                          # the causal run's data (probekit.causal; causal.json)

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
        owned = ("probes", "scores.parquet", "replication.json", "transfer.parquet", CAUSAL_FILE)
        with atomic_directory(out, keep=lambda name: name not in owned) as tmp:   # keeps figures, reports
            for name, res in self.results.items():
                res.save(tmp / "probes" / name)
                write_checksums(tmp / "probes" / name)
            self.scores().to_parquet(tmp / "scores.parquet", index=False)
            if self.transfer is not None:
                self.transfer.to_parquet(tmp / "transfer.parquet", index=False)
            if self.causal is not None:        # a run without --causal drops an earlier run's causal.json
                (tmp / CAUSAL_FILE).write_text(json.dumps(self.causal, indent=1))
            meta = {"model": self.model, "n_layers": self.n_layers, "d_model": self.d_model,
                    "markers": list(self.markers), "fingerprint": self.fingerprint,
                    "probekit_version": __version__, "timings": self.timings,
                    "experiments": list(self.results), "study": self.study, "source": self.source,
                    "folder": self.folder or out.name}
            (tmp / "replication.json").write_text(json.dumps(meta, indent=1))
        return out

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Replication":
        """Read a saved run; :class:`SavedRunError` names the file and what to do when it is unusable."""
        out = Path(out_dir)
        rj = out / "replication.json"
        redo = f"rerun `probekit run --model ... --out {out.parent}` to rewrite it"
        try:
            meta = json.loads(rj.read_text())
            rep = cls(meta["model"], int(meta["n_layers"]), int(meta["d_model"]), tuple(meta["markers"]),
                      meta["fingerprint"], timings=meta.get("timings", {}), study=meta.get("study", "bogdan2025"),
                      source=meta.get("source", ""), folder=meta.get("folder", ""))
            names = list(meta["experiments"])
        except FileNotFoundError:
            raise SavedRunError(f"{out} has no replication.json (expected a directory written by `probekit run` "
                                f"or Replication.save)") from None
        except (ValueError, KeyError, TypeError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise SavedRunError(f"{rj} is corrupt ({type(exc).__name__}: {what}); {redo}") from None
        for name in names:
            d = out / "probes" / name
            if not d.is_dir():
                raise SavedRunError(f"{out}: replication.json lists experiment {name!r} but {d} is missing "
                                    f"(probes/ holds the saved probe results); {redo}")
            try:
                verify_checksums(d, required=False)
                rep.results[name] = ProbeResults.load(d)
            except ResultsCorruptError as exc:
                raise SavedRunError(f"{exc}; {redo}") from None
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise SavedRunError(f"{d}: unreadable probe results ({type(exc).__name__}: {exc}); {redo}") from None
        if (out / "transfer.parquet").exists():
            try:
                rep.transfer = pd.read_parquet(out / "transfer.parquet")
            except (OSError, ValueError) as exc:       # pyarrow's ArrowInvalid is a ValueError
                raise SavedRunError(f"{out / 'transfer.parquet'}: unreadable ({type(exc).__name__}: "
                                    f"{str(exc)[:200]}); {redo}") from None
        if (out / CAUSAL_FILE).exists():
            try:
                rep.causal = json.loads((out / CAUSAL_FILE).read_text())
                if rep.causal.get("fingerprint") != rep.fingerprint:
                    raise ValueError(f"it is of weights {rep.causal.get('fingerprint')!r}, the run of "
                                     f"{rep.fingerprint!r}")
            except (OSError, ValueError, AttributeError) as exc:
                raise SavedRunError(f"{out / CAUSAL_FILE}: unusable ({type(exc).__name__}: {str(exc)[:200]}); "
                                    f"rerun `probekit run --causal --model ... --out {out.parent}`") from None
        return rep


class SavedRunError(ValueError):
    """A saved run directory that cannot be read: says which file and what to do."""


class ResultsCorruptError(ValueError):
    """A saved probe-results directory failed its checksums."""


CHECKSUMS = "checksums.json"


def write_checksums(d: str | os.PathLike) -> None:
    """SHA256 of every file in ``d`` into ``d/checksums.json`` (atomically; written last)."""
    d = Path(d)
    atomic_write_json(d / CHECKSUMS, {"sha256": dir_sha256(d, skip={CHECKSUMS})}, fsync=True)


def verify_checksums(d: str | os.PathLike, required: bool = True) -> None:
    """Raise :class:`ResultsCorruptError` unless every file listed in ``d/checksums.json`` matches.

    ``required=False``: a directory without checksums (written before they existed) passes."""
    d = Path(d)
    try:
        sums = json.loads((d / CHECKSUMS).read_text())["sha256"]
    except FileNotFoundError:
        if required:
            raise ResultsCorruptError(f"{d}: no {CHECKSUMS} (incomplete or written by an older probekit)") from None
        return
    except (ValueError, KeyError, TypeError) as exc:
        raise ResultsCorruptError(f"{d / CHECKSUMS}: unreadable ({exc})") from None
    bad = sha256_problem(d, sums)
    if bad:
        raise ResultsCorruptError(f"{d / bad[0]}: " + ("missing" if bad[1] is None else
                                                       "checksum mismatch (the file changed after it was written)"))


def _key_hash(key: dict) -> str:
    """A cache entry's name: the sha256 of its key, canonical JSON, first 24 hex digits."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _results_key(acts, stimuli: pd.DataFrame, probe_kw: dict, primary: list[str]) -> str:
    return _key_hash({"activations": acts.meta.get("store") and Path(acts.meta["store"]).name,
                      "fingerprint": acts.meta.get("model_fingerprint"), "pooling": acts.pooling,
                      "stimuli": frame_hash(stimuli, sorted(stimuli.columns)), "probe": probe_kw,
                      "primary": primary, "version": __version__, "solver": SOLVER_VERSION})


SHUFFLED_PREFIX = "shuffled_"


def with_shuffled_controls(acts, primary: list[str], seed: int = 0):
    """The same activations with one shuffled copy of each primary label (``shuffled_<label>``).

    The copy is permuted with the group structure respected
    (:func:`probekit.probes.stats.group_permutations`) and then goes through exactly the
    same probe code as the real label: the shuffled-label control of claim 7.
    """
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
    return dataclasses.replace(acts, stimuli=carry_metadata(stim, acts.stimuli, labels=specs))


def _keyed_settings(probe_kw: dict) -> dict:
    """The probe settings as the results cache keys them: the solver backend resolved (``"auto"`` is numpy
    on one machine and CUDA on another), and the defaults of today's exact path (numpy, exact LOO) left out,
    so the keys of runs before these options existed still match."""
    kw = dict(probe_kw)
    backend = kw.pop("backend", "auto")
    backend = probe_backend(backend, bool(kw.get("precise")))
    if backend != "numpy":
        kw["backend"] = backend
    if kw.get("penalty_selection", "loo") == "loo":
        kw.pop("penalty_selection", None)
    extra = tuple(kw.pop("metrics", ()) or ())      # optional metrics: keyed only when asked for (sorted, no repeats)
    if extra:
        kw["metrics"] = sorted(set(extra))
    return kw


def probe_experiment(acts, exp: Experiment, probe_kw: dict | None = None, cache: bool | str = True):
    """Probe grid for one experiment's activations, cached under ``<cache_dir>/results``."""
    probe_kw = dict(DEFAULT_PROBE, **check_probe_kw(probe_kw))
    stim = acts.stimuli
    primary = exp.primary_labels(stim)
    path = None
    if cache and acts.meta.get("store"):
        root = cache_dir() / "results" if cache is True else Path(cache)
        usable_dir(root, f"probe-results cache {root}", write=False)        # a file in the way: say so
        path = root / _results_key(acts, stim, _keyed_settings(probe_kw), primary)
        if path.exists():
            try:
                verify_checksums(path)
                return ProbeResults.load(path)
            except Exception as exc:     # corrupt, partial or unreadable: recompute, never report it
                warnings.warn(f"probe-results cache: recomputing {path}: {exc}")
                shutil.rmtree(path, ignore_errors=True)
    announce_cost(acts, len(stim.attrs.get("labels", {})) + len(primary), probe_kw, exp.name)   # a large set: say so
    res = probe_grid(with_shuffled_controls(acts, primary, probe_kw["seed"]), **probe_kw)
    res.meta["primary"] = primary
    res.meta["experiment"] = exp.name
    if path is not None:
        try:
            with atomic_directory(path) as tmp:
                res.save(tmp)
                write_checksums(tmp)
        except OSError as exc:
            if not is_read_only_error(exc):
                raise
            warnings.warn(f"probe-results cache {path.parent} is read-only ({exc.strerror}): results not cached")
    return res


def stimulus_frames(study: Study, names) -> list[pd.DataFrame]:
    """Every stimulus set a run of ``names`` (experiments of ``study``) extracts: each experiment's whole set
    once, then the held-out sets of its transfers."""
    exps = [study.experiments[n] for n in names]
    frames = {e.stimulus_set: e.stimulus_frame() for e in exps}
    return list(frames.values()) + [load_stimulus_set(test) for train, test in study.transfers if train in names]


def token_bound(text: str, specials: int = 16) -> int:
    """An upper bound on the tokens any tokenizer gives ``text``: byte-level BPE and byte fallback make at most one
    token per UTF-8 byte, character vocabularies one per character; the bytes are counted after NFKC (the
    normaliser that expands most) and doubled for other normalisers, plus ``specials`` special tokens. A
    text under it needs no tokenizer to be known to fit (a text this misjudged is still refused at
    tokenisation, after the model loads)."""
    import unicodedata
    return 2 * max(len(text.encode()), len(unicodedata.normalize("NFKC", text).encode())) + specials


def check_stimulus_lengths(model: str, frames, max_tokens: int | None = None) -> None:
    """Before the model loads: refuse a stimulus with more tokens than ``model``'s context
    (``max_position_embeddings`` or its family's key in ``config.json``, the GGUF header's context length) or
    than ``max_tokens``, naming the set, the row (and ``id``), its length and what to do (was: found at
    tokenisation, after the weights had loaded). Only texts that :func:`token_bound` cannot clear are
    tokenized, with the tokenizer alone; a model that cannot be resolved here is left to its load."""
    try:
        name, kw = _gguf_location(str(model)) or resolve(str(model))
        ctx, where = context_length(kw)
    except ModelUnavailableError:
        return
    limit = f"model {name}'s context of {ctx} tokens ({where})"
    if max_tokens is not None and (ctx is None or max_tokens < ctx):
        ctx = count(max_tokens, "max_tokens", 1)
        limit = f"the stated limit of {ctx} tokens (max_tokens)"
    if ctx is None:
        return
    suspects = [(f, i) for f in frames for i, t in enumerate(f["text"]) if isinstance(t, str) and token_bound(t) > ctx]
    if not suspects:
        return
    tok = checkpoint.load_tokenizer(kw)   # by attribute: tests count its calls
    lengths = tok([f["text"].iloc[i] for f, i in suspects], add_special_tokens=True)["input_ids"]
    over = [(f, i, len(ids)) for (f, i), ids in zip(suspects, lengths) if len(ids) > ctx]
    if over:
        shown = "; ".join((f"set {f.attrs['name']!r} " if f.attrs.get("name") else "") + f"{describe_stimulus(i, f)}{n} "
                          f"tokens" for f, i, n in over[:5])
        more = f" (and {len(over) - 5} more)" if len(over) > 5 else ""
        raise ExtractionError(f"{len(over)} stimulus text(s) longer than {limit}: {shown}{more}; shorten or split "
                              f"these texts, or remove their rows")


def _gguf_location(model: str) -> tuple[str, dict] | None:
    """``(name, {"path", "gguf_file"})`` of a GGUF file given by path (or a folder holding one and no
    config.json), for the length check: what ``resolve`` says of it without hashing the whole file again."""
    base = Path(parse_random(model)[0]).expanduser()
    found = [base] if base.is_file() and base.suffix == ".gguf" else \
        sorted(base.glob("*.gguf")) if base.is_dir() and not (base / "config.json").exists() else []
    if len(found) != 1:
        return None
    check_gguf(found[0])
    return found[0].stem, {"path": str(found[0].parent), "gguf_file": found[0].name}


def replicate(model, experiments=None, *, study=None, store=True, probe_kw: dict | None = None, batch_size: int = 32,
              dtype="auto", device="auto", stream_layers="auto", progress: bool | None = None, log=print,
              max_batch_tokens: int | None = None, check_lengths: bool = True, causal: bool = False) -> Replication:
    """Run ``experiments`` (default: all of the study's) on ``model`` (an alias, path, or LoadedModel).

    ``study``: a :class:`~probekit.studies.Study`, a shipped study's id or a study folder (default
    ``bogdan2025``). ``dtype`` / ``device`` / ``stream_layers``: ``"auto"`` chooses by
    :func:`probekit.models.placement.plan_placement` (CUDA + bf16 with a GPU; else CPU in a dtype that fits;
    layer-streamed when it does not fit). ``check_lengths=False``: the caller has already run
    :func:`check_stimulus_lengths` on these experiments' texts for ``model`` (the CLI checks every model before
    the first one loads), so it is not run twice. ``causal=True``: then every causal claim's plan
    (:mod:`probekit.causal`) on the same model, into ``rep.causal`` (an in-memory model with its LM head: a
    layer-streamed one is refused before any extraction); cached in the store like the probes."""
    check_probe_kw(probe_kw)                         # every argument checked before the model is loaded
    batch_size = count(batch_size, "batch_size", 1)
    max_batch_tokens = DEFAULT_MAX_BATCH_TOKENS if max_batch_tokens is None else \
        count(max_batch_tokens, "max_batch_tokens", 1)
    study = study if isinstance(study, Study) else load_study(study)
    names = list(experiments or study.experiments)
    unknown = [n for n in names if n not in study.experiments]
    if unknown:
        raise KeyError(f"unknown experiment(s) {unknown} in study {study.id}; known: {sorted(study.experiments)}")
    if causal:
        check_plans(study, None, names)
    t0 = time.perf_counter()
    if not isinstance(model, LoadedModel):
        if check_lengths and isinstance(model, (str, os.PathLike)):   # a too-long text: before the weights load
            check_stimulus_lengths(model, stimulus_frames(study, names))
        model = load_model(model, dtype=dtype, device=device, stream_layers=stream_layers)
        if log and getattr(model, "placement", None) is not None:
            log(f"[{model.name}] placement: {model.placement}")
    timings = {"load_model_s": round(time.perf_counter() - t0, 2)}
    if causal:
        if isinstance(model, StreamedModel):
            raise ValueError(f"--causal: model {model.name} is layer-streamed, which never reads the LM head the "
                             f"behavioural read-out needs; run it in memory (--stream-layers 0) or without --causal")
        check_plans(study, model.n_layers, names)
    rep = Replication(model.name, model.n_layers, model.d_model, model.markers, model.fingerprint, timings=timings,
                      study=study.id if study.id in BUILTIN or not study.folder else str(study.folder),
                      source=str(getattr(model, "source", "") or ""))
    # each stimulus set goes through the model once: experiments that query the same set take their rows
    # of its activations (Experiment.activations)
    exps = [study.experiments[n] for n in names]
    sets = list(dict.fromkeys(e.stimulus_set for e in exps))
    transfers = [(train, test) for train, test in study.transfers if train in names]
    session = contextlib.nullcontext()
    if isinstance(model, StreamedModel):    # one streamed pass for every set: each weight read once
        frames = {e.stimulus_set: e.stimulus_frame() for e in exps}
        held = [load_stimulus_set(test) for _, test in transfers]
        session = model.planned([frames[s] for s in sets] + held, batch_size=batch_size, store=store)
    with session:                           # a streamed model's planned temporaries end with this run
        _extract_and_probe(rep, model, exps, transfers, batch_size, store, progress, max_batch_tokens, probe_kw, log)
    if causal:
        t = time.perf_counter()
        rep.causal = _causal(model, study, rep, store, log)
        timings["causal_s"] = round(time.perf_counter() - t, 2)
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    return rep


def causal_cache_path(fingerprint: str, study, results) -> Path:
    """Where :func:`_causal` caches a run's causal data: ``<cache_dir>/causal/<key>.json``."""
    plans = plans_of(study)
    root = cache_dir() / "causal"
    usable_dir(root, f"causal cache {root}", write=False)
    return root / (_key_hash({
        "fingerprint": fingerprint, "version": __version__, "solver": SOLVER_VERSION,
        "causal_version": CAUSAL_VERSION, "probe": READOUT_PROBE, "bootstrap": PROFILE_BOOTSTRAP,
        "plans": [[cid, dataclasses.asdict(p)] for cid, p in plans],
        "stimuli": {p.experiment: frame_hash(study.experiment(p.experiment).stimuli()) for _, p in plans},
        "scores": {p.experiment: frame_hash(results[p.experiment].scores) for _, p in plans}}) + ".json")


def _causal(model, study, rep, store, log) -> dict:
    """:func:`probekit.causal.run_causal`, cached like the probe results (``<cache_dir>/causal``, the store on)
    by everything it depends on: the weights, the plans and their stimuli, the ordinary scores the peaks come
    from, the read-out's probe settings, the versions and ``CAUSAL_VERSION`` (what a plan computes)."""
    plans = plans_of(study)
    path = None
    if store:
        path = causal_cache_path(model.fingerprint, study, rep.results)
        try:
            data = json.loads(path.read_text())
            if log:
                log(f"[{model.name}] causal: read {path}")
            return data
        except (OSError, ValueError):      # absent or unreadable: recompute
            pass
    if log:
        log(f"[{model.name}] causal: {', '.join(f'{p.experiment} ({p.n_random + 1} layer sets)' for _, p in plans)}")
    data = run_causal(model, study, rep.results, model.fingerprint, log=log)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, data)
        except OSError as exc:
            if not is_read_only_error(exc):
                raise
            warnings.warn(f"causal cache {path.parent} is read-only ({exc.strerror}): results not cached")
    return data


def _extract_and_probe(rep, model, exps, transfers, batch_size, store, progress, max_batch_tokens, probe_kw, log):
    """Every experiment's extraction and probes, then every transfer's, timed into ``rep.timings``."""
    timings = rep.timings
    whole: dict[str, object] = {}
    kept = {}
    for exp in exps:
        name = exp.name
        t = time.perf_counter()
        if exp.stimulus_set not in whole:
            whole[exp.stimulus_set] = extract(model, exp.stimulus_frame(), batch_size=batch_size, store=store,
                                              progress=progress, max_batch_tokens=max_batch_tokens)
        acts = exp.activations(whole[exp.stimulus_set])
        if any(name == tr for tr, _ in transfers):
            kept[name] = acts
        t_ex = time.perf_counter() - t
        t = time.perf_counter()
        rep.results[name] = probe_experiment(acts, exp, probe_kw, cache=bool(store))
        t_pr = time.perf_counter() - t
        timings[name] = {"extract_s": round(t_ex, 2), "probe_s": round(t_pr, 2), "n_stimuli": len(acts)}
        if log:
            log(f"[{model.name}] {name}: {len(acts)} stimuli, extract {t_ex:.1f} s, probes {t_pr:.1f} s")
    parts = []
    for train, test_set in transfers:
        t = time.perf_counter()
        held = extract(model, load_stimulus_set(test_set), batch_size=batch_size, store=store, progress=progress,
                       max_batch_tokens=max_batch_tokens)
        t_ex = time.perf_counter() - t
        t = time.perf_counter()
        parts.append(transfer_scores(kept[train], held).assign(train=train, test=test_set))
        t_pr = time.perf_counter() - t
        # the held-out set's extraction and the transfer probes, timed apart (the probes were once counted
        # as extraction)
        timings[f"transfer_{train}"] = {"extract_s": round(t_ex, 2), "probe_s": round(t_pr, 2),
                                        "n_stimuli": len(held)}
        if log:
            log(f"[{model.name}] transfer {train} -> {test_set}: {len(held)} held-out stimuli, "
                f"extract {t_ex:.1f} s, probes {t_pr:.1f} s")
    rep.transfer = pd.concat(parts, ignore_index=True) if parts else None
