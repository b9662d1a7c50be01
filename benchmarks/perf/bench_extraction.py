"""Extraction speed and memory, measured side by side in one run (pytest-benchmark).

    pytest benchmarks/perf/bench_extraction.py --benchmark-only [--full] [--model NAME]
    python benchmarks/perf/bench_extraction.py [pytest options]      # the same (a thin wrapper)

Throughput: ``probekit.extract`` (tokenization, resid_pre/attn_out/mlp_out
pooled by hooks on every layer, the copies into the result arrays) is the timed
target; the baseline is a bare forward pass of the base model on the same padded
batches, nothing captured, timed in the same rounds right before each extraction
(interleaved: both see the same machine state). ``extra_info['ratio']`` = bare
time / extraction time, i.e. the extraction's throughput as a fraction of the
bare forward's (target >= 0.9).

Memory: peak RSS growth over the loaded model, each variant in its own fresh
subprocess (``--child``): the pooled hooks (what probekit keeps) against keeping
every position of the three components, and (``--full``) against
``output_hidden_states=True`` (every position, residual stream only).
``extra_info['memory_ratio']`` = every-position growth / pooled growth.

Workloads: ``short`` = "An apple"-style texts of the ``items`` set at batch 64
(quick: 128 texts; ``--full``: 512, the set repeated); ``long`` = ~130-token
texts of the ``buried`` set at batch 16 (quick: 16; ``--full``: 64).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

WORKLOADS = {  # name: (stimulus set, quick n, full n, batch size, pooling)
    "short": ("items", 128, 512, 64, "target_mean"),
    "long": ("buried", 16, 64, 16, "last_token"),
}
ROUNDS = {False: 3, True: 3}


def workload(name: str, full: bool):
    import pandas as pd
    import probekit.stimuli.sets as S
    set_name, n_quick, n_full, bs, pooling = WORKLOADS[name]
    df = S.load(set_name)
    n = n_full if full else n_quick
    reps = -(-n // len(df))
    df = pd.concat([df] * reps, ignore_index=True).iloc[:n][["text", "target"]]
    return df, bs, pooling


def batches(model, df, batch_size, pooling):
    """The extraction's own tokenization and batch plan (sorted by length), flattened."""
    from probekit.extraction.forward import encode, plan_chunks
    enc = encode(model.tokenizer, df, pooling)
    chunks = plan_chunks([len(x) for x in enc.input_ids], batch_size)
    return enc, [b for c in chunks for b in c]


def bare(model, enc, batch_rows, **kw):
    """The base model's forward on the same padded batches, nothing captured (unless ``kw`` asks)."""
    import torch
    from probekit.models.adapters import base_model
    from probekit.extraction.forward import input_device, pad_batch
    dev = input_device(model.model)
    outs = []
    for rows in batch_rows:
        x, m, _ = pad_batch([enc.input_ids[i] for i in rows], model.tokenizer.pad_token_id)
        with torch.inference_mode():
            out = base_model(model.model)(input_ids=x.to(dev), attention_mask=m.to(dev), use_cache=False, **kw)
        if kw:
            outs.append([h.clone() for h in out.hidden_states])
    return outs


def hidden_states(model, enc, batch_rows):
    """Without hooks: every position of every layer (residual stream only)."""
    return bare(model, enc, batch_rows, output_hidden_states=True)


def all_positions(model, enc, batch_rows):
    """Hooks that keep every position of the three components (no pooling)."""
    from probekit.models.adapters import adapter_for, blocks, sublayer
    kept, handles = [], []
    ad = adapter_for(model.model)

    def keep(m, a, o):
        kept.append((o[0] if isinstance(o, tuple) else o).clone())

    def keep_pre(m, a, k):
        kept.append((a[0] if a else k["hidden_states"]).clone())

    for block in blocks(model.model):
        handles.append(block.register_forward_pre_hook(keep_pre, with_kwargs=True))
        handles += [sublayer(block, ad.attn).register_forward_hook(keep), sublayer(block, ad.mlp).register_forward_hook(keep)]
    try:
        bare(model, enc, batch_rows)
    finally:
        for h in handles:
            h.remove()
    return kept


