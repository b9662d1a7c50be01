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
import json
import sys
from pathlib import Path

import pandas as pd

from . import __version__, llama3
from . import calibration as Cal
from . import expected as E
from .checks import DEFAULT_PROBE, PathError, usable_dir
from .claim import MEASUREMENT_COLUMNS
from .models import (MODELS, ModelInputError, ModelUnavailableError, UnsupportedArchitectureError, cache_dir,
                     preflight, resolve)
from .placement import PlacementError
from .report import (_ci, all_verdicts, atomic_write_parquet, atomic_write_text, claim_rows, claims_markdown,
                     measure_run, twin_markdown, write_report)
from .streaming import StreamingError
from .studies import StudyError, load_study

# probekit.pipeline is imported inside the commands that run or load a replication: it pulls in
# probes -> sklearn/scipy (0.8 s of `python -X importtime`), which `probekit --help` and
# `probekit models` do not need.

DEFAULT_MODEL = "smollm2-135m"
EXIT_UNAVAILABLE = 2
EXIT_USAGE = 2          # a bad argument or path, refused before any work (argparse uses 2 as well)
EXIT_DATA = 1           # a saved run or results root that cannot be read


def _err(msg: str) -> None:
    print(f"probekit: error: {msg}", file=sys.stderr)


def _comma_list(text: str | None) -> list[str] | None:
    """Comma-separated names (experiments are checked against the study once it is known:
    :func:`_check_experiments`)."""
    if not text:
        return None
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
    names = getattr(args, "experiments", None) or []
    unknown = [n for n in names if n not in study.experiments]
    if unknown:
        raise SystemExit(_usage(f"unknown experiment(s) {', '.join(unknown)} in study {study.id}; known: "
                                f"{', '.join(study.experiments)}"))


