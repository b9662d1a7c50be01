"""Tokens, pooling weights and batches: the input side of extraction, shared by the in-memory pass
(:mod:`probekit.extraction.forward`) and the layer-streamed runner (:mod:`probekit.extraction.streaming`).

* :func:`encode` tokenizes every text and computes its pooling weights (``target_mean``: the tokens of each
  target word, averaged, then averaged over the words; ``last_token``: the last token); every input error
  is raised here, naming the stimulus and the word.
* :func:`plan_batches` / :func:`plan_chunks` group the rows into batches under a row and a padded-token
  budget, and the batches into resumable chunks.
* :func:`pad_batch` right-pads a batch (padding has pooling weight zero); :func:`pad_token_id` is the id
  it pads with; :func:`input_device` is where the ids go.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from probekit.core.activations import POOLINGS
from probekit.core.checks import count
from probekit.core.text import TargetNotFoundError, as_targets, target_spans
from probekit.models.adapters import base_model


class ExtractionError(ValueError):
    """Bad input to extraction: names the stimulus, the word and what to do."""


@dataclass
class Encoded:
    input_ids: list[list[int]]
    weights: list[np.ndarray]        # per stimulus: pooling weight per token (sums to 1)
    n_target_tokens: np.ndarray


def describe_stimulus(i: int, stimuli: pd.DataFrame, width: int = 80) -> str:
    """``stimulus 3 ('An apple'): `` -- a long text is shown truncated, with its length."""
    text = stimuli["text"].iloc[i]
    sid = f" id={stimuli['id'].iloc[i]!r}" if "id" in stimuli.columns else ""
    if isinstance(text, str) and len(text) > width:
        return f"stimulus {i}{sid} ({text[:width]!r}... {len(text)} characters): "
    return f"stimulus {i}{sid} ({text!r}): "


def encode(tokenizer, stimuli: pd.DataFrame, pooling: str, model_name: str = "", max_length: int | None = None) -> Encoded:
    """Tokenize every text and compute its pooling weights; all input errors are raised here."""
    if pooling not in POOLINGS:
        raise ExtractionError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
    if "text" not in stimuli.columns:
        raise ExtractionError("stimuli need a 'text' column (and 'target' for pooling='target_mean')")
    if pooling == "target_mean" and "target" not in stimuli.columns:
        raise ExtractionError("pooling='target_mean' needs a 'target' column (the word or words to pool over)")
    if len(stimuli) == 0:
        raise ExtractionError("no stimuli to extract")
    texts = stimuli["text"].tolist()
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ExtractionError(f"stimulus {i}: empty text (every stimulus needs a non-empty text)")
    if not getattr(tokenizer, "is_fast", False):
        raise ExtractionError(f"model {model_name}: pooling needs a fast tokenizer (character offsets); "
                              f"got {type(tokenizer).__name__}")
    enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True)
    special = set(tokenizer.all_special_ids)
    ids_out, weights, ntok = [], [], np.zeros(len(texts), dtype=np.int32)
    for i, (ids, offsets) in enumerate(zip(enc["input_ids"], enc["offset_mapping"])):
        if max_length and len(ids) > max_length:
            raise ExtractionError(f"{describe_stimulus(i, stimuli)}{len(ids)} tokens exceed model {model_name}'s "
                                  f"context of {max_length}; shorten the text")
        w = np.zeros(len(ids), dtype=np.float32)
        if pooling == "last_token":
            w[-1] = 1.0
            try:
                words = as_targets(stimuli["target"].iloc[i]) if "target" in stimuli.columns else []
                if words:
                    spans = target_spans(texts[i], words)
                    ntok[i] = sum(_tokens_in_span(offsets, ids, special, s, e).size for s, e in spans)
            except TargetNotFoundError:
                ntok[i] = 0
        else:
            try:
                spans = target_spans(texts[i], stimuli["target"].iloc[i], where=f"stimulus {i}: ")
            except TargetNotFoundError as exc:
                raise ExtractionError(f"{exc} (model {model_name})") from None
            for word, (s, e) in zip(as_targets(stimuli["target"].iloc[i]), spans):
                toks = _tokens_in_span(offsets, ids, special, s, e)
                if toks.size == 0:
                    raise ExtractionError(f"{describe_stimulus(i, stimuli)}target word {word!r} maps to no token of "
                                          f"model {model_name} (was the text truncated?)")
                w[toks] += 1.0 / toks.size
                ntok[i] += toks.size
            w /= len(spans)
        ids_out.append(list(ids))
        weights.append(w)
    return Encoded(ids_out, weights, ntok)


def _tokens_in_span(offsets, ids, special, s: int, e: int) -> np.ndarray:
    return np.array([j for j, ((a, b), tid) in enumerate(zip(offsets, ids))
                     if b > a and a < e and b > s and tid not in special], dtype=np.int64)


#: Default token budget of one batch: padded tokens (batch rows x longest row). Short texts
#: (the embedded sets: <= ~160 tokens) never reach it at batch_size 32, so their batches are
#: those of a plain count; one long text gets a batch of its own instead of padding the others.
DEFAULT_MAX_BATCH_TOKENS = 8192
#: A batch above this many padded tokens is also closed when less than _MIN_FILL of it would be real
#: tokens (e.g. eleven 6-token texts and one of 300 tokens: two batches, not 3,600 padded tokens).
_PAD_FLOOR = 2048
_MIN_FILL = 0.5


def plan_batches(lengths: list[int], batch_size: int, max_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS
                 ) -> list[list[int]]:
    """Batches of stimulus rows, sorted by token length, each holding at most ``batch_size`` rows and at most
    ``max_tokens`` padded tokens (rows x longest row; a single longer text gets a batch of its own). With a
    budget, a batch of more than 2048 padded tokens is also closed before it would become more than half
    padding, so a moderately long text does not pad many short ones either.

    Every row is in exactly one batch (checked: an entry of the store is only completed from a plan
    that covers every row)."""
    batch_size = count(batch_size, "batch_size", 1)
    if max_tokens is not None:
        max_tokens = count(max_tokens, "max_batch_tokens", 1)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in order:                                  # ascending length: row i is the longest so far
        padded = (len(cur) + 1) * lengths[i]
        if cur and (len(cur) >= batch_size or max_tokens is not None and (
                padded > max_tokens or padded > _PAD_FLOOR and (real + lengths[i]) < _MIN_FILL * padded)):
            batches.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += lengths[i]
    if cur:
        batches.append(cur)
    covered = sorted(i for b in batches for i in b)
    if covered != list(range(len(lengths))):        # a plan that skips a row would store zeros as activations
        raise AssertionError(f"batch plan covers {len(covered)} of {len(lengths)} rows")
    return batches


def plan_chunks(lengths: list[int], batch_size: int, batches_per_chunk: int = 8,
                max_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS) -> list[list[list[int]]]:
    """:func:`plan_batches` grouped into resumable chunks of ``batches_per_chunk`` batches."""
    batches = plan_batches(lengths, batch_size, max_tokens)
    return [batches[k:k + batches_per_chunk] for k in range(0, len(batches), batches_per_chunk)]



def pad_token_id(tokenizer) -> int:
    """The id right padding uses: the pad token, else EOS, else 0. Padding never enters a pooled vector
    (zero weight, masked, and after every real token of a causal model), so any valid id will do; the
    user's tokenizer is not modified."""
    for attr in ("pad_token_id", "eos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if isinstance(tid, (list, tuple)):
            tid = tid[0] if tid else None
        if tid is not None:
            return int(tid)
    return 0


def pad_batch(ids: list[list[int]], pad_id: int, weights: list[np.ndarray] | None = None):
    """Right-padded ``input_ids``, ``attention_mask`` and pooling weights (zero on padding)."""
    import torch
    T = max(len(x) for x in ids)
    B = len(ids)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    W = torch.zeros((B, T), dtype=torch.float32)
    for b, x in enumerate(ids):
        input_ids[b, :len(x)] = torch.tensor(x)
        mask[b, :len(x)] = 1
        if weights is not None:
            W[b, :len(x)] = torch.from_numpy(weights[b])
    return input_ids, mask, W


def input_device(model):
    """Where the input ids must go (the embedding's device under a device_map)."""
    if hasattr(model, "hf_device_map"):
        return base_model(model).get_input_embeddings().weight.device
    return next(model.parameters()).device
