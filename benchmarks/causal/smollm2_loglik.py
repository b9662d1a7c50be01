"""The intervention layer on a real model: SmolLM2-135M (embedded) on the `items` set (docs/causal.md).

Per intervention: the per-stimulus change in mean log p of each text's own tokens (span='text') against
the unintervened model (mean, sd, and how many of the 352 texts got less likely), the wall time of the
read-out, and for zero(mlp_out@0) an extraction under it (how far resid_pre moves per layer, and the wall
time against the ordinary extraction in the same run). Writes benchmarks/causal/smollm2_loglik.json.
``buried N``: the first N texts of the `buried` set instead (long filler texts, ~130 tokens: the read-out
averages over many tokens), read-out only, into smollm2_loglik_buried.json.

    PYTHONPATH=. python benchmarks/causal/smollm2_loglik.py            # items, 352 texts
    PYTHONPATH=. python benchmarks/causal/smollm2_loglik.py buried 64
    PYTHONPATH=. python benchmarks/causal/smollm2_loglik.py profile    # probe profiles with and without

``profile``: the `items` probe profiles (resid_pre, 6-fold group CV, 200 bootstrap replicates) of
animal / living / edible / size, ordinary and under zero(mlp_out@0), into smollm2_profile.json.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import probekit
import probekit.stimuli.sets as S
from probekit.extraction import (Intervention, MeanAblation, PatchResidual, ResampleAblation, SwapBlocks,
                                 ZeroAblation, loglik)
from probekit.models import load_model

OUT = Path(__file__).with_suffix(".json")


def profile(m, items) -> None:
    from probekit.probes import probe_grid
    labels = ["animal", "living", "edible", "size"]
    out = {"model": m.name, "set": "items", "component": "resid_pre", "intervention": "zero(mlp_out@0)"}
    for name, iv in (("none", None), ("zero(mlp_out@0)", ZeroAblation("mlp_out", [0]))):
        t = time.perf_counter()
        acts = probekit.extract(m, items, batch_size=32, progress=False, intervention=iv)
        res = probe_grid(acts, labels=labels, components=["resid_pre"], n_permutations=0, n_bootstrap=200,
                         control_task=False, surface_baseline=False)
        out[name] = {lab: res.profile(lab, "resid_pre")[["layer", "value", "ci_low", "ci_high"]].round(4)
                     .to_dict(orient="list") for lab in labels}
        out[name]["wall_s"] = round(time.perf_counter() - t, 1)
        print(name, out[name]["wall_s"], flush=True)
    OUT.with_name("smollm2_profile.json").write_text(json.dumps(out, indent=1) + "\n")
    for lab in labels:
        a, b = np.array(out["none"][lab]["value"]), np.array(out["zero(mlp_out@0)"][lab]["value"])
        print(lab, "peak", int(a.argmax()), round(a.max(), 3), "->", int(b.argmax()), round(b.max(), 3),
              "mean over layers", round(a.mean(), 3), "->", round(b.mean(), 3))


def main(argv) -> None:
    t0 = time.perf_counter()
    m = load_model("smollm2-135m", dtype="float32", device="cpu")
    load_s = time.perf_counter() - t0
    if argv and argv[0] == "profile":
        return profile(m, S.load("items"))
    set_name = argv[0] if argv else "items"
    items = S.load(set_name)
    if len(argv) > 1:
        items = items.iloc[:int(argv[1])].reset_index(drop=True)
    out_path = OUT if set_name == "items" else OUT.with_name(f"{OUT.stem}_{set_name}.json")
    L = m.n_layers
    ivs = {
        "zero(mlp_out@0)": ZeroAblation("mlp_out", [0]),
        "zero(attn_out@0)": ZeroAblation("attn_out", [0]),
        "mean(mlp_out@0)": MeanAblation("mlp_out", [0]),
        "resample(mlp_out@0)": ResampleAblation("mlp_out", [0], seed=0),
        "zero(mlp_out@15)": ZeroAblation("mlp_out", [15]),
        "swap(14,15)": SwapBlocks(14, 15),
        "patch(resid_pre@15[-1];donor=0)": PatchResidual(15, -1, 0),
        "patch(resid_pre@15[-2];donor=0)": PatchResidual(15, -2, 0),
        "zero(attn_out+mlp_out@all)": Intervention((ZeroAblation("attn_out", range(L)), ZeroAblation("mlp_out", range(L)))),
    }
    t = time.perf_counter()
    base = loglik(m, items, batch_size=32)
    base_s = time.perf_counter() - t
    rows = {"none": {"mean_loglik": float(base.mean()), "wall_s": round(base_s, 2)}}
    for name, iv in ivs.items():
        t = time.perf_counter()
        ll = loglik(m, items, iv, batch_size=32)
        dt = time.perf_counter() - t
        d = ll - base
        rows[name] = {"mean_change": float(d.mean()), "sd_change": float(d.std(ddof=1)),
                      "n_lower": int((d < 0).sum()), "mean_loglik": float(ll.mean()), "wall_s": round(dt, 2),
                      "wall_ratio_to_none": round(dt / base_s, 2)}
        print(name, rows[name], flush=True)
    if set_name != "items":
        out_path.write_text(json.dumps({"model": m.name, "set": set_name, "n_stimuli": len(items),
                                        "n_tokens": int(sum(len(m.tokenizer(t)["input_ids"]) for t in items.text)),
                                        "loglik": rows}, indent=1) + "\n")
        return
    # extraction under zero(mlp_out@0): ordinary vs intervened, wall-time ratio in the same run
    t = time.perf_counter()
    a = probekit.extract(m, items, batch_size=32)
    ext_s = time.perf_counter() - t
    t = time.perf_counter()
    b = probekit.extract(m, items, batch_size=32, intervention=ZeroAblation("mlp_out", [0]))
    ext_iv_s = time.perf_counter() - t
    rel = [float(np.linalg.norm(b.get(l, "resid_pre") - a.get(l, "resid_pre")) / np.linalg.norm(a.get(l, "resid_pre")))
           for l in range(L)]
    out = {"model": m.name, "n_stimuli": len(items), "n_layers": L, "load_s": round(load_s, 1),
           "loglik": rows, "extract_s": round(ext_s, 2), "extract_zero_mlp0_s": round(ext_iv_s, 2),
           "extract_ratio": round(ext_iv_s / ext_s, 2),
           "resid_pre_relative_change_zero_mlp0": [round(x, 4) for x in rel]}
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "loglik"}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
