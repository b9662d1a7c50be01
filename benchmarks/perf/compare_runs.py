"""Compare the probe scores of two runs of one model (e.g. in memory vs layer-streamed), each with its own
``PROBEKIT_CACHE``: for every experiment present in both caches' probe results, the largest absolute
difference of every score column, balanced accuracy first.

    python benchmarks/perf/compare_runs.py CACHE_A CACHE_B [--model llama-3.2-3b] [--meta solver_version=3]

Exit status 1 when an experiment of A is missing from B or balanced accuracy differs by more than
``--tolerance`` (default 0.01, issue 10's acceptance bound)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEY = ["label", "layer", "component", "metric"]
COLUMNS = ["value", "ci_low", "ci_high", "p_value", "p_fwer", "control_value", "null_mean"]


def results_by_experiment(cache: Path, model: str | None, where: dict | None = None) -> dict[str, Path]:
    out = {}
    for meta in sorted((cache / "results").glob("*/meta.json")):
        m = json.loads(meta.read_text())
        if model and m.get("model_name") != model:
            continue
        if any(str(m.get(k)) != v for k, v in (where or {}).items()):
            continue
        exp = m.get("experiment") or m.get("stimuli_name")
        if exp in out:
            raise SystemExit(f"{cache}: two probe results for experiment {exp!r} ({out[exp].name}, "
                             f"{meta.parent.name}); give --model / --meta KEY=VALUE or a cache of one run")
        out[exp] = meta.parent
    return out


def compare(a: Path, b: Path) -> dict:
    sa, sb = (pd.read_parquet(p / "scores.parquet") for p in (a, b))
    m = sa.merge(sb, on=KEY, suffixes=("_a", "_b"), how="outer", indicator=True)
    unmatched = int((m._merge != "both").sum())
    m = m[m._merge == "both"]
    bacc = m[m.metric == "balanced_accuracy"]
    out = {"rows": len(m), "unmatched": unmatched,
           "max_abs_d_balanced_accuracy": float(np.nanmax(np.abs(bacc.value_a - bacc.value_b))) if len(bacc) else
           np.nan}
    for c in COLUMNS:
        if f"{c}_a" in m:
            d = np.abs(m[f"{c}_a"].astype(float) - m[f"{c}_b"].astype(float))
            out[f"max_abs_d_{c}"] = float(np.nanmax(d)) if d.notna().any() else 0.0
    return out


def _key_value(text: str) -> tuple[str, str]:
    """argparse type of --meta: KEY=VALUE (was: a ValueError traceback without the '=')."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"--meta must be KEY=VALUE (e.g. solver_version=3), got {text!r}")
    return key, value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache_a", type=Path)
    ap.add_argument("cache_b", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
                    help="only results whose meta.json has this value (e.g. solver_version=3); repeatable")
    ap.add_argument("--tolerance", type=float, default=0.01)
    args = ap.parse_args(argv)
    where = dict(args.meta)
    ra, rb = (results_by_experiment(c, args.model, where) for c in (args.cache_a, args.cache_b))
    missing = sorted(set(ra) - set(rb))
    rows = {e: compare(ra[e], rb[e]) for e in sorted(set(ra) & set(rb))}
    table = pd.DataFrame(rows).T
    print(table.to_string(float_format=lambda x: f"{x:.3g}"))
    worst = float(table.max_abs_d_balanced_accuracy.max()) if len(table) else np.nan
    print(f"\n{len(rows)} experiments compared; max |d balanced accuracy| = {worst:.3g} (tolerance "
          f"{args.tolerance}); missing from B: {missing or 'none'}")
    return 0 if not missing and worst <= args.tolerance and not table.unmatched.any() else 1


if __name__ == "__main__":
    sys.exit(main())
