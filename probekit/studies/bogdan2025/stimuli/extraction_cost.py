#!/usr/bin/env python
"""What the stimulus sets cost to extract: texts and padded tokens per set, before and after a change.

    python stimuli/extraction_cost.py --before 0cc2f69            # token counts (tokenizers only)
    nice -n 10 python stimuli/extraction_cost.py --before 0cc2f69 --time smollm2-135m
                                                                    # + one cold extraction of every set

Padded tokens are counted exactly as :func:`probekit.extraction.forward.extract` batches the texts (its
``encode`` and ``plan_batches`` with the default batch size 32 and the default padded-token budget),
with each embedded model's own tokenizer. ``--before REV`` reads the sets of that git revision (the
committed CSV/JSON files) for the comparison. ``--time MODEL`` extracts every set once without the
store (cold; fp32 on the CPU) and reports the seconds: on a shared machine these are rough.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))   # the checkout holding probekit/

from probekit.stimuli import sets as S  # noqa: E402

MODELS = ("smollm2-135m", "gemma3-270m")


def sets_at(rev: str | None) -> dict:
    """The shipped sets at git revision ``rev`` (None: the working tree)."""
    if rev is None:
        return {n: S.load(n) for n in S.names()}
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for n in S.names():
            for ext in (".csv", ".json"):
                blob = subprocess.run(["git", "show", f"{rev}:probekit/studies/bogdan2025/stimuli/{n}{ext}"], cwd=HERE.parents[3],
                                      capture_output=True, check=True).stdout
                (Path(d) / f"{n}{ext}").write_bytes(blob)
            out[n] = S.load_file(Path(d) / f"{n}.csv")
    return out


def padded_tokens(model, df) -> tuple[int, int]:
    """(real tokens, padded tokens) of one extraction of ``df`` by ``model``."""
    from probekit.extraction.forward import DEFAULT_MAX_BATCH_TOKENS, encode, plan_batches
    max_len = getattr(model.model.config, "max_position_embeddings", None)
    enc = encode(model.tokenizer, df, df.attrs.get("pooling", "target_mean"), model.name, max_length=max_len)
    lengths = [len(x) for x in enc.input_ids]
    batches = plan_batches(lengths, 32, DEFAULT_MAX_BATCH_TOKENS)
    return sum(lengths), sum(len(b) * max(lengths[i] for i in b) for b in batches)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="git revision of the sets to compare with (e.g. the last release)")
    ap.add_argument("--time", metavar="MODEL", help="also time one cold extraction of every set on MODEL")
    ap.add_argument("--models", default=",".join(MODELS))
    a = ap.parse_args(argv)
    import probekit
    now = sets_at(None)
    before = sets_at(a.before) if a.before else {}
    models = {m: probekit.load_model(m) for m in a.models.split(",")}
    head = "| set | texts before | texts now |" + "".join(
        f" {m} padded tokens before | {m} now |" for m in models)
    print(head)
    print("|" + "---|" * (3 + 2 * len(models)))
    tot = {}
    for n, df in now.items():
        cells = [n, str(len(before[n])) if n in before else "—", str(len(df))]
        for m, model in models.items():
            pb = padded_tokens(model, before[n])[1] if n in before else 0
            pn = padded_tokens(model, df)[1]
            tot.setdefault(m, [0, 0])
            tot[m][0] += pb
            tot[m][1] += pn
            cells += [f"{pb:,}" if n in before else "—", f"{pn:,}"]
        print("| " + " | ".join(cells) + " |")
    cells = ["**all**", f"{sum(len(d) for d in before.values()):,}" if before else "—",
             f"{sum(len(d) for d in now.values()):,}"]
    for m in models:
        cells += [f"{tot[m][0]:,}" if before else "—", f"{tot[m][1]:,}"]
    print("| " + " | ".join(cells) + " |")
    if a.time:
        model = models.get(a.time) or probekit.load_model(a.time)
        for label, sets in (("before", before), ("now", now)):
            if not sets:
                continue
            t0 = time.perf_counter()
            for df in sets.values():
                probekit.extract(model, df, store=False, progress=False)
            print(f"cold extraction of every set ({label}) on {a.time}: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
