"""One long text among short ones: token-budget batching vs batching by count, side by side in one run.

    .venv/bin/python benchmarks/perf/bench_long_text.py [--words 1000] [--model smollm2-135m]

The workload of issue 12: a 12-row set, eleven short texts ("An apple number 3") and one text of
``--words`` words. Batching by count alone (``max_batch_tokens=None``) pads all twelve rows to the long
text's length in one batch; the token budget (default 8192 padded tokens) gives the long text a batch of
its own. Both runs extract the same rows (in memory, no store) and must agree to float tolerance.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=1000)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    import probekit
    from probekit.extraction.forward import DEFAULT_MAX_BATCH_TOKENS

    torch.set_num_threads(1)
    m = probekit.load_model(args.model)
    filler = " ".join(["the meeting ran late and the weather was mild"] * max(1, args.words // 9))
    texts = [f"An apple number {i}" for i in range(11)] + [f"An apple {filler}"]
    stim = pd.DataFrame({"text": texts, "target": ["apple"] * 12})
    ntok = [len(m.tokenizer(t)["input_ids"]) for t in texts]
    print(f"{args.model}: 12 rows, longest {max(ntok)} tokens, {sum(ntok)} real tokens")
    out = {}
    for name, budget in (("token budget", DEFAULT_MAX_BATCH_TOKENS), ("count only", None)):
        t = time.perf_counter()
        out[name] = probekit.extract(m, stim, batch_size=32, max_batch_tokens=budget, progress=False)
        dt = time.perf_counter() - t
        padded = 12 * max(ntok) if budget is None else 11 * max(ntok[:11]) + ntok[11]
        print(f"  {name:<13} {dt:7.1f} s   padded tokens {padded}")
        out[name + " s"] = dt
    a, b = out["token budget"], out["count only"]
    diff = max(float(np.abs(np.asarray(a.get(l, c)) - np.asarray(b.get(l, c))).max())
               for l in a.layers for c in a.components)
    print(f"  ratio count-only / token-budget: {out['count only s'] / out['token budget s']:.1f}x; "
          f"max |difference| of the activations {diff:.2g}")


if __name__ == "__main__":
    main()
