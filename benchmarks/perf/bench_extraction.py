"""Extraction speed and memory on SmolLM2-135M, measured side by side in one run.

    .venv/bin/python benchmarks/perf/bench_extraction.py [--repeats 3] [--model smollm2-135m]

Throughput: the hooked extraction (resid_pre/attn_out/mlp_out pooled on every
layer) against a bare forward pass of the base model on the same batches,
interleaved, median of repeats; target ratio >= 0.9.
Memory: peak RSS growth over the loaded model, each variant in its own
subprocess: pooled hooks vs ``output_hidden_states=True`` keeping every position
(residual stream only), and vs keeping every position of all three components.
Two workloads: 512 short texts ("An apple", ...) at batch 64 and 64 ~130-token
texts at batch 16.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def workloads():
    import pandas as pd
    import probekit.stimuli as S
    items = S.load("items")
    short = pd.concat([items] * 2, ignore_index=True).iloc[:512][["text", "target"]]
    buried = S.load("buried")
    long = buried.iloc[:64][["text", "target"]]
    return {"short": (short, 64, "target_mean"), "long": (long, 16, "last_token")}


def _batches(model, df, batch_size, pooling):
    from probekit.extraction import encode, plan_chunks
    enc = encode(model.tokenizer, df, pooling)
    chunks = plan_chunks([len(x) for x in enc.input_ids], batch_size)
    return enc, [b for c in chunks for b in c]


def _bare(model, enc, batches, **kw):
    """The base model's forward on the same padded batches, nothing captured (unless kw asks)."""
    import torch
    from probekit.adapters import base_model
    from probekit.extraction import pad_batch
    outs = []
    for rows in batches:
        x, m, _ = pad_batch([enc.input_ids[i] for i in rows], model.tokenizer.pad_token_id)
        with torch.inference_mode():
            out = base_model(model.model)(input_ids=x, attention_mask=m, use_cache=False, **kw)
        if kw:
            outs.append([h.clone() for h in out.hidden_states])
    return outs


def _hidden_states(model, enc, batches):
    """Without hooks: keep every position of every layer (residual stream only)."""
    return _bare(model, enc, batches, output_hidden_states=True)


def _all_positions(model, enc, batches):
    """Hooks that keep every position of the three components (no pooling)."""
    from probekit.adapters import adapter_for, blocks, sublayer
    kept, handles = [], []
    ad = adapter_for(model.model)
    keep = lambda m, a, o: kept.append((o[0] if isinstance(o, tuple) else o).clone())
    for block in blocks(model.model):
        handles.append(block.register_forward_pre_hook(lambda m, a, k: kept.append((a[0] if a else k["hidden_states"]).clone()), with_kwargs=True))
        handles += [sublayer(block, ad.attn).register_forward_hook(keep), sublayer(block, ad.mlp).register_forward_hook(keep)]
    try:
        _bare(model, enc, batches)
    finally:
        for h in handles:
            h.remove()
    return kept


def _hooked(model, enc, batches):
    from probekit.extraction import _forward, _Hooks
    hooks = _Hooks(model.model)
    try:
        for rows in batches:
            _forward(model.model, hooks, [enc.input_ids[i] for i in rows], [enc.weights[i] for i in rows],
                     model.tokenizer.pad_token_id)
    finally:
        hooks.remove()


def child(variant: str, workload: str, model_name: str) -> None:
    """Run one variant once in this process and print its peak-RSS growth (MiB)."""
    import probekit
    model = probekit.load_model(model_name)
    df, bs, pooling = workloads()[workload]
    enc, batches = _batches(model, df, bs, pooling)
    _bare(model, enc, batches[:1])                       # warm up allocator and kernels
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if variant == "hooked":
        acts = probekit.extract(model, df, pooling=pooling, batch_size=bs, progress=False)
        keep = [acts.get(l, c) for l in acts.layers for c in acts.components]
    elif variant == "all_positions":
        keep = _all_positions(model, enc, batches)
    else:
        keep = _hidden_states(model, enc, batches)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mib": (after - before) / 1024}))
    del keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "WORKLOAD"))
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.model)

    import torch
    import probekit
    model = probekit.load_model(args.model)
    print(f"model {model.name}  torch threads {torch.get_num_threads()}")
    for name, (df, bs, pooling) in workloads().items():
        enc, batches = _batches(model, df, bs, pooling)
        n_tokens = sum(len(x) for x in enc.input_ids)
        _bare(model, enc, batches)                        # warm-up
        t_bare, t_hook = [], []
        for _ in range(args.repeats):                     # interleaved: same machine state for both
            t = time.perf_counter(); _bare(model, enc, batches); t_bare.append(time.perf_counter() - t)
            t = time.perf_counter(); _hooked(model, enc, batches); t_hook.append(time.perf_counter() - t)
        b, h = statistics.median(t_bare), statistics.median(t_hook)
        print(f"[{name}] {len(df)} texts, {n_tokens} tokens, batch {bs}: bare {n_tokens / b:,.0f} tok/s, "
              f"hooked {n_tokens / h:,.0f} tok/s, ratio hooked/bare = {b / h:.2f} (target >= 0.90)")
        mem = {}
        for variant in ("hooked", "hidden_states", "all_positions"):
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--child", variant, name],
                                 capture_output=True, text=True, check=True)
            mem[variant] = json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mib"]
        h = max(mem["hooked"], 1e-9)
        print(f"[{name}] peak RSS growth over the loaded model: pooled hooks (3 components) {mem['hooked']:.0f} MiB; "
              f"output_hidden_states (resid only, every position) {mem['hidden_states']:.0f} MiB = "
              f"{mem['hidden_states'] / h:.1f}x; every position of the 3 components {mem['all_positions']:.0f} MiB = "
              f"{mem['all_positions'] / h:.1f}x")


if __name__ == "__main__":
    main()
