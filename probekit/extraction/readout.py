"""The behavioural read-out: how well the model predicts each text's own tokens, with and without an
intervention (docs/causal.md).

:func:`loglik` is, per stimulus, the mean log-probability (natural log) the model gives to the tokens of the
text's own continuation, each predicted from the tokens before it:

* ``span="text"``: every token after the first (the first has no prefix to predict it from);
* ``span="continuation"``: the tokens after the last token of the target word(s) (needs ``target``);
* ``span="last"``: the text's last token only, predicted from all before it (for "A church and organ": the
  second item given the first, the part of the text a relation can make likely).

The LM head runs only at the positions a span scores (``logits_to_keep``): for ``"last"`` one position per
text instead of every token (Gemma-3 relations: a last-token read-out pass 1.9-2.1x an extraction pass, a
whole-text one 2.9-3.1x, side by side; docs/causal.md).

:func:`loglik_change` is ``loglik(intervention) - loglik(none)``: exactly 0 for the empty intervention
(the same batches through the same computation). It runs the full model (the LM head included), so a
layer-streamed model, which never reads the head, is refused; one forward pass per stimulus, plus the
intervention's first pass (mean, resample, patch) and, for the change, the unintervened pass.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from probekit.core.checks import count
from probekit.extraction.batching import (DEFAULT_MAX_BATCH_TOKENS, ExtractionError, describe_stimulus, encode,
                                          input_device, pad_batch, pad_token_id, plan_chunks)
from probekit.extraction.forward import run_in_memory
from probekit.extraction.hooks import check_finite, hooks_for
from probekit.extraction.interop import as_loaded_model
from probekit.extraction.interventions import Applied, as_intervention, check, pass_over, prepare, token_mean
from probekit.models.adapters import adapter_for, base_model, blocks, sublayer
from probekit.models.streamed import StreamedModel

__all__ = ["SPANS", "loglik", "loglik_change", "Readout", "readout", "set_means"]

#: which tokens :func:`loglik` scores
SPANS = ("text", "continuation", "last")


def _frame(stimuli) -> pd.DataFrame:
    if isinstance(stimuli, pd.DataFrame):
        return stimuli.reset_index(drop=True)
    if isinstance(stimuli, str):
        stimuli = [stimuli]
    return pd.DataFrame({"text": list(stimuli)})


def _scored(model, stim: pd.DataFrame, span: str, pooling: str | None = None):
    """(input ids, per stimulus the first scored token index); every refusal before any forward pass.
    ``pooling``: the pooling weights to encode (for :func:`readout`; the ids are the same for any)."""
    if span not in SPANS:
        raise ExtractionError(f"loglik: unknown span {span!r}; use one of {SPANS}")
    max_len = getattr(model.config, "max_position_embeddings", None)
    if span == "continuation":
        if "target" not in stim.columns:
            raise ExtractionError("loglik(span='continuation') needs a 'target' column (the continuation is what "
                                  "follows the target word); use span='text' for the whole text")
        enc = encode(model.tokenizer, stim, "target_mean", model.name, max_length=max_len)
        starts = [int(np.flatnonzero(w).max()) + 1 for w in enc.weights]
        if pooling and pooling != "target_mean":
            enc = encode(model.tokenizer, stim, pooling, model.name, max_length=max_len)
    else:
        enc = encode(model.tokenizer, stim, pooling or "last_token", model.name, max_length=max_len)
        starts = [len(x) - 1 if span == "last" else 1 for x in enc.input_ids]
    for i, (ids, s) in enumerate(zip(enc.input_ids, starts)):
        if s >= len(ids):
            what = "its target ends the text: no continuation to score (use span='text')" \
                if span == "continuation" else "a single token: nothing to predict"
            raise ExtractionError(f"loglik: {describe_stimulus(i, stim)}{what}")
    return enc, starts


def loglik(model, stimuli, intervention=None, *, span: str = "text", batch_size: int = 16,
           max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS) -> np.ndarray:
    """Per stimulus, the mean natural-log probability of its scored tokens (``span``) under ``intervention``
    (an :class:`~probekit.extraction.interventions.Intervention`, a step, a tuple of steps, or None).
    ``stimuli``: a DataFrame with ``text`` (and ``target`` for ``span='continuation'``) or a list of texts.
    Returns a float64 array, one value per stimulus, in row order."""
    model, stim, enc, starts, chunks, applied = _prepared(model, stimuli, intervention, span, None, batch_size,
                                                          max_batch_tokens)
    out = np.zeros(len(stim), np.float64)
    with applied if applied is not None else contextlib.nullcontext():
        _score(model, enc, starts, chunks, out, applied)
    return out


def _prepared(model, stimuli, intervention, span: str, pooling: str | None, batch_size: int, max_batch_tokens):
    """The checks and encodings :func:`loglik` and :func:`readout` share (every refusal before a pass)."""
    model = as_loaded_model(model)
    if isinstance(model, StreamedModel):
        raise ExtractionError(f"loglik: model {model.name} is layer-streamed, which never reads the LM head; load "
                              f"it without stream_layers to score its predictions")
    if getattr(model, "runs_own_hooks", False):
        raise ExtractionError(f"loglik: model {model.name} runs its own hooks (TransformerLens); pass the "
                              f"transformers model instead")
    batch_size = count(batch_size, "batch_size", 1)
    iv = as_intervention(intervention)
    stim = _frame(stimuli)
    enc, starts = _scored(model, stim, span, pooling)
    chunks = plan_chunks([len(x) for x in enc.input_ids], batch_size, max_tokens=max_batch_tokens)
    applied = None
    if iv is not None:
        check(iv, model, [len(x) for x in enc.input_ids])
        applied = Applied(model.model, prepare(iv, model, enc, chunks, stim, run_in_memory))
    return model, stim, enc, starts, chunks, applied


@dataclass
class Readout:
    """One pass's two read-outs: ``pooled[(layer, component)]`` ([n, d], the run's pooling, as
    :func:`~probekit.extraction.forward.extract` pools) and ``loglik`` ([n], as :func:`loglik`)."""
    pooled: dict
    loglik: np.ndarray


def readout(model, stimuli, intervention=None, *, keys=(), span: str = "text", pooling: str | None = None,
            batch_size: int = 16, max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS) -> Readout:
    """The behavioural read-out and pooled activations from the *same* forward pass under ``intervention``.

    ``keys``: the ``(layer, component)`` vectors to keep (pooled with ``pooling``, default
    ``stimuli.attrs['pooling']`` or ``'target_mean'``, exactly as extraction pools them); ``span`` as in
    :func:`loglik`. A causal claim that needs a probe's input and the model's predictions under the same
    intervention pays one pass for both instead of two (docs/causal.md, costs)."""
    pooling = pooling or getattr(stimuli, "attrs", {}).get("pooling") or "target_mean"
    model, stim, enc, starts, chunks, applied = _prepared(model, stimuli, intervention, span, pooling, batch_size,
                                                          max_batch_tokens)
    keys = [(int(l), str(c)) for l, c in keys]
    L = model.n_layers
    for l, c in keys:
        if not 0 <= l < L or c not in ("resid_pre", "attn_out", "mlp_out"):
            raise ExtractionError(f"readout: key {(l, c)} is not a (layer in 0..{L - 1}, resid_pre/attn_out/mlp_out)")
    out = np.zeros(len(stim), np.float64)
    pooled = {k: np.zeros((len(stim), model.d_model), np.float32) for k in keys}
    with applied if applied is not None else contextlib.nullcontext():
        hooks = hooks_for(model) if keys else None      # after the intervention's block order
        try:
            _score(model, enc, starts, chunks, out, applied, hooks, pooled, stim)
        finally:
            if hooks is not None:
                hooks.remove()
    return Readout(pooled, out)


def _score(model, enc, starts, chunks, out, applied, hooks=None, pooled=None, stim=None) -> None:
    import torch
    device = input_device(model.model)
    pad_id = pad_token_id(model.tokenizer)
    for chunk in chunks:
        for rows in chunk:
            if applied is not None:
                applied.batch(rows)
            ids, mask, W = pad_batch([enc.input_ids[i] for i in rows], pad_id,
                                     [enc.weights[i] for i in rows] if hooks is not None else None)
            if hooks is not None:
                hooks.weights = W.to(device)
                hooks.out = {}
            # the head only where a scored token is predicted: positions s-1 .. n-2 of each row
            keep = sorted(set().union(*(range(starts[i] - 1, len(enc.input_ids[i]) - 1) for i in rows)))
            col = np.full(ids.shape[1], -1)
            col[keep] = np.arange(len(keep))
            with torch.inference_mode():
                logits = model.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False,
                                     logits_to_keep=torch.tensor(keep, device=device)).logits
            if hooks is not None:
                kept = {k: hooks.out[k] for k in pooled}
                check_finite(kept, rows, stim, model.name)
                for k, t in kept.items():
                    pooled[k][np.asarray(rows)] = t.cpu().numpy()
            with torch.inference_mode():
                logp = torch.log_softmax(logits.float(), dim=-1)
                for b, i in enumerate(rows):
                    n, s = len(enc.input_ids[i]), starts[i]
                    tgt = ids[b, s:n].to(logp.device)
                    lp = logp[b, torch.from_numpy(col[s - 1:n - 1]).to(logp.device)].gather(-1, tgt[:, None])[:, 0]
                    if not bool(torch.isfinite(lp).all()):
                        raise ExtractionError(f"loglik: model {model.name} gives non-finite log-probabilities to "
                                              f"stimulus {i} (NaN/inf in its logits)")
                    out[i] = float(lp.double().mean())


def loglik_change(model, stimuli, intervention, **kw) -> np.ndarray:
    """``loglik(model, stimuli, intervention) - loglik(model, stimuli)`` per stimulus (negative: the
    intervention makes the text less likely); 0 exactly for an empty intervention."""
    return loglik(model, stimuli, intervention, **kw) - loglik(model, stimuli, None, **kw)


def set_means(model, stimuli, keys, *, by_position: bool = False, batch_size: int = 32,
              max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS) -> dict:
    """``{(layer, component): mean}`` on the unintervened model (one pass), what a :class:`MeanAblation`
    replaces the component with: ``[d]``, the mean over every real token of every stimulus (what a computed
    mean ablation uses), or, ``by_position=True``, ``[positions, d]``: row ``t`` the mean at token ``t`` over
    the texts that have it (``positions`` = the longest text). Give the result as ``MeanAblation(component,
    layers, means=..., by_position=...)`` to run many mean ablations of one set without a first pass each."""
    model = as_loaded_model(model)
    stim = _frame(stimuli)
    keys = sorted({(int(l), str(c)) for l, c in keys})
    enc = encode(model.tokenizer, stim, "last_token", model.name,
                 max_length=getattr(model.config, "max_position_embeddings", None))
    lengths = [len(x) for x in enc.input_ids]
    chunks = plan_chunks(lengths, count(batch_size, "batch_size", 1), max_tokens=max_batch_tokens)
    if not by_position:
        per_row = pass_over(run_in_memory, model, enc, chunks, stim, list(range(len(stim))),
                            [np.full(m, 1.0 / m, np.float32) for m in lengths], keys)
        return {k: token_mean(per_row[k], lengths) for k in keys}
    return _position_means(model, enc, chunks, keys, max(lengths))


def _position_means(model, enc, chunks, keys, n_pos: int) -> dict:
    """Per (layer, component) the [n_pos, d] mean at each token position over the texts that reach it."""
    import torch
    ad = adapter_for(model.model)
    sums = {k: torch.zeros(n_pos, model.d_model, dtype=torch.float64) for k in keys}
    counts = torch.zeros(n_pos, dtype=torch.float64)
    state = {}
    handles = []

    def hook_for(key):
        def hook(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            m = state["mask"].to(h.device, h.dtype)[..., None]
            sums[key][:h.shape[1]] += (h * m).sum(0).double().cpu()
        return hook
    blist = blocks(model.model)
    for l, c in keys:
        handles.append(sublayer(blist[l], ad.attn if c == "attn_out" else ad.mlp).register_forward_hook(hook_for((l, c))))
    device = input_device(model.model)
    pad_id = pad_token_id(model.tokenizer)
    try:
        for chunk in chunks:
            for rows in chunk:
                ids, mask, _ = pad_batch([enc.input_ids[i] for i in rows], pad_id)
                state["mask"] = mask
                counts[:mask.shape[1]] += mask.sum(0).double()
                with torch.inference_mode():
                    base_model(model.model)(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {k: (v / counts[:, None]).float().numpy() for k, v in sums.items()}
