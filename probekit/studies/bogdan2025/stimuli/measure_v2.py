#!/usr/bin/env python
"""Measure the v2 stimulus sets on the embedded models (numbers quoted in stimuli/README.md).

    python stimuli/measure_v2.py [--models smollm2-135m gemma3-270m] [--components resid_pre]

Per model: layer-0 and peak balanced accuracy (resid_pre, 6-fold group CV, the grid's fast probe,
no permutations) of senses, analogies (primary and secondary condition), the pair-only baselines,
relations_eats, items (mean of primary labels); and the transfer items -> items_heldout per layer.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

import probekit  # noqa: E402
from probekit.stimuli import sets as S  # noqa: E402
from probekit.models.loading import load_model  # noqa: E402
from probekit.probes.grid import probe_grid  # noqa: E402
from probekit.probes.transfer import transfer_scores  # noqa: E402

CONDITIONS = [  # name, set, query, labels
    ("items", "items", None, ["living", "animal", "edible", "man_made", "larger_than_person", "found_indoors"]),
    ("senses", "senses", None, ["animal_sense"]),
    ("relations_eats", "relations_eats", None, ["eats"]),
    ("analogies", "analogies", "invalid_kind != 'wrong_d'", ["valid"]),
    ("analogies_ab_only", "analogy_pairs", "pair == 'ab' and invalid_kind != 'wrong_d'", ["valid"]),
    ("analogies_cd_only", "analogy_pairs", "pair == 'cd' and invalid_kind != 'wrong_d'", ["valid"]),
    ("analogies_wrong_d", "analogies", "invalid_kind != 'cross_relation'", ["valid"]),
    ("analogies_wrong_d_cd_only", "analogy_pairs", "pair == 'cd' and invalid_kind != 'cross_relation'", ["valid"]),
]


def _subset(df, query):
    if not query:
        return df
    attrs = dict(df.attrs)
    out = df.query(query).reset_index(drop=True)
    out.attrs = attrs
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--components", nargs="+", default=["resid_pre"])
    args = ap.parse_args(argv)
    rows, trans = [], []
    for mname in args.models:
        model = load_model(mname)
        acts_cache = {}
        for name, set_name, query, labels in CONDITIONS:
            stim = _subset(S.load(set_name), query)
            acts = probekit.extract(model, stim, batch_size=64, store=False)
            acts_cache[name] = acts
            res = probe_grid(acts, labels, n_permutations=0, n_bootstrap=0, control_task=False,
                             surface_baseline=False, components=args.components)
            for comp in args.components:
                prof = np.mean([res.profile(l, comp, "balanced_accuracy").value.to_numpy() for l in labels], 0)
                pk = int(np.argmax(prof))
                rows.append({"model": mname, "experiment": name, "component": comp, "n": len(stim),
                             "layer0": round(float(prof[0]), 3), "peak": round(float(prof[pk]), 3),
                             "peak_layer": pk, "n_layers": len(prof), "gap": round(float(prof[pk] - prof[0]), 3)})
                print(rows[-1], flush=True)
        held = probekit.extract(model, S.load("items_heldout"), batch_size=64, store=False)
        t = transfer_scores(acts_cache["items"], held, components=args.components)
        t.insert(0, "model", mname)
        trans.append(t)
    out = pd.DataFrame(rows)
    print(out.to_string())
    t = pd.concat(trans)
    ba = t[t.metric == "balanced_accuracy"]
    summ = ba.groupby(["model", "component", "layer"]).value.mean().unstack("layer").round(3)
    print("\ntransfer items -> items_heldout, mean balanced accuracy over the 6 binary labels:")
    print(summ.to_string())
    print(ba.pivot_table(index=["model", "label"], columns="layer", values="value").round(2).to_string())
    return out, t


if __name__ == "__main__":
    main()
