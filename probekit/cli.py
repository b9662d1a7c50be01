"""``probekit`` command line: run replications, regenerate reports, audit claims, list models.

    probekit run [--model smollm2-135m ...] [--experiments items,relations] [--out results]
    probekit report --from results/<model> [--out DIR]
    probekit audit [--results results] [--out results/audit.md]
    probekit models
    probekit expected --write-paper | --update-measured --model X
    probekit build-llama3 --shape llama-3.2-3b [--out DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import sys
import traceback
from pathlib import Path

import pandas as pd

from probekit.core.version import __version__
from probekit.models import llama3
from probekit.claims import calibration as Cal
from probekit.core import expected as E
from probekit.core.checks import (DEFAULT_PROBE, DiskFullError, PathError, check_free_space, check_name_length, count_type, is_disk_full,
                     usable_dir)
from probekit.core.errors import RunInProgressError
from probekit.claims.claim import ANSWERS, MEASUREMENT_COLUMNS
from probekit.models.loading import (MODELS, ModelInputError, ModelUnavailableError, UnsupportedArchitectureError, cache_dir,
                     parse_random, preflight, resolve)
from probekit.models.placement import PlacementError
from probekit.claims.verdicts import all_verdicts, measure_run
from probekit.causal import check_plans
from probekit.report.render import (format_ci, atomic_write_parquet, atomic_write_text, claim_rows, claims_markdown,
                     twin_markdown, write_report)
from probekit.extraction.streaming import StreamingError
from .studies import BUILTIN, StudyError, load_study
from . import pipeline
from .pipeline import Replication, ResultsCorruptError, SavedRunError
from probekit.core.checks import ActivationRangeError, ArgumentError
from probekit.extraction.batching import ExtractionError
from probekit.extraction.store import StoreCorruptError
from probekit.probes.grid import ProbeInputError
from probekit.probes.solver import resolve_backend
import probekit.stimuli.sets as stimulus_sets

# probekit.pipeline is imported inside the commands that run or load a replication: it pulls in
# probes -> sklearn/scipy (0.8 s of `python -X importtime`), which `probekit --help` and
# `probekit models` do not need.

DEFAULT_MODEL = "smollm2-135m"
EXIT_UNAVAILABLE = 2
EXIT_USAGE = 2          # a bad argument or path, refused before any work (argparse uses 2 as well)
EXIT_DATA = 1           # a saved run or results root that cannot be read


def _err(msg: str) -> None:
    print(f"probekit: error: {msg}", file=sys.stderr)


def _comma_list(text: str) -> list[str]:
    """Comma-separated names (checked against the study once it is known: :func:`_check_experiments`,
    :func:`_check_claims`). Given but empty (``""``, ``","``) is an empty list, refused there: never "all"."""
    return [n.strip() for n in text.split(",") if n.strip()]


def _study(args):
    try:
        return load_study(getattr(args, "study", None))
    except StudyError as exc:
        raise SystemExit(_usage(str(exc)))


def _usage(msg: str) -> int:
    _err(msg)
    return 2


def _check_experiments(args, study) -> None:
    names = getattr(args, "experiments", None)
    if names is not None and not names:
        raise SystemExit(_usage(f"--experiments names no experiment; leave it out to run all of study {study.id}, "
                                f"or give some of: {', '.join(study.experiments)}"))
    unknown = [n for n in names or [] if n not in study.experiments]
    if unknown:
        raise SystemExit(_usage(f"unknown experiment(s) {', '.join(unknown)} in study {study.id}; known: "
                                f"{', '.join(study.experiments)}"))
    if getattr(args, "causal", False):           # before any model loads
        try:
            check_plans(study, None, names or list(study.experiments))
        except ValueError as exc:
            raise SystemExit(_usage(str(exc))) from None


_count_type = count_type


def _check_claims(names, study) -> None:
    """``calibrate --claims``: every name a claim of the study (its id or short name); never an empty set."""
    short = [c.id.split(".", 1)[-1] for c in study.claims]
    if names is not None and not names:
        raise SystemExit(_usage(f"--claims names no claim; leave it out for all, or give some of: {', '.join(short)}"))
    unknown = [n for n in names or [] if n not in short and n not in [c.id for c in study.claims]]
    if unknown:
        raise SystemExit(_usage(f"unknown claim(s) {', '.join(unknown)} in study {study.id}; known: "
                                f"{', '.join(short)}"))


def _check_simulable(study, names, depth: int) -> None:
    """``calibrate``, before the simulation: one draw of every scenario of the chosen claims (``names``, as
    ``--claims``) at ``depth`` (a tenth of a second for the whole study). A scenario whose input is missing --
    e.g. the untrained-twin profiles a study records in a file -- is refused in one line naming the claim, the
    scenario and the study's reason, and listing the claims that can run (was: those cells skipped with exit 0,
    a calibration without one of its nulls, which passes a CI gate)."""
    import numpy as np
    chosen = [c for c in study.claims if not names or c.id in names or c.id.split(".", 1)[-1] in names]
    broken = {}
    for c in chosen:
        for _, scenarios in Cal.rule_sets(c):
            for sc in scenarios:
                try:
                    c.simulate(sc, depth, np.random.default_rng(0))
                except (LookupError, OSError, StudyError) as exc:
                    broken.setdefault(c, (sc, exc))
    if broken:
        (c, (sc, exc)), *_ = broken.items()
        rest = [x.id.split(".", 1)[-1] for x in chosen if x not in broken]
        where = f" in study folder {study.folder}" if study.folder else ""
        how = " (docs/statistics.md, 'The untrained control', says how)" if study.id in BUILTIN else ""
        raise SystemExit(_usage(
            f"calibrate: claim {c.id}'s scenario {sc.name!r} ({sc.description}) cannot be simulated: {exc}{where}; "
            f"record that input first{how}" + (f", or leave the claim(s) out: --claims {','.join(rest)}" if rest else "")))


def _depths(text: str) -> list[int]:
    """argparse type of ``calibrate --layers``: comma-separated depths, each an integer >= 8."""
    parts = [t.strip() for t in text.split(",")]
    bad = [t for t in parts if not t.lstrip("-").isdigit() or int(t) < 8]
    if not text.strip() or bad:
        raise argparse.ArgumentTypeError(f"--layers must be comma-separated depths, each an integer >= 8 "
                                         f"(e.g. 18,28), got {text!r}")
    depths = [int(t) for t in parts]
    if len(set(depths)) < len(depths):
        raise argparse.ArgumentTypeError(f"--layers gives a depth twice ({text!r}): every cell would be simulated "
                                         f"and listed twice")
    return depths


def _check_paths(args) -> str | None:
    """Problems with --out and the cache, found before any model is loaded (None: all usable)."""
    try:
        if getattr(args, "out", None) is not None:
            check_name_length(Path(args.out).absolute(), "--out")
            usable_dir(args.out, "--out")
            check_free_space(args.out, OUT_BYTES, "--out", " or choose another --out")
        if os.environ.get("PROBEKIT_STREAM_DIR"):      # layer streaming's temporaries (pooled-*, hidden-*)
            usable_dir(os.environ["PROBEKIT_STREAM_DIR"], "PROBEKIT_STREAM_DIR")
        if not getattr(args, "no_store", False):
            root = cache_dir()
            usable_dir(root, "the cache (PROBEKIT_CACHE)", write=False)      # read-only is fine (shared cache)
            for sub in ("activations", "results", "models"):
                usable_dir(root / sub, f"the cache (PROBEKIT_CACHE): {sub}/", write=False)
    except PathError as exc:
        return str(exc)
    return None


OUT_BYTES = 64 << 20     # a run's results folder: report, parquet tables, probes/, figures (~10-30 MB)
_FOLDER_NAME_MAX = 96    # characters of a model's name kept in its results folder name


def results_folder(model_arg: str, name: str) -> str:
    """The folder of a model's results under ``--out``: its name for a registry alias or a hub id
    (``org/name``, unique already), and for a local checkpoint its name plus a short hash of its full
    path, so two checkpoints called ``model`` (or two ``checkpoint-1000``) never share a folder. Long
    names are shortened (the hash keeps them apart), so the folder is always a valid file name."""
    base, _ = parse_random(model_arg)
    local = Path(base).expanduser()
    if base in MODELS or not local.exists():
        return "/".join(part[:_FOLDER_NAME_MAX * 2] for part in name.split("/"))
    tag = hashlib.sha256(str(local.resolve()).encode()).hexdigest()[:8]
    short = name if len(name) <= _FOLDER_NAME_MAX else name[:_FOLDER_NAME_MAX]
    return f"{short}-{tag}"


@contextlib.contextmanager
def _run_locks(out: Path, folders, what: str = "probekit run"):
    """One lock file per results folder (``<out>/.<folder>.lock``), held for the whole run: a second
    ``probekit run`` into the same folder is refused at once instead of silently replacing this one's
    results (and leaving its figures next to a report that does not list them)."""
    held = []
    try:
        for folder in folders:
            target = out / folder
            lock = target.parent / f".{target.name}.lock"
            lock.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                who = fh.read().strip() or "another process"
                fh.close()
                raise RunInProgressError(f"--out {out}: {who} is already writing {target} (lock {lock}); wait for "
                                         f"it to finish, or give this run another --out") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"{what}, pid {os.getpid()}")
            fh.flush()
            held.append(fh)
        yield
    finally:
        for fh in held:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


def _check_study_inputs(args, study) -> None:
    """What the run will read besides the model, checked before it loads: a study folder's own stimulus
    files (validated as the shipped sets are) and the expected tables (readable, valid, no unknown claim)."""
    names = args.experiments or list(study.experiments)
    _check_shipped_sets(study, names)
    for name in names:
        exp = study.experiments[name]
        if str(exp.stimulus_set).endswith((".csv", ".parquet")):
            exp.stimuli()                     # StimulusError: the same text the shipped sets give
    for train, test_set in study.transfers:
        if train in names and str(test_set).endswith((".csv", ".parquet")):
            stimulus_sets.load(test_set)
    study.expected()


def _check_shipped_sets(study, names) -> None:
    """The shipped sets the run reads are where probekit looks (PROBEKIT_STIMULI_DIR can point elsewhere: a
    missing, empty or unrelated folder was a raw KeyError after the checks, ``known:`` listing nothing)."""
    wanted = [e.stimulus_set for e in (study.experiments[n] for n in names)] + \
        [test for train, test in study.transfers if train in names]
    missing = sorted({s for s in wanted if not str(s).endswith((".csv", ".parquet")) and s not in stimulus_sets.names()})
    if missing:
        d = stimulus_sets.STIMULI_DIR
        state = ("does not exist" if not d.exists() else "is not a folder" if not d.is_dir() else
                 f"holds {', '.join(stimulus_sets.names()) or 'no set'} (a set is <name>.csv with its <name>.json)")
        env = os.environ.get("PROBEKIT_STIMULI_DIR")
        fix = ("unset PROBEKIT_STIMULI_DIR to use the shipped sets, or point it at a folder holding them" if env
               else "reinstall probekit (its stimulus sets are package data)")
        raise SystemExit(_usage(f"stimulus set(s) {', '.join(missing)} of study {study.id} not found: "
                                f"{'PROBEKIT_STIMULI_DIR=' if env else ''}{d} {state}; {fix}"))


def _replicate(args, model: str, lengths_checked: bool = False):
    """``pipeline.replicate`` with the command line's settings; ``lengths_checked``: the caller ran
    ``pipeline.check_stimulus_lengths`` for this model already (``run`` checks every model before the first loads)."""
    probe_kw = {"n_permutations": args.permutations, "n_bootstrap": args.bootstrap}
    if args.probe_backend != "auto":                   # 'torch:cuda' without a GPU: refused before the model loads
        try:
            resolve_backend(args.probe_backend)
        except ValueError as exc:
            raise ArgumentError(f"--probe-backend: {exc}") from None
        probe_kw["backend"] = args.probe_backend
    return pipeline.replicate(model, args.experiments, study=_study(args), store=not args.no_store, probe_kw=probe_kw,
                     batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                     max_batch_tokens=getattr(args, "max_batch_tokens", None),
                     stream_layers={"auto": "auto", "1": True, "0": False}[args.stream_layers],
                     log=lambda m: print(m, flush=True), check_lengths=not lengths_checked,
                     causal=getattr(args, "causal", False))


def _summary_lines(verdicts) -> list[str]:
    """The end-of-run summary: rows judged against the paper say their answer (REPRODUCED, CONTRADICTED or
    INCONCLUSIVE, with the power at the paper's size and the MDE beside it, as in claims.md); regression
    rows and rows without an answer say PASS or FAIL."""
    if verdicts is None or len(verdicts) == 0:
        return ["  (no claims measured)"]
    cr = claim_rows(verdicts)
    w = max(len(c) for c in cr.claim)
    out = []
    for r in cr.itertuples():
        answer = getattr(r, "answer", None)
        answered = isinstance(answer, str) and answer in ANSWERS
        lo_hi = "" if r.ci_low != r.ci_low else " " + format_ci(r.ci_low, r.ci_high, "", r.interval)
        val = "n/a" if r.value != r.value else f"{r.value:.3g}"
        label = answer.upper() if answered else ("PASS" if r.passed else "FAIL")
        line = f"  {label:<12}  {r.basis:<16} {r.claim:<{w}}  {r.key_metric} = {val}{lo_hi}"
        if answered:
            pw, mde = getattr(r, "power_at_paper", float("nan")), getattr(r, "mde80", float("nan"))
            extra = [f"power at the paper's size {pw:.2f}" if pw == pw else "",
                     f"MDE {mde:.3g}" if mde == mde else ""]
            extra = ", ".join(e for e in extra if e)
            if extra:
                line += f"  ({extra})"
            why = getattr(r, "answer_reason", "")
            if answer != "reproduced" and isinstance(why, str) and why:
                line += f"\n        {why[:300]}"
        elif not r.passed:
            line += f"\n        {r.reason[:300]}"
        out.append(line)
    return out


# ----------------------------------------------------------------------------- subcommands

def _preflight(args, models) -> dict[str, str]:
    """Every model argument checked (device, dtype, where the weights are, a supplied checkpoint's identity)
    before any work starts; returns each model's results folder (:func:`results_folder`). Refused (exit 2):
    a bad model argument, the same model twice, two models that reports would give the same name."""
    folders, names = {}, {}
    for m in models:
        try:
            name = preflight(m, args.dtype, args.device)
        except ModelInputError as exc:
            raise SystemExit(_usage(str(exc)))
        except (ModelUnavailableError, UnsupportedArchitectureError):
            name = m             # reported per model when its turn comes (the other models still run)
        folder = results_folder(m, name)
        if folder in folders.values() or name in names:
            other = names.get(name) or next(k for k, v in folders.items() if v == folder)
            raise SystemExit(_usage(
                f"--model {other} and --model {m} would both be reported as model {name!r} (results and audits "
                f"are per name); give the same model once, or give one checkpoint folder another name"))
        folders[m], names[name] = folder, m
    return folders


def cmd_run(args) -> int:
    models = args.model or [DEFAULT_MODEL]
    study = _study(args)
    _check_experiments(args, study)
    problem = _check_paths(args)
    if problem:
        _err(problem)
        return EXIT_USAGE
    _check_study_inputs(args, study)
    folders = _preflight(args, models)
    frames = pipeline.stimulus_frames(study, args.experiments or list(study.experiments))
    for m in models:                       # a text longer than a model's context: before any model loads
        pipeline.check_stimulus_lengths(m, frames)
    status = 0
    with _run_locks(Path(args.out), folders.values()):
        for model in models:
            try:
                rep = _replicate(args, model, lengths_checked=True)
            except (ModelUnavailableError, UnsupportedArchitectureError) as exc:
                _err(str(exc))
                status = EXIT_UNAVAILABLE
                continue
            out = Path(args.out) / folders[model]
            rep.folder = folders[model]
            paths = write_report(rep, out)
            t = rep.timings
            print(f"\n[{rep.model}] {rep.n_layers} layers, d_model {rep.d_model}; load {t.get('load_model_s')} s, "
                  f"total {t.get('total_s')} s")
            for name, v in t.items():
                if isinstance(v, dict):
                    print(f"  {name:<15} {v.get('n_stimuli')} stimuli, extract {v.get('extract_s')} s, "
                          f"probes {v.get('probe_s')} s")
            print("claims:")
            print("\n".join(_summary_lines(paths["verdicts_df"])))
            print(f"wrote {out}/: report.md, claims.md, verdicts.parquet, measurements.parquet, scores.parquet, "
                  f"replication.json, probes/, figures/ ({len(paths['figures'])} PNGs)")
            print(f"  report: {paths['report']}")
    if len(models) > 1 and status == 0:
        # the claims table across the models of this run (and any earlier ones under --out)
        return cmd_audit(argparse.Namespace(results=args.out, out=None))
    return status


def cmd_report(args) -> int:
    src = Path(args.from_dir)
    out = Path(args.out) if args.out else src
    try:
        usable_dir(out, "--out" if args.out else "--from (reports are written next to the run)")
    except PathError as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        rep = Replication.load(src)
    except SavedRunError as exc:
        _err(str(exc))
        return EXIT_DATA
    with _run_locks(out.parent, [out.name], "probekit report"):   # a run or report writing there: refused
        paths = write_report(rep, out)
    print("\n".join(_summary_lines(paths["verdicts_df"])))
    print(f"wrote {out}/: report.md, claims.md, verdicts.parquet, measurements.parquet, figures/ "
          f"({len(paths['figures'])} PNGs)")
    return 0


def _measurements_for(run_dir: Path):
    """A saved run's measurements: ``measurements.parquet`` if it is not older than the run and has the
    current columns, else re-measured."""
    mp, rj = run_dir / "measurements.parquet", run_dir / "replication.json"
    if mp.exists() and rj.exists() and mp.stat().st_mtime >= rj.stat().st_mtime:
        try:
            m = pd.read_parquet(mp)
            if list(m.columns) == MEASUREMENT_COLUMNS:
                return m
        except Exception:          # unreadable: re-measure from the saved run (which says what is wrong)
            pass
    return measure_run(Replication.load(run_dir))


def find_runs(root: Path) -> list[Path]:
    """Every saved run under ``root`` at any depth (a folder holding ``replication.json``; a hub model's run
    is ``<root>/org/name``), skipping hidden folders: the atomic-swap leftovers ``.<model>.old-PID`` and
    ``.<model>.tmp-*`` a crash can leave are never read. A run's own subfolders are not searched."""
    runs, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):      # a linked run counts
        real = os.path.realpath(dirpath)
        if real in seen:                       # a link loop
            dirnames[:] = []
            continue
        seen.add(real)
        if "replication.json" in filenames and Path(dirpath) != root:
            runs.append(Path(dirpath))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(runs)


def _same_model_runs(root: Path, runs: list[Path]) -> list[str]:
    """Runs that claim the same model (a renamed backup, a copy, two checkpoints of one name): an audit
    would judge them together under one name."""
    by_model: dict[str, list[Path]] = {}
    for run_dir in runs:
        try:
            model = json.loads((run_dir / "replication.json").read_text()).get("model")
        except (OSError, ValueError, AttributeError):
            continue                 # unreadable: Replication.load names the problem below
        by_model.setdefault(str(model), []).append(run_dir)
    return [f"{len(dirs)} runs claim model {model!r}: {', '.join(str(d.relative_to(root)) for d in dirs)}"
            for model, dirs in sorted(by_model.items()) if len(dirs) > 1]


def cmd_audit(args) -> int:
    root = Path(args.results)
    if not root.is_dir():
        _err(f"--results {root} is not a directory (expected the results root of `probekit run`, "
             f"holding <model>/replication.json)")
        return EXIT_USAGE
    runs = find_runs(root)
    if not runs:
        _err(f"no runs under {root} (looked for replication.json at any depth, hidden folders skipped); "
             f"run `probekit run --out {root}` first")
        return EXIT_DATA
    out = Path(args.out) if args.out else root / "audit.md"
    try:
        usable_dir(out.parent, "--out" if args.out else f"--results {root}")
    except PathError as exc:
        _err(str(exc))
        return EXIT_USAGE
    dups = _same_model_runs(root, runs)
    if dups:
        for msg in dups:
            _err(msg)
        _err(f"audit not written: move all but one run of each model out of {root} (a backup or copy?), or "
             f"audit them apart with --results DIR")
        return EXIT_DATA
    print(f"auditing {len(runs)} run(s) under {root}: {', '.join(str(r.relative_to(root)) for r in runs)}")
    parts, broken = [], []
    for run_dir in runs:
        try:
            meas = _measurements_for(run_dir)
            study = load_study(json.loads((run_dir / "replication.json").read_text()).get("study"))
        except SavedRunError as exc:
            broken.append(str(exc))
            continue
        except StudyError as exc:
            broken.append(f"{run_dir}: its study cannot be loaded ({exc}); give the study folder back at the "
                          f"path in replication.json, or rerun the model")
            continue
        if len(meas) == 0:
            print(f"  {run_dir.relative_to(root)}: nothing measured, skipped")
            continue
        parts.append(all_verdicts(meas, study))
    if broken:                   # an audit silently missing a model would mislead: refuse instead
        for msg in broken:
            _err(msg)
        _err(f"{len(broken)} of {len(runs)} run(s) under {root} cannot be read; audit not written")
        return EXIT_DATA
    if not parts:
        _err(f"none of the {len(runs)} run(s) under {root} has measured claims; audit not written")
        return EXIT_DATA
    verdicts = pd.concat(parts, ignore_index=True)
    text = claims_markdown(verdicts, title=f"Claims audit: {len(parts)} model(s) under {root}")
    twins = twin_markdown(verdicts)
    atomic_write_text(out, text + ("\n" + twins if twins else ""))
    pq = out.with_name(out.stem + "_verdicts.parquet")
    if len(verdicts):
        atomic_write_parquet(verdicts, pq)
    print("\n".join(_summary_lines(verdicts)))
    if twins:
        print(twins)
    print(f"wrote {out}" + (f" and {pq}" if len(verdicts) else ""))
    return 0


def cmd_calibrate(args) -> int:
    study = _study(args)
    _check_claims(args.claims, study)
    depths = args.layers
    out = Path(args.out)
    try:                       # before the simulation (the full table takes most of an hour)
        check_name_length(out.absolute(), "--out")
        usable_dir(out, "--out")
    except PathError as exc:
        _err(str(exc))
        return EXIT_USAGE
    _check_simulable(study, args.claims, min(depths))
    print(f"calibrating {study.id}: {args.draws} draws per cell, depths {depths}, {args.workers} worker(s)",
          flush=True)
    table = Cal.calibrate(study, n_draws=args.draws, depths=depths, claims=args.claims, workers=args.workers,
                          log=lambda m: print(m, flush=True))
    paths = Cal.write(table, args.out)
    bad = Cal.exceeds(table)
    print(f"wrote {paths['parquet']} and {paths['markdown']}; {len(bad)} null row(s) significantly above "
          f"{Cal.ALPHA:.0%}")
    return 1 if len(bad) else 0


def cmd_models(args) -> int:
    rows = []
    for alias, spec in MODELS.items():
        try:
            resolve(alias)
            avail, why = "yes", ""
        except ModelUnavailableError as exc:
            avail, why = "no", str(exc)
        except Exception as exc:                     # a broken install should not hide the other models
            avail, why = "no", f"{type(exc).__name__}: {exc}"
        rows.append((alias, spec, avail, why))
    for alias, spec, avail, why in rows:
        print(f"{alias}  [{', '.join(spec.markers)}]  layers={spec.n_layers}  available={avail}")
        print(f"    {spec.description}")
        if why and args.verbose:
            print(f"    not available: {why}")
        elif why:
            print("    weights not found here (-v: the reason and how to supply them)")
    return 0


def cmd_expected(args) -> int:
    if not args.write_paper and not args.update_measured:
        _err("nothing to do: give --write-paper and/or --update-measured --model X")
        return 1
    study = _study(args)
    if args.write_paper:
        print(f"wrote {E.write_paper(study, args.dir)}")
    if args.update_measured:
        if not args.model:
            _err("--update-measured needs --model")
            return 1
        for model in args.model:
            try:
                rep = _replicate(args, model)
            except (ModelUnavailableError, UnsupportedArchitectureError, ModelInputError) as exc:
                _err(str(exc))
                return EXIT_UNAVAILABLE
            print(f"wrote measured rows of {rep.model} to "
                  f"{E.write_measured(measure_run(rep), args.dir or study.expected_dir)}")
    return 0


# ----------------------------------------------------------------------------- parser

def _add_run_options(p: argparse.ArgumentParser, default_model: bool = True) -> None:
    p.add_argument("--model", action="append", metavar="NAME_OR_PATH",
                   help="registry alias, local directory, .gguf file or hub id; repeatable"
                        + (f" (default {DEFAULT_MODEL})" if default_model else ""))
    p.add_argument("--study", default=None, metavar="ID_OR_DIR",
                   help="a shipped study (default bogdan2025) or a study folder")
    p.add_argument("--experiments", type=_comma_list, default=None, metavar="A,B,...",
                   help="comma-separated experiments of the study (default: all)")
    p.add_argument("--batch-size", type=_count_type("--batch-size", 1), default=32,
                   help="texts per forward pass (default 32; see --max-batch-tokens)")
    p.add_argument("--max-batch-tokens", type=_count_type("--max-batch-tokens", 1), default=None, metavar="N",
                   help="padded tokens per forward pass (rows x longest row; default 8192): one long text "
                        "gets a batch of its own instead of padding the others")
    p.add_argument("--dtype", default="auto",
                   help="auto (default: bfloat16 on a GPU, on the CPU float32 if it fits else bfloat16), "
                        "float32, bfloat16, float16")
    p.add_argument("--device", default="auto", help="auto (default: cuda if visible, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--stream-layers", default="auto", nargs="?", const="1", choices=["auto", "1", "0"],
                   help="layer-streamed extraction: auto (default: when the model does not fit), 1 forces it, 0 never")
    p.add_argument("--permutations", type=_count_type("--permutations", 0), default=DEFAULT_PROBE["n_permutations"],
                   help=f"permutations per label (default {DEFAULT_PROBE['n_permutations']})")
    p.add_argument("--probe-backend", default="auto", choices=("auto", "numpy", "torch", "torch:cpu", "torch:cuda"),
                   help="where the probes' ridge solver runs: auto (default: torch on CUDA when a GPU is visible, "
                        "else numpy), numpy, torch, torch:cpu, torch:cuda (docs/performance-probes.md)")
    p.add_argument("--bootstrap", type=count_type("--bootstrap", 20, or_zero=True),
                   default=DEFAULT_PROBE["n_bootstrap"],
                   help=f"group-bootstrap replicates: 0 (none) or >= 20, what the bootstrap intervals need "
                        f"(default {DEFAULT_PROBE['n_bootstrap']})")
    p.add_argument("--no-store", action="store_true", help="do not read or write the activation/result cache")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="probekit", description="Layer-by-layer linear probes of decoder LMs, reproducing the claims of "
                                     "arXiv 2501.07359 (Bogdan 2025).")
    p.add_argument("--version", action="version", version=f"probekit {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error (anywhere on the line; or PROBEKIT_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="replicate the experiments on a model and write its report",
                       description="Run the replication (stimuli -> activations -> probe grid) for each --model and "
                                   "write into <out>/<model>/: replication.json, scores.parquet and probes/ (the "
                                   "saved Replication), measurements.parquet, verdicts.parquet, claims.md, "
                                   "figures/*.png and report.md. Exit code 2 if a model's weights are not "
                                   "available here.")
    _add_run_options(r)
    r.add_argument("--out", default="results", help="results root (default: results)")
    r.add_argument("--causal", action="store_true",
                   help="also run the study's causal claims (ablating the probe peaks' layers against random "
                        "layer sets: about 40 extra forward passes per causal experiment, with the LM head; "
                        "docs/causal.md), written to causal.json and judged in the report")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="regenerate figures and tables from a saved run (no model needed)",
                        description="Load a saved Replication (a directory with replication.json) and rewrite "
                                    "measurements.parquet, verdicts.parquet, claims.md, figures/*.png and report.md "
                                    "(and the saved Replication) in --out (default: the same directory).")
    rp.add_argument("--from", dest="from_dir", required=True, metavar="DIR", help="results/<model> of a saved run")
    rp.add_argument("--out", default=None, metavar="DIR", help="where to write (default: --from)")
    rp.set_defaults(func=cmd_report)

    a = sub.add_parser("audit", help="claims table across every saved run, both bases",
                       description="Judge every run found under --results (<results>/<model>/replication.json) "
                                   "against expected/*.parquet with both bases (own rows and the paper-normalised "
                                   "audit); write the markdown claims table to --out and the verdicts next to it "
                                   "as <stem>_verdicts.parquet.")
    a.add_argument("--results", default="results", metavar="DIR", help="results root (default: results)")
    a.add_argument("--out", default=None, metavar="FILE", help="markdown file (default: <results>/audit.md)")
    a.set_defaults(func=cmd_audit)

    m = sub.add_parser("models", help="list the model registry and whether weights are available here",
                       description="List the registry aliases with description, markers, layer count and whether "
                                   "their weights are available here (no model is loaded). Writes nothing.")
    m.add_argument("-v", "--verbose", action="store_true", help="show how to supply unavailable weights")
    m.set_defaults(func=cmd_models)

    e = sub.add_parser("expected", help="write the expected tables (paper rows, measured regression rows)",
                       description="--write-paper writes expected/paper.parquet (the paper's numbers); "
                                   "--update-measured --model X runs the replication for X and replaces X's rows "
                                   "in expected/measured.parquet.")
    e.add_argument("--write-paper", action="store_true", help="write expected/paper.parquet")
    e.add_argument("--update-measured", action="store_true",
                   help="run --model and write its measured rows to expected/measured.parquet")
    e.add_argument("--dir", default=None, metavar="DIR",
                   help="expected directory (default: PROBEKIT_EXPECTED_DIR or the repository's expected/)")
    _add_run_options(e, default_model=False)
    e.set_defaults(func=cmd_expected)

    c = sub.add_parser("calibrate", help="measure every claim's decision rule under simulated nulls and planted "
                                         "effects",
                       description="Simulate every claim's decision rule (its own measure + the study's judge) under "
                                   "its nulls and planted effects at each depth; write <out>/calibration.parquet and "
                                   "calibration.md. Exit 1 if a null rate is significantly above 5%.")
    c.add_argument("--out", default="results/calibration", metavar="DIR",
                   help="where calibration.parquet and calibration.md are written (default results/calibration)")
    c.add_argument("--study", default=None, metavar="ID_OR_DIR",
                   help="a shipped study (default bogdan2025) or a study folder")
    c.add_argument("--draws", type=count_type("--draws", 20), default=500, help="draws per cell (default 500, >= 20)")
    c.add_argument("--layers", type=_depths, default=[18, 28, 30, 80],
                   help="depths, comma-separated, each >= 8 (default 18,28,30,80)")
    c.add_argument("--claims", type=_comma_list, default=None, metavar="A,B",
                   help="restrict to these claims (ids or short names)")
    c.add_argument("--workers", type=count_type("--workers", 1), default=2, help="processes (default 2)")
    c.set_defaults(func=cmd_calibrate)

    b = sub.add_parser("build-llama3", help="write a Llama-3-shaped checkpoint (real tokenizer, seeded random weights)",
                       description="Build a transformers checkpoint of the Llama-3.2-3B shape, a slice of "
                                   "Llama-3.3-70B at full width, or a tiny one, with the real Llama 3 tokenizer "
                                   "(PyPI llama-models) and random weights from a seed; into --out or the cache.")
    llama3.add_build_args(b)
    b.set_defaults(func=llama3.run_build)
    return p


