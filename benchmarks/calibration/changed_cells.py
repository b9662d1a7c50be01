"""Calibrate chosen claims at chosen depths (all their scenarios, every rule set) and merge the cells into
docs/calibration/measured_cells.{parquet,md}, replacing that claim's earlier cells.

    PYTHONPATH=. python benchmarks/calibration/changed_cells.py --claims double_peak item_peak_early \
        --draws 200 --depths 28 80 --workers 2 --out /tmp/cells.parquet

``--merge`` rewrites docs/calibration/measured_cells.md from the merged parquet (calibration.markdown).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from probekit.core.atomic import atomic_write_parquet, atomic_write_text
from probekit.claims.calibration import COLUMNS, _cell, _log, markdown, rule_sets
from probekit.studies import load_study

DOCS = Path(__file__).resolve().parents[2] / "docs" / "calibration"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", nargs="+", required=True)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--depths", type=int, nargs="+", default=[28, 80])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--scenarios", nargs="*", help="only these scenario names (default: all)")
    ap.add_argument("--out", required=True, help="parquet of the new cells")
    a = ap.parse_args(argv)
    t = time.time()
    study = load_study("bogdan2025")
    chosen = [study.claim(c) for c in a.claims]
    jobs = [(study.id, c.id, model, L, sc.name, a.draws, 0) for c in chosen for model, scs in rule_sets(c)
            for sc in scs if not a.scenarios or sc.name in a.scenarios for L in a.depths]
    if a.workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(a.workers) as pool:
            results = [_log(r, print) for r in pool.imap(_cell, jobs)]
    else:
        results = [_log(_cell(j), print) for j in jobs]
    table = pd.DataFrame([r for r in results if isinstance(r, dict)], columns=COLUMNS)
    atomic_write_parquet(table, Path(a.out))
    print(f"{len(table)} cells, {time.time() - t:.0f} s wall")


def merge(parts, intro: str) -> None:
    """Replace the claims of ``parts`` (parquets) in measured_cells.parquet and rewrite measured_cells.md."""
    old = pd.read_parquet(DOCS / "measured_cells.parquet")
    new = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    keep = old[~old.claim.isin(set(new.claim))]
    order = list(dict.fromkeys(list(old.claim) + list(new.claim)))
    table = pd.concat([keep, new], ignore_index=True)
    table["_o"] = table.claim.map(order.index)
    table = table.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)
    atomic_write_parquet(table, DOCS / "measured_cells.parquet")
    md = markdown(table, "Calibration on measured noise and at the least-favourable nulls (development run)")
    head, rest = md.split("\n", 1)
    atomic_write_text(DOCS / "measured_cells.md", head + "\n\n" + intro + "\n" + rest)


if __name__ == "__main__":
    main()
