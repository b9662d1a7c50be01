"""The behavioural read-out: how well the model predicts each text's own tokens, with and without an
intervention (docs/causal.md).

:func:`loglik` is, per stimulus, the mean log-probability (natural log) the model gives to the tokens of the
text's own continuation, each predicted from the tokens before it:

* ``span="text"``: every token after the first (the first has no prefix to predict it from);
* ``span="continuation"``: the tokens after the last token of the target word(s) (needs ``target``).

:func:`loglik_change` is ``loglik(intervention) - loglik(none)``: exactly 0 for the empty intervention
(the same batches through the same computation). It runs the full model (the LM head included), so a
layer-streamed model, which never reads the head, is refused; one forward pass per stimulus, plus the
intervention's first pass (mean, resample, patch) and, for the change, the unintervened pass.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd

from probekit.core.checks import count
from probekit.extraction.batching import (DEFAULT_MAX_BATCH_TOKENS, ExtractionError, describe_stimulus, encode,
                                          input_device, pad_batch, pad_token_id, plan_chunks)
from probekit.extraction.forward import run_in_memory
from probekit.extraction.interop import as_loaded_model
from probekit.extraction.interventions import Applied, as_intervention, check, prepare
from probekit.models.streamed import StreamedModel

__all__ = ["SPANS", "loglik", "loglik_change"]

#: which tokens :func:`loglik` scores
SPANS = ("text", "continuation")


def _frame(stimuli) -> pd.DataFrame:
    if isinstance(stimuli, pd.DataFrame):
        return stimuli.reset_index(drop=True)
    if isinstance(stimuli, str):
        stimuli = [stimuli]
    return pd.DataFrame({"text": list(stimuli)})


def _scored(model, stim: pd.DataFrame, span: str):
    """(input ids, per stimulus the first scored token index); every refusal before any forward pass."""
    if span not in SPANS:
        raise ExtractionError(f"loglik: unknown span {span!r}; use one of {SPANS}")
    max_len = getattr(model.config, "max_position_embeddings", None)
    if span == "continuation":
        if "target" not in stim.columns:
            raise ExtractionError("loglik(span='continuation') needs a 'target' column (the continuation is what "
                                  "follows the target word); use span='text' for the whole text")
        enc = encode(model.tokenizer, stim, "target_mean", model.name, max_length=max_len)
        starts = [int(np.flatnonzero(w).max()) + 1 for w in enc.weights]
    else:
        enc = encode(model.tokenizer, stim, "last_token", model.name, max_length=max_len)
        starts = [1] * len(enc.input_ids)
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
    enc, starts = _scored(model, stim, span)
    chunks = plan_chunks([len(x) for x in enc.input_ids], batch_size, max_tokens=max_batch_tokens)
    applied = None
    if iv is not None:
        check(iv, model, [len(x) for x in enc.input_ids])
        applied = Applied(model.model, prepare(iv, model, enc, chunks, stim, run_in_memory))
    out = np.zeros(len(stim), np.float64)
    with applied if applied is not None else contextlib.nullcontext():
        _score(model, enc, starts, chunks, out, applied)
    return out


def _score(model, enc, starts, chunks, out, applied) -> None:
    import torch
    device = input_device(model.model)
    pad_id = pad_token_id(model.tokenizer)
    for chunk in chunks:
        for rows in chunk:
            if applied is not None:
                applied.batch(rows)
            ids, mask, _ = pad_batch([enc.input_ids[i] for i in rows], pad_id)
            with torch.inference_mode():
                logits = model.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
                for b, i in enumerate(rows):
                    n, s = len(enc.input_ids[i]), starts[i]
                    tgt = ids[b, s:n].to(logp.device)
                    lp = logp[b, s - 1:n - 1].gather(-1, tgt[:, None])[:, 0]
                    if not bool(torch.isfinite(lp).all()):
                        raise ExtractionError(f"loglik: model {model.name} gives non-finite log-probabilities to "
                                              f"stimulus {i} (NaN/inf in its logits)")
                    out[i] = float(lp.double().mean())


def loglik_change(model, stimuli, intervention, **kw) -> np.ndarray:
    """``loglik(model, stimuli, intervention) - loglik(model, stimuli)`` per stimulus (negative: the
    intervention makes the text less likely); 0 exactly for an empty intervention."""
    return loglik(model, stimuli, intervention, **kw) - loglik(model, stimuli, None, **kw)
