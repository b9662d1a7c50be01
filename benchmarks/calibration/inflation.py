"""Coverage of the study's intervals on the measured refit replicates (issue 18 §2).

    python benchmarks/calibration/inflation.py [--out docs/calibration]

Reads the study's noise_measured.npz (probekit/studies/bogdan2025/); writes inflation.parquet and inflation.md (seconds on one core).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from probekit.core.atomic import atomic_write_parquet, atomic_write_text
from probekit.claims.calibration import inflation_markdown, inflation_table
from probekit.studies import load_study
from probekit.studies.bogdan2025.claims import MEASURED_FILE

HERE = Path(__file__).parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/calibration")
    ap.add_argument("--npz", default=str(MEASURED_FILE))
    a = ap.parse_args(argv)
    study = load_study("bogdan2025")
    t = inflation_table(a.npz, study.inflation)
    out = Path(a.out)
    atomic_write_parquet(t, out / "inflation.parquet")
    atomic_write_text(out / "inflation.md", inflation_markdown(t, "probekit/studies/bogdan2025/noise_measured.npz"))
    print(inflation_markdown(t, a.npz))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
