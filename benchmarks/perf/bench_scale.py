"""The paper's model shapes on this machine: bf16 vs fp32, streamed vs in memory, the 70B slice.

    .venv/bin/python benchmarks/perf/bench_scale.py dtype    [--layers 2] [--repeats 3] [--short 256] [--long 48]
    .venv/bin/python benchmarks/perf/bench_scale.py oracle3b [--n 24]
    .venv/bin/python benchmarks/perf/bench_scale.py slice70  [--experiments items,relations,analogies]

Each part prints one JSON line (and runs in its own process, so peak RSS is its own).

* ``dtype``: a Llama-3.2-3B-wide model (d 3072, real vocabulary) with ``--layers``
  blocks, fp32 and bf16 copies of the same seeded weights; extraction of the same
  batches (short ``items`` texts at batch 32, ~130-token ``buried`` texts at batch
  16) interleaved, median of ``--repeats``: tokens/s per layer and the bf16/fp32 ratio.
* ``oracle3b``: the 3B-shaped checkpoint (``PROBEKIT_LLAMA_3_2_3B`` or the cache),
  streamed vs in memory in bf16 on ``--n`` stimuli of each pooling: max |diff|
  relative to the vectors' scale, and against fp32 in memory (the bf16 error itself).
* ``slice70``: the Llama-3.3-70B slice (d 8192, FFN 28672, built on demand), streamed in
  bf16 over the given experiments: seconds per layer (read and compute), bytes read,
  peak RSS, tokens/s; extrapolated to the full stimulus set and 80 layers here, and
  to one H100 from FLOPs and disk/PCIe bandwidth (assumptions printed with the numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _checkpoint(shape: str, **kw):
    from probekit.models import llama3
    env = os.environ.get("PROBEKIT_LLAMA_3_2_3B") if shape == "llama-3.2-3b" else None
    return env or str(llama3.ensure_checkpoint(shape, log=print, **kw))


def _padded_tokens(enc, batch_size):
    from probekit.extraction.forward import plan_chunks
    chunks = plan_chunks([len(x) for x in enc.input_ids], batch_size)
    return sum(len(b) * max(len(enc.input_ids[i]) for i in b) for c in chunks for b in c)


def part_dtype(args) -> dict:
    import torch
    from transformers import LlamaForCausalLM

    import probekit.stimuli.sets as S
    from probekit.models import llama3
    from probekit.extraction.forward import encode, extract
    from probekit.models.loading import LoadedModel
    torch.manual_seed(0)
    cfg = llama3.llama_config("llama-3.2-3b", n_layers=args.layers)
    m32 = LlamaForCausalLM._from_config(cfg, dtype=torch.float32).eval()
    m16 = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16).eval()
    m16.load_state_dict({k: v.to(torch.bfloat16) for k, v in m32.state_dict().items()})
    tok = llama3.tokenizer()
    models = {d: LoadedModel(m, tok, f"3b-width-{d}", f"bench-{d}", "random", d)
              for d, m in (("float32", m32), ("bfloat16", m16))}
    work = {"short": (S.load("items").iloc[:args.short], 32), "long": (S.load("buried").iloc[:args.long], 16)}
    out = {"part": "dtype", "layers": args.layers, "d_model": 3072, "threads": torch.get_num_threads()}
    for wname, (df, bs) in work.items():
        ntok = _padded_tokens(encode(tok, df, df.attrs.get("pooling") or "target_mean"), bs)
        times = {d: [] for d in models}
        for _ in range(args.repeats):
            for d, m in models.items():
                t = time.perf_counter()
                extract(m, df, batch_size=bs, progress=False)
                times[d].append(time.perf_counter() - t)
        med = {d: statistics.median(v) for d, v in times.items()}
        out[wname] = {"texts": len(df), "padded_tokens": ntok,
                      "tok_s_fp32": round(ntok / med["float32"], 1), "tok_s_bf16": round(ntok / med["bfloat16"], 1),
                      "bf16_speedup": round(med["float32"] / med["bfloat16"], 2)}
    out["peak_rss_gib"] = round(_rss_gib(), 2)
    return out


def part_oracle3b(args) -> dict:
    import numpy as np

    import probekit.stimuli.sets as S
    from probekit.core.activations import COMPONENTS
    from probekit.extraction.forward import extract
    from probekit.models.loading import load_model
    path = _checkpoint("llama-3.2-3b")
    sets = [S.load("items").iloc[:args.n], S.load("buried").iloc[:args.n]]
    res = {"part": "oracle3b", "checkpoint": path, "n": args.n}
    t = time.perf_counter()
    streamed = load_model(path, dtype="bfloat16", device="cpu", stream_layers=True)
    streamed.plan(sets, batch_size=8)              # both sets in one pass: each weight read once
    a = [extract(streamed, df, batch_size=8, progress=False) for df in sets]
    res["streamed_s"] = round(time.perf_counter() - t, 1)
    res["bytes_read_gb"] = round(streamed.bytes_read / 1e9, 2)
    del streamed
    t = time.perf_counter()
    mem = load_model(path, dtype="bfloat16", device="cpu", stream_layers=False)
    b = [extract(mem, df, batch_size=8, progress=False) for df in sets]
    res["in_memory_s"] = round(time.perf_counter() - t, 1)
    worst_abs, worst_rel = 0.0, 0.0
    for x, y in zip(a, b):
        for l in range(x.n_layers):
            for c in COMPONENTS:
                d = np.abs(x.get(l, c) - y.get(l, c))
                worst_abs = max(worst_abs, float(d.max()))
                worst_rel = max(worst_rel, float(d.max() / (np.abs(y.get(l, c)).max() + 1e-12)))
    res["streamed_vs_in_memory_max_abs"] = worst_abs
    res["streamed_vs_in_memory_max_rel"] = worst_rel
    res["peak_rss_gib"] = round(_rss_gib(), 2)
    return res


def part_slice70(args) -> dict:
    from probekit.stimuli.experiments import EXPERIMENTS
    from probekit.extraction.forward import encode, extract
    from probekit.models.loading import load_model
    path = _checkpoint("llama-3.3-70b-slice")
    m = load_model(path, dtype="bfloat16", device="cpu", stream_layers=True)
    res = {"part": "slice70", "checkpoint": path, "layers": m.n_layers, "d_model": m.d_model,
           "experiments": args.experiments}
    ntok, texts, per_layer, read = 0, 0, [], []
    for name in args.experiments.split(","):
        df = EXPERIMENTS[name].stimuli()
        ntok += _padded_tokens(encode(m.tokenizer, df, df.attrs.get("pooling") or "target_mean"), 32)
        texts += len(df)
        acts = extract(m, df, batch_size=32, progress=None)
        per_layer.append(sum(x["total_s"] for x in m.timings["layers"]))
        read.append(sum(x["read_s"] for x in m.timings["layers"]))
        if args.probe and "probe_s_per_layer" not in res:
            # the probe grid at d = 8192 with the real stimulus count and the pipeline's settings
            from probekit.pipeline import probe_experiment
            t = time.perf_counter()
            probe_experiment(acts, EXPERIMENTS[name], cache=False)
            res["probe_experiment"] = name
            res["probe_s_per_layer"] = round((time.perf_counter() - t) / m.n_layers, 1)
    L = m.n_layers
    s_layer = sum(per_layer) / L
    s_read = sum(read) / L
    res.update({"texts": texts, "padded_tokens": ntok, "s_per_layer": round(s_layer, 1),
                "s_read_per_layer": round(s_read, 2), "bytes_read_gb": round(m.bytes_read / 1e9, 2),
                "tok_s": round(ntok / (s_layer - s_read), 1), "peak_rss_gib": round(_rss_gib(), 2)})
    # extrapolation to the full stimulus set and 80 layers
    from probekit.models import llama3
    full_tok = 0
    for name, exp in EXPERIMENTS.items():
        df = exp.stimuli()
        full_tok += _padded_tokens(encode(m.tokenizer, df, df.attrs.get("pooling") or "target_mean"), 32)
    cfg80 = llama3.llama_config("llama-3.3-70b-slice", n_layers=80)
    block_params = (llama3.n_params(cfg80) - 2 * cfg80.vocab_size * cfg80.hidden_size - cfg80.hidden_size) / 80
    flop_layer = 2 * block_params * full_tok            # matmul FLOPs (attention scores at <= 131 tokens: < 1 %)
    cpu_flops = 2 * block_params * ntok / (s_layer - s_read)
    res["extrapolation"] = {
        "full_set_padded_tokens": full_tok,
        "cpu_here": {"flop_s_measured": round(cpu_flops / 1e9, 1),
                     "s_per_layer_full_set": round(flop_layer / cpu_flops + s_read, 0),
                     "hours_80_layers": round(80 * (flop_layer / cpu_flops + s_read) / 3600, 1)},
        "h100": {"assume": "bf16 dense 989 TFLOP/s at 40% utilisation; weights 141 GB read once from NVMe at "
                           "3 GB/s (page-cached: PCIe 4 x16 at 25 GB/s); hidden states on the GPU",
                 "compute_s_80_layers": round(80 * flop_layer / (0.4 * 989e12), 0),
                 "read_s_nvme": round(141e9 / 3e9, 0), "read_s_pcie": round(141e9 / 25e9, 0),
                 "peak_gpu_gib": round((2 * cfg80.vocab_size * cfg80.hidden_size / 2 + block_params) * 2 / 2**30
                                       + full_tok * cfg80.hidden_size * 2 / 2**30, 1)},
    }
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["dtype", "oracle3b", "slice70"])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--short", type=int, default=256, help="dtype: short items texts (batch 32)")
    p.add_argument("--long", type=int, default=48, help="dtype: ~130-token buried texts (batch 16)")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--experiments", default="items,relations,analogies")
    p.add_argument("--probe", type=int, default=1, help="slice70: also time the probe grid on the first experiment")
    a = p.parse_args()
    fn = {"dtype": part_dtype, "oracle3b": part_oracle3b, "slice70": part_slice70}[a.part]
    print(json.dumps(fn(a)), flush=True)


if __name__ == "__main__":
    main()
