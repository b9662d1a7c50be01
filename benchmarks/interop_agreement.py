"""probekit against TransformerLens and nnsight: the measured agreement of docs/interop.md.

Needs a Python where ``transformer_lens`` (>= 4: ``TransformerBridge``) and ``nnsight`` import (see
docs/interop.md; tests/test_interop.py builds such a venv and runs this script). CPU, fp32.

    python benchmarks/interop_agreement.py --json out.json            # tiny models + SmolLM2-135M
    python benchmarks/interop_agreement.py --full --write-docs        # + Gemma-3-270M; rewrites the table

For every model, probekit's own extraction (``probekit.extract`` on a model it loaded, in memory) is the
reference; each row is the worst relative difference ``|a - b| / |b|`` (L2 over d_model, max over stimuli,
layers and both poolings) of:

* ``extract(bridge)`` / ``extract(nnsight)`` / ``extract((hf, tok))``: the adapters (a second copy of the
  weights, since TransformerLens switches its model to eager attention);
* ``TL cache``: ``bridge.run_with_cache`` on probekit's tokens (``target_token_weights``), pooled by
  ``ActivationSet.from_cache`` -- TransformerLens' own hooks ``blocks.{l}.hook_resid_pre`` etc.;
* ``nnsight trace``: ``layers[l].input``, attention and MLP outputs saved in a trace (on Gemma the
  post-sublayer norms' outputs, see the convention rows);

with padding (all texts in one right-padded batch) and without (one text per pass). Convention rows
measure what a user who does it the tool's default way gets: TransformerLens' ``to_tokens`` (prepends
BOS) on SmolLM2, and nnsight's ``self_attn.output[0]`` / ``mlp.output`` on Gemma (before the post norms).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "interop.md"

#: single and multi-token targets, several targets, a first-match rule, a longer "buried" text
TEXTS = pd.DataFrame({
    "text": ["An apple", "A chrysanthemum", "The cat chased the dog", "A dog is to a puppy as a cat is to a kitten",
             "Under the old bridge, where the river bends, the ferryman kept a lantern burning all night",
             "The bank raised its rates while the river bank flooded"],
    "target": ["apple", "chrysanthemum", "dog", "dog|cat", "lantern", "bank"],
})
COMPS = ("resid_pre", "attn_out", "mlp_out")
TINY = ("llama", "qwen2", "gemma3_text")


def rel(a: np.ndarray, b: np.ndarray) -> float:
    num = np.linalg.norm(a.astype(np.float64) - b.astype(np.float64), axis=1)
    den = np.maximum(np.linalg.norm(b.astype(np.float64), axis=1), 1e-30)
    return float((num / den).max())


def worst(acts, ref, comps=COMPS) -> float:
    return max(rel(acts.get(l, c), ref.get(l, c)) for l in ref.layers for c in comps)


def _stim():
    stim = TEXTS.copy()
    stim["target"] = stim["target"].str.split("|").map(lambda x: x if len(x) > 1 else x[0])
    return stim


def load_pair(which: str, seed: int = 0):
    """Two independent copies of the same model (probekit's reference, the tools' copy)."""
    import probekit
    from probekit.models.testing import tiny_model
    if which.startswith("tiny-"):
        import tempfile

        from transformers import AutoTokenizer
        pair = tiny_model(which[5:], seed=seed), tiny_model(which[5:], seed=seed)
        d = tempfile.mkdtemp(prefix=f"probekit-{which}-")     # TransformerLens reloads a tokenizer by its path
        for m in pair:                       # TransformerLens picks its adapter by config.architectures
            m.model.config.architectures = [type(m.model).__name__]
        pair[1].tokenizer.save_pretrained(d)
        pair[1].model.config.save_pretrained(d)
        pair[1].tokenizer = AutoTokenizer.from_pretrained(d)
        return pair
    return probekit.load_model(which), probekit.load_model(which)


def tl_cache_acts(bridge, tw, stim, batched: bool):
    import torch
    from probekit.core.activations import ActivationSet
    names = lambda n: n.endswith(("hook_resid_pre", "hook_attn_out", "hook_mlp_out"))  # noqa: E731
    ids, mask = torch.tensor(tw.input_ids), torch.tensor(tw.attention_mask)
    parts = []
    groups = [list(range(len(stim)))] if batched else [[i] for i in range(len(stim))]
    for rows in groups:
        T = int(mask[rows].sum(1).max())
        with torch.no_grad():
            _, cache = bridge.run_with_cache(ids[rows, :T], attention_mask=mask[rows, :T], names_filter=names)
        parts.append({k: cache[k].float().numpy() for k in cache.keys()})
    pooled = {}
    for k in parts[0]:
        pooled[k] = np.concatenate([_pool_rows(tw, rows, p[k]) for rows, p in zip(groups, parts)])
    return ActivationSet.from_cache(pooled, stim, model_name="tl")


def _pool_rows(tw, rows, a):
    w = tw.weights[rows, :a.shape[1]].astype(np.float64)
    return np.einsum("nt,ntd->nd", w, a.astype(np.float64)).astype(np.float32)


def nnsight_acts(lm, tw, stim, batched: bool, gemma_modules: str = "post_norm"):
    """``gemma_modules``: ``post_norm`` (post_attention_layernorm / post_feedforward_layernorm outputs: what
    enters the stream) or ``raw`` (self_attn.output[0] / mlp.output: nnsight's obvious choice)."""
    import torch
    from probekit.core.activations import ActivationSet
    gemma = "gemma" in lm.config.model_type
    L = lm.config.num_hidden_layers
    ids, mask = torch.tensor(tw.input_ids), torch.tensor(tw.attention_mask)
    groups = [list(range(len(stim)))] if batched else [[i] for i in range(len(stim))]
    out = {}
    for rows in groups:
        T = int(mask[rows].sum(1).max())
        saved = {}
        with torch.no_grad(), lm.trace({"input_ids": ids[rows, :T], "attention_mask": mask[rows, :T]}):
            for l in range(L):
                layer = lm.model.layers[l]
                saved[(l, "resid_pre")] = layer.input.save()
                if gemma and gemma_modules == "post_norm":
                    saved[(l, "attn_out")] = layer.post_attention_layernorm.output.save()
                    saved[(l, "mlp_out")] = layer.post_feedforward_layernorm.output.save()
                else:
                    saved[(l, "attn_out")] = layer.self_attn.output[0].save()
                    saved[(l, "mlp_out")] = layer.mlp.output.save()
        for k, v in saved.items():
            v = v[0] if isinstance(v, (tuple, list)) else v
            out.setdefault(k, []).append(_pool_rows(tw, rows, v.float().numpy()))
    return ActivationSet.from_arrays({k: np.concatenate(v) for k, v in out.items()}, stim, model_name="nnsight")


def measure_model(which: str) -> dict:
    import torch
    from nnsight import LanguageModel
    from transformer_lens.model_bridge import TransformerBridge

    import probekit
    from probekit.extraction.interop import target_token_weights
    torch.set_num_threads(1)
    stim = _stim()
    ref_model, tool_model = load_pair(which)
    t0 = time.perf_counter()
    ref = {p: probekit.extract(ref_model, stim, p, store=None, progress=False) for p in ("target_mean", "last_token")}
    hf, tok = tool_model.model, tool_model.tokenizer
    bridge = TransformerBridge.boot_transformers(which, hf_model=hf, tokenizer=tok, device="cpu", dtype=torch.float32)
    lm = LanguageModel(hf, tokenizer=tok)
    rows: dict[str, float] = {}
    for p in ("target_mean", "last_token"):
        r = ref[p]
        tw = target_token_weights(tok, stim, p)
        for label, obj in (("extract(bridge)", bridge), ("extract(nnsight)", lm), ("extract((hf, tok))", (hf, tok))):
            a = probekit.extract(obj, stim, p, store=None, progress=False)
            rows[label] = max(rows.get(label, 0.0), worst(a, r))
        for batched, pad in ((True, "padded"), (False, "unpadded")):
            a = tl_cache_acts(bridge, tw, stim, batched)
            for c in COMPS:
                key = f"TL cache {c} ({pad})"
                rows[key] = max(rows.get(key, 0.0), worst(a, r, (c,)))
            a = nnsight_acts(lm, tw, stim, batched)
            for c in COMPS:
                key = f"nnsight trace {c} ({pad})"
                rows[key] = max(rows.get(key, 0.0), worst(a, r, (c,)))
    conventions = {}
    r = ref["target_mean"]
    if getattr(tok, "bos_token_id", None) is not None and tok("a")["input_ids"][0] != tok.bos_token_id:
        # TransformerLens' to_tokens prepends BOS; probekit's (the tokenizer's own) tokens have none
        tw = target_token_weights(tok, stim, "target_mean")
        with torch.no_grad():
            toks = bridge.to_tokens(list(stim.text), padding_side="right")
            _, cache = bridge.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_resid_pre"))
        shifted = np.zeros((len(stim), toks.shape[1]), np.float32)
        shifted[:, 1:tw.weights.shape[1] + 1] = tw.weights[:, :toks.shape[1] - 1]
        d = []
        for l in range(1, r.n_layers):
            theirs = np.einsum("nt,ntd->nd", shifted, cache[f"blocks.{l}.hook_resid_pre"].numpy())
            ours = r.get(l, "resid_pre")
            d.append(np.median(np.linalg.norm(theirs - ours, axis=1) / np.linalg.norm(ours, axis=1)))
        conventions["to_tokens (BOS prepended): median rel. change of pooled resid_pre, layers >= 1"] = \
            float(np.median(d))
        conventions["to_tokens (BOS prepended): max over layers of that median"] = float(np.max(d))
    if "gemma" in hf.config.model_type:
        tw = target_token_weights(tok, stim, "target_mean")
        a = nnsight_acts(lm, tw, stim, True, gemma_modules="raw")
        conventions["nnsight self_attn.output[0] vs attn_out (before the post norm): min rel"] = min(
            rel(a.get(l, "attn_out"), r.get(l, "attn_out")) for l in r.layers)
        conventions["nnsight mlp.output vs mlp_out (before the post norm): min rel"] = min(
            rel(a.get(l, "mlp_out"), r.get(l, "mlp_out")) for l in r.layers)
    return {"model": which, "n_layers": r.n_layers, "n_texts": len(stim), "rows": rows,
            "conventions": conventions, "seconds": round(time.perf_counter() - t0, 1)}


def hooked_transformer(which: str):
    """A TransformerLens < 4 ``HookedTransformer`` of probekit's model ``which``, built offline from the
    checkpoint directory probekit loaded (TL's name list has no SmolLM2), weights not processed."""
    import torch
    import transformer_lens.loading_from_pretrained as lp
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    import probekit
    m = probekit.load_model(which)
    path = m.model.config._name_or_path
    cfgd = dict(lp.convert_hf_model_config(path), dtype=torch.float32, device="cpu")
    fields = HookedTransformerConfig.__dataclass_fields__
    cfg = HookedTransformerConfig(**{k: v for k, v in cfgd.items() if k in fields})
    ht = HookedTransformer(cfg, tokenizer=m.tokenizer, default_padding_side="right")
    ht.load_and_process_state_dict(lp.get_pretrained_state_dict(path, cfg, hf_model=m.model), fold_ln=False,
                                   center_writing_weights=False, center_unembed=False, fold_value_biases=False,
                                   refactor_factored_attn_matrices=False)
    return ht.eval()


def measure_hooked(which: str) -> dict:
    """``extract(HookedTransformer)`` (TL's own forward pass and hooks) and a TL cache pooled with
    ``target_token_weights``, against probekit's extraction."""
    import torch

    import probekit
    from probekit.extraction.interop import target_token_weights
    torch.set_num_threads(1)
    stim = _stim()
    t0 = time.perf_counter()
    ref_model = probekit.load_model(which)
    ht = hooked_transformer(which)
    rows: dict[str, float] = {}
    names = lambda n: n.endswith(("hook_resid_pre", "hook_attn_out", "hook_mlp_out"))  # noqa: E731
    for p in ("target_mean", "last_token"):
        r = probekit.extract(ref_model, stim, p, store=None, progress=False)
        a = probekit.extract(ht, stim, p, store=None, progress=False)
        rows["extract(HookedTransformer)"] = max(rows.get("extract(HookedTransformer)", 0.0), worst(a, r))
        tw = target_token_weights(ref_model.tokenizer, stim, p)
        for batched, pad in ((True, "padded"), (False, "unpadded")):
            groups = [list(range(len(stim)))] if batched else [[i] for i in range(len(stim))]
            pooled: dict = {}
            for g in groups:
                T = int(tw.attention_mask[g].sum(1).max())
                with torch.no_grad():
                    _, cache = ht.run_with_cache(torch.tensor(tw.input_ids[g, :T]),
                                                 attention_mask=torch.tensor(tw.attention_mask[g, :T]),
                                                 names_filter=names)
                for k in cache.keys():
                    pooled.setdefault(k, []).append(_pool_rows(tw, g, cache[k].numpy()))
            a = probekit.ActivationSet.from_cache({k: np.concatenate(v) for k, v in pooled.items()}, stim)
            for c in COMPS:
                key = f"HookedTransformer cache {c} ({pad})"
                rows[key] = max(rows.get(key, 0.0), worst(a, r, (c,)))
    return {"model": which, "n_layers": ref_model.n_layers, "n_texts": len(stim), "rows": rows, "conventions": {},
            "seconds": round(time.perf_counter() - t0, 1)}


def sklearn_on_tl(which: str = "smollm2-135m", experiment: str = "items", n_labels: int = 2) -> dict:
    """probe_grid on activations from a TransformerLens cache vs a scikit-learn pipeline
    (StandardScaler + RidgeClassifierCV, probekit's alphas) on probe_grid's own folds."""
    import torch
    from sklearn.base import clone
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from transformer_lens.model_bridge import TransformerBridge

    import probekit
    from probekit.extraction.interop import target_token_weights
    from probekit.probes.grid import DEFAULT_ALPHAS, probe_grid
    from probekit.studies import load_study
    exp = load_study("bogdan2025").experiments[experiment]
    stim = exp.stimuli()
    m = probekit.load_model(which)
    bridge = TransformerBridge.boot_transformers(which, hf_model=m.model, tokenizer=m.tokenizer, device="cpu",
                                                 dtype=torch.float32)
    tw = target_token_weights(bridge.tokenizer, stim)
    names = lambda n: n.endswith("hook_resid_pre")  # noqa: E731
    pooled: dict = {}
    ids, mask = torch.tensor(tw.input_ids), torch.tensor(tw.attention_mask)
    for s in range(0, len(stim), 64):
        rows = list(range(s, min(s + 64, len(stim))))
        T = int(mask[rows].sum(1).max())
        with torch.no_grad():
            _, cache = bridge.run_with_cache(ids[rows, :T], attention_mask=mask[rows, :T], names_filter=names)
        for k in cache.keys():
            pooled.setdefault(k, []).append(_pool_rows(tw, rows, cache[k].numpy()))
    acts = probekit.ActivationSet.from_cache({k: np.concatenate(v) for k, v in pooled.items()}, stim, model_name=which)
    labels = list(exp.primary_labels(acts.stimuli))[:n_labels]
    res = probe_grid(acts, labels=labels, n_permutations=0, n_bootstrap=0, control_task=False, surface_baseline=False)
    diffs = []
    for label in labels:
        p = res.predictions[label]
        y = p.y.astype(int)
        for layer in acts.layers:
            X = acts.get(layer, "resid_pre")[p.rows]
            pred = np.empty(len(y), dtype=int)
            for k in np.unique(p.folds):
                tr, te = p.folds != k, p.folds == k
                pred[te] = make_pipeline(StandardScaler(), clone(RidgeClassifierCV(alphas=DEFAULT_ALPHAS))).fit(
                    X[tr], y[tr]).predict(X[te])
            ours = res.scores.query("label == @label and layer == @layer and metric == 'balanced_accuracy'")
            ours = ours.value.item()
            diffs.append(abs(ours - balanced_accuracy_score(y, pred)))
    return {"model": which, "experiment": experiment, "labels": labels, "cells": len(diffs),
            "max_abs_diff_balanced_accuracy": float(max(diffs)), "n_stimuli": len(stim)}


def docs_example() -> dict:
    """Run the docs' "TransformerLens cache -> claims table" blocks as they are written: the setup block
    (a model and its bridge), then the route itself, whose lines of code are counted."""
    text = DOC.read_text()
    blocks = {}
    for name in ("setup", "example"):
        m = re.search(rf"<!-- {name}:start -->\s*```python\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
        if m is None:
            raise SystemExit(f"{DOC}: no python block between <!-- {name}:start --> and <!-- {name}:end -->")
        blocks[name] = m.group(1)
    ns: dict = {}
    for name, code in blocks.items():
        exec(compile(code, f"{DOC}:{name}", "exec"), ns)
    lines = [ln for ln in blocks["example"].splitlines() if ln.strip() and not ln.strip().startswith("#")]
    table = ns.get("table")
    return {"lines_of_code": len(lines), "claims_table_rows": 0 if table is None else int(len(table)),
            "claims": [] if table is None else sorted(set(table.claim)),
            "markdown": None if table is None else str(ns.get("md", ""))}


def markdown(results: list[dict], sk: dict | None) -> str:
    out = ["| model | layers | what | worst rel. difference |", "|---|---|---|---|"]
    for r in results:
        for k, v in r["rows"].items():
            out.append(f"| {r['model']} | {r['n_layers']} | {k} | {v:.1e} |")
    conv = [(r["model"], k, v) for r in results for k, v in r["conventions"].items()]
    if conv:
        out += ["", "Conventions (what the tool's default gives instead; not errors):", "",
                "| model | convention | value |", "|---|---|---|"]
        out += [f"| {m} | {k} | {v:.3g} |" for m, k, v in conv]
    if sk:
        out += ["", f"scikit-learn (StandardScaler + RidgeClassifierCV) on TransformerLens `resid_pre` of "
                    f"{sk['model']}, `{sk['experiment']}` ({sk['n_stimuli']} texts), labels {', '.join(sk['labels'])}, "
                    f"on probe_grid's folds: {sk['cells']} label x layer cells, largest |difference| of balanced "
                    f"accuracy {sk['max_abs_diff_balanced_accuracy']:.3g}."]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="tiny-FAMILY or probekit model names")
    ap.add_argument("--full", action="store_true", help="also gemma3-270m")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--docs-example", action="store_true", help="run the docs' from_cache example")
    ap.add_argument("--hooked", action="store_true",
                    help="TransformerLens < 4: HookedTransformer on SmolLM2-135M only (a Python with TL 3.x)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write-docs", action="store_true", help=f"rewrite the table in {DOC.relative_to(ROOT)}")
    a = ap.parse_args(argv)
    from importlib.metadata import version
    if a.hooked:
        return _main_hooked(a, version)
    import nnsight
    import transformer_lens
    models = a.models if a.models is not None else [f"tiny-{f}" for f in TINY] + ["smollm2-135m"] + (
        ["gemma3-270m"] if a.full else [])
    results = []
    for m in models:
        results.append(measure_model(m))
        print(f"{m}: {results[-1]['seconds']} s", file=sys.stderr, flush=True)
    sk = None if a.no_sklearn else sklearn_on_tl()
    ex = docs_example() if a.docs_example else None
    env = {"transformer_lens": version("transformer_lens"), "nnsight": version("nnsight"),
           "transformers": version("transformers"), "torch": version("torch")}
    payload = {"env": env, "models": results, "sklearn": sk, "docs_example": ex}
    del nnsight, transformer_lens
    md = markdown(results, sk)
    print(md)
    if a.json:
        a.json.write_text(json.dumps(payload, indent=1))
    if a.write_docs:
        _write_block("agreement", f"Measured by `python benchmarks/interop_agreement.py --full --write-docs` "
                     f"(TransformerLens {env['transformer_lens']}, nnsight {env['nnsight']}, transformers "
                     f"{env['transformers']}, torch {env['torch']}; CPU, fp32, {len(TEXTS)} texts):\n\n{md}")
    return 0


def _main_hooked(a, version) -> int:
    res = measure_hooked("smollm2-135m")
    env = {"transformer_lens": version("transformer_lens"), "transformers": version("transformers"),
           "torch": version("torch")}
    md = markdown([res], None)
    print(md)
    if a.json:
        a.json.write_text(json.dumps({"env": env, "models": [res]}, indent=1))
    if a.write_docs:
        _write_block("agreement-hooked", f"Measured by `python benchmarks/interop_agreement.py --hooked --write-docs` "
                     f"(TransformerLens {env['transformer_lens']}, transformers {env['transformers']}, torch "
                     f"{env['torch']}; CPU, fp32, {len(TEXTS)} texts):\n\n{md}")
    return 0


def _write_block(name: str, body: str) -> None:
    text = DOC.read_text()
    block = f"<!-- {name}:start -->\n{body}\n<!-- {name}:end -->"
    new, n = re.subn(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", lambda _: block, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{DOC}: expected one <!-- {name}:start --> ... <!-- {name}:end --> block")
    DOC.write_text(new)


if __name__ == "__main__":
    sys.exit(main())
