"""Record an untrained model's measured profiles for the calibration's "untrained" null.

    python -m probekit.studies.bogdan2025.untrained results/smollm2-135m+random:0 [more runs ...]

For each experiment x component the claims simulate, the random-init twin's experiment profile
(mean over runs) and its bootstrap sd per layer are written to ``untrained_profiles.json`` beside
this file; :func:`.claims._truth` resamples them to any depth.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from probekit.stimuli.experiments import experiment_profile
from probekit.pipeline import Replication

from .claims import ATTN, RESID, UNTRAINED_FILE
from .experiments import EXPERIMENTS

WANTED = {"items": (RESID, ATTN), "relations": (RESID, ATTN), "analogies": (RESID, ATTN), "buried": (ATTN,)}


def record(run_dirs: list[str | Path], out: Path = UNTRAINED_FILE) -> Path:
    replications = [Replication.load(d) for d in run_dirs]
    prof: dict = {}
    for exp, comps in WANTED.items():
        for comp in comps:
            vals, sds = [], []
            for rep in replications:
                if exp not in rep.results:
                    continue
                v, r = experiment_profile(rep.results[exp], EXPERIMENTS[exp], comp)
                vals.append(np.interp(np.linspace(0, 1, 40), np.linspace(0, 1, len(v)), v))
                sds.append(np.interp(np.linspace(0, 1, 40), np.linspace(0, 1, len(v)), r.std(0, ddof=1)))
            if vals:
                prof.setdefault(exp, {})[comp] = {"mean": np.mean(vals, 0).round(5).tolist(),
                                                  "sd": np.mean(sds, 0).round(5).tolist()}
    out.write_text(json.dumps({"source": [f"{r.model} ({r.n_layers} layers, fingerprint {r.fingerprint})"
                                          for r in replications],
                               "note": "profiles resampled to 40 depths; mean over the runs listed",
                               "profiles": prof}, indent=1))
    return out


if __name__ == "__main__":
    print(f"wrote {record(sys.argv[1:])}")