def _count_type(name: str, minimum: int):
    """argparse type: an integer >= ``minimum`` (a bad value is a usage error: exit 2 before any work)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _check_paths(args) -> str | None:
    """Problems with --out and the cache, found before any model is loaded (None: all usable)."""
    try:
        if getattr(args, "out", None) is not None:
            usable_dir(args.out, "--out")
        if not getattr(args, "no_store", False):
            root = cache_dir()
            usable_dir(root, "the cache (PROBEKIT_CACHE)", write=False)      # read-only is fine (shared cache)
            for sub in ("activations", "results", "models"):
                usable_dir(root / sub, f"the cache (PROBEKIT_CACHE): {sub}/", write=False)
    except PathError as exc:
        return str(exc)
    return None


def _replicate(args, model: str):
    from .pipeline import replicate                    # sklearn/scipy: see the module's imports
    probe_kw = {"n_permutations": args.permutations, "n_bootstrap": args.bootstrap}
    return replicate(model, args.experiments, study=_study(args), store=not args.no_store, probe_kw=probe_kw,
                     batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                     max_batch_tokens=getattr(args, "max_batch_tokens", None),
                     stream_layers={"auto": "auto", "1": True, "0": False}[args.stream_layers],
                     log=lambda m: print(m, flush=True))


def _summary_lines(verdicts) -> list[str]:
    if verdicts is None or len(verdicts) == 0:
        return ["  (no claims measured)"]
    cr = claim_rows(verdicts)
    w = max(len(c) for c in cr.claim)
    out = []
    for r in cr.itertuples():
        lo_hi = "" if r.ci_low != r.ci_low else " " + _ci(r.ci_low, r.ci_high, "", r.interval)
        val = "n/a" if r.value != r.value else f"{r.value:.3g}"
        line = f"  {'PASS' if r.passed else 'FAIL'}  {r.basis:<16} {r.claim:<{w}}  {r.key_metric} = {val}{lo_hi}"
        if not r.passed:
            line += f"\n        {r.reason[:300]}"
        out.append(line)
    return out


# ----------------------------------------------------------------------------- subcommands

def _preflight(args, models) -> int:
    """Every model argument checked (device, dtype, where the weights are, a supplied checkpoint's identity)
    before any work starts: 0, or 2 with the reason."""
    for m in models:
        try:
            preflight(m, args.dtype, args.device)
        except ModelInputError as exc:
            return _usage(str(exc))
        except (ModelUnavailableError, UnsupportedArchitectureError):
            pass                 # reported per model when its turn comes (the other models still run)
    return 0


def cmd_run(args) -> int:
    models = args.model or [DEFAULT_MODEL]
    _check_experiments(args, _study(args))
    problem = _check_paths(args)
    if problem:
        _err(problem)
        return EXIT_USAGE
    if _preflight(args, models):
        return EXIT_USAGE
    status = 0
    for model in models:
        try:
            rep = _replicate(args, model)
        except (ModelUnavailableError, UnsupportedArchitectureError, ModelInputError, PlacementError,
                StreamingError) as exc:
            _err(str(exc))
            status = EXIT_UNAVAILABLE
            continue
        out = Path(args.out) / rep.model
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
        cmd_audit(argparse.Namespace(results=args.out, out=None))
    return status


def cmd_report(args) -> int:
    from .pipeline import Replication, SavedRunError   # sklearn/scipy: see the module's imports
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
    paths = write_report(rep, out)
    print("\n".join(_summary_lines(paths["verdicts_df"])))
    print(f"wrote {out}/: report.md, claims.md, verdicts.parquet, measurements.parquet, figures/ "
          f"({len(paths['figures'])} PNGs)")
    return 0


def _measurements_for(run_dir: Path):
    """A saved run's measurements: ``measurements.parquet`` if it is not older than the run and has the
    current columns, else re-measured."""
    from .pipeline import Replication                  # sklearn/scipy: see the module's imports
    mp, rj = run_dir / "measurements.parquet", run_dir / "replication.json"
    if mp.exists() and rj.exists() and mp.stat().st_mtime >= rj.stat().st_mtime:
        try:
            m = pd.read_parquet(mp)
            if list(m.columns) == MEASUREMENT_COLUMNS:
                return m
        except Exception:          # unreadable: re-measure from the saved run (which says what is wrong)
            pass
    return measure_run(Replication.load(run_dir))


def cmd_audit(args) -> int:
    from .pipeline import SavedRunError                # sklearn/scipy: see the module's imports
    root = Path(args.results)
    if not root.is_dir():
        _err(f"--results {root} is not a directory (expected the results root of `probekit run`, "
             f"holding <model>/replication.json)")
        return EXIT_USAGE
    runs = sorted(p.parent for p in root.glob("*/replication.json"))
    if not runs:
        _err(f"no runs under {root} (looked for {root}/<model>/replication.json); run `probekit run --out {root}` first")
        return EXIT_DATA
    out = Path(args.out) if args.out else root / "audit.md"
    try:
        usable_dir(out.parent, "--out" if args.out else f"--results {root}")
    except PathError as exc:
        _err(str(exc))
        return EXIT_USAGE
    parts, broken = [], []
    for run_dir in runs:
        try:
            meas = _measurements_for(run_dir)
        except SavedRunError as exc:
            broken.append(str(exc))
            continue
        if len(meas) == 0:
            print(f"  {run_dir.name}: nothing measured, skipped")
            continue
        study = load_study(json.loads((run_dir / "replication.json").read_text()).get("study"))
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
    text = claims_markdown(verdicts, title=f"Claims audit: {len(runs)} model(s) under {root}")
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
    depths = [int(x) for x in args.layers.split(",")]
    if args.draws < 20 or any(L < 8 for L in depths):
        return _usage("--draws must be >= 20 and every depth in --layers >= 8")
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
    p.add_argument("--bootstrap", type=_count_type("--bootstrap", 0), default=DEFAULT_PROBE["n_bootstrap"],
                   help=f"group-bootstrap replicates (default {DEFAULT_PROBE['n_bootstrap']})")
    p.add_argument("--no-store", action="store_true", help="do not read or write the activation/result cache")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="probekit", description="Layer-by-layer linear probes of decoder LMs, reproducing the claims of "
                                     "arXiv 2501.07359 (Bogdan 2025).")
    p.add_argument("--version", action="version", version=f"probekit {__version__}")
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
    c.add_argument("--draws", type=int, default=500, help="draws per cell (default 500)")
    c.add_argument("--layers", default="18,28,30,80", help="depths, comma-separated (default 18,28,30,80)")
    c.add_argument("--claims", type=_comma_list, default=None, metavar="A,B",
                   help="restrict to these claims (ids or short names)")
    c.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    c.set_defaults(func=cmd_calibrate)

    b = sub.add_parser("build-llama3", help="write a Llama-3-shaped checkpoint (real tokenizer, seeded random weights)",
                       description="Build a transformers checkpoint of the Llama-3.2-3B shape, a slice of "
                                   "Llama-3.3-70B at full width, or a tiny one, with the real Llama 3 tokenizer "
                                   "(PyPI llama-models) and random weights from a seed; into --out or the cache.")
    llama3.add_build_args(b)
    b.set_defaults(func=llama3.run_build)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