def _input_errors() -> tuple:
    """What the user gave is wrong (exit 2): a model, checkpoint, device or dtype, a study or its stimuli,
    an expected table, an argument or a path, a run already in progress."""
    return (ModelInputError, ModelUnavailableError, UnsupportedArchitectureError, StudyError,
            stimulus_sets.StimulusError, E.ExpectedTableError, ArgumentError, PathError, PlacementError,
            StreamingError, ExtractionError, ProbeInputError, RunInProgressError, ActivationRangeError)


def _one_line(exc: BaseException) -> str:
    """An error message on one line (a multi-problem message: its head, then the problems, by ';')."""
    lines = [ln.strip().removeprefix("- ").strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    head, rest = lines[0], lines[1:]
    return head + (" " if head.endswith(":") else "; ") + "; ".join(rest) if rest else head


def _study_file(exc: BaseException, study) -> str | None:
    """``file:line`` of the innermost frame inside a user's study folder, if the error passed through one."""
    if not study or not Path(study).is_dir():
        return None
    folder = Path(study).resolve()
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve().is_relative_to(folder):
            found = f"{frame.filename}:{frame.lineno}"
    return found


def _handle(exc: Exception, args) -> int:
    """The one error path of the command line: every probekit error on one line naming the input and what
    to do; exit 2 for what the user gave (:func:`_input_errors`), 1 for a run that failed on its own (a
    full disk, a saved run that cannot be read). Errors in a user's study code keep their traceback and
    name the study file; anything else is a bug in probekit and keeps its traceback. ``--debug``: every
    traceback."""
    if isinstance(exc, DiskFullError):             # says where, how much and what to do
        _err(_one_line(exc))
        return EXIT_DATA
    if is_disk_full(exc):
        where = f" writing {exc.filename}" if exc.filename else ""
        _err(f"disk full or failing{where} ({exc.strerror}); free some space and rerun: the stages already "
             f"done are reused from the cache")
        return EXIT_DATA
    if isinstance(exc, _input_errors()):
        _err(_one_line(exc))
        return EXIT_USAGE
    if isinstance(exc, (SavedRunError, ResultsCorruptError, StoreCorruptError)):
        _err(_one_line(exc))
        return EXIT_DATA
    where = _study_file(exc, getattr(args, "study", None))
    if where is not None:
        traceback.print_exception(exc)
        _err(f"the error above ({type(exc).__name__}) was raised in the study's own code at {where}; fix the "
             f"study ({args.study})")
        return EXIT_DATA
    if isinstance(exc, OSError) and exc.strerror:
        _err(f"{exc.filename or 'a file'}: {exc.strerror}; check the path and its permissions")
        return EXIT_DATA
    raise exc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("PROBEKIT_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:
        if debug:
            raise
        return _handle(exc, args)


if __name__ == "__main__":
    raise SystemExit(main())