def extract(model, df, bs, pooling):
    import probekit
    return probekit.extract(model, df, pooling=pooling, batch_size=bs, store=None, progress=False)


def child(variant: str, workload_name: str, model_name: str, full: bool) -> None:
    """Run one variant once in this (fresh) process; print its peak-RSS growth in MiB as JSON."""
    import resource

    import probekit

    from benchmarks.perf.harness import apply_threads, peak_rss_reset, status_kib
    apply_threads()                                        # the same threads as the parent run
    model = probekit.load_model(model_name)
    df, bs, pooling = workload(workload_name, full)
    enc, rows = batches(model, df, bs, pooling)
    bare(model, enc, rows[:1])                             # warm up allocator and kernels
    before = peak_rss_reset()                              # forget the load's transient peak (Linux)
    if before is None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if variant == "hooked":
        acts = extract(model, df, bs, pooling)
        keep = [acts.get(l, c) for l in acts.layers for c in acts.components]
    elif variant == "all_positions":
        keep = all_positions(model, enc, rows)
    elif variant == "hidden_states":
        keep = hidden_states(model, enc, rows)
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    try:
        after = status_kib("VmHWM")
    except OSError:
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mib": (after - before) / 1024}))
    del keep


def peak_growth(variant: str, workload_name: str, model_name: str, full: bool) -> float:
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, "-m", "benchmarks.perf.bench_extraction", "--child", variant, workload_name, model_name]
    out = subprocess.run(cmd + (["--full"] if full else []), capture_output=True, text=True, cwd=root, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory child {variant}/{workload_name} failed:\n{out.stderr[-3000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mib"])


@pytest.mark.parametrize("workload_name", list(WORKLOADS))
def test_extraction(benchmark, bench_model, loaded_model, full, workload_name):
    import statistics
    import time

    import numpy as np

    import torch

    from .harness import set_ratio
    model = loaded_model
    df, bs, pooling = workload(workload_name, full)
    enc, rows = batches(model, df, bs, pooling)
    n_tokens = sum(len(x) for x in enc.input_ids)
    bare(model, enc, rows)                                  # warm-up of both paths
    acts = extract(model, df, bs, pooling)
    assert acts.n_layers == model.n_layers and np.isfinite(acts.get(0, "resid_pre")).all()

    bare_times: list[float] = []

    def time_bare():                                        # untimed by pytest-benchmark: our baseline
        t0 = time.perf_counter()
        bare(model, enc, rows)
        bare_times.append(time.perf_counter() - t0)

    benchmark.pedantic(extract, args=(model, df, bs, pooling), setup=time_bare, rounds=ROUNDS[full])

    b = statistics.median(bare_times)
    set_ratio(benchmark, b, "bare forward time / extraction time on the same batches, interleaved "
              "(= extraction throughput as a fraction of the bare forward's)", target=0.9)
    t = benchmark.extra_info["median_s"]
    info = benchmark.extra_info
    info.update(model=model.name, workload=workload_name, n_stimuli=len(df), n_tokens=n_tokens, batch_size=bs,
                pooling=pooling, n_layers=model.n_layers, d_model=model.d_model, torch_threads=torch.get_num_threads(),
                baseline_tokens_per_s=n_tokens / b)
    if t:
        info.update(tokens_per_s=n_tokens / t, stimuli_per_s=len(df) / t)
    variants = ["hooked", "all_positions"] + (["hidden_states"] if full else [])
    mem = {v: peak_growth(v, workload_name, model.name, full) for v in variants}
    info.update({f"peak_rss_growth_mib_{v}": m for v, m in mem.items()})
    info["memory_ratio"] = mem["all_positions"] / max(mem["hooked"], 1e-9)
    info["memory_ratio_meaning"] = ("peak RSS growth keeping every position of the 3 components / "
                                    "with probekit's pooled hooks (fresh subprocess each)")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        variant, wl, model_name = argv[1:4]
        child(variant, wl, model_name, full="--full" in argv[4:])
        return 0
    return pytest.main([__file__, "--benchmark-only", *argv])


if __name__ == "__main__":
    sys.exit(main())
