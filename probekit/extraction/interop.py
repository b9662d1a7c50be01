"""The way in from other tools: their models, their tokenizers, their caches.

* :func:`as_loaded_model` turns what a TransformerLens or nnsight user holds (a ``(hf_model, tokenizer)``
  pair, a ``TransformerBridge``, an nnsight ``LanguageModel``, a ``HookedTransformer``) into the
  :class:`~probekit.models.loaded.LoadedModel` that extraction runs on. It is a model-side step, so it lives
  in :mod:`probekit.models.in_memory` (which lists what each object becomes and its identity); re-exported
  here with :class:`HookedTransformerRunner`.

* :func:`target_token_weights` is probekit's tokenization and pooling weights, public, so activations
  computed elsewhere (a TransformerLens cache, an nnsight trace) can be pooled exactly as probekit pools
  them; :meth:`probekit.ActivationSet.from_cache` takes the result.

docs/interop.md ("Coming from TransformerLens / nnsight") shows both routes and the measured agreement.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from probekit.core.activations import POOLINGS
from probekit.extraction.batching import encode, pad_batch, pad_token_id
from probekit.models.in_memory import HookedTransformerRunner, as_loaded_model, check_tokenizer  # noqa: F401 (re-exported)

__all__ = ["as_loaded_model", "target_token_weights", "TargetTokenWeights", "pad_token_id", "HookedTransformerRunner"]


# --------------------------------------------------------------------------- pooling weights, public

@dataclass
class TargetTokenWeights:
    """probekit's tokens and pooling weights for a stimulus frame, right-padded to one matrix.

    ``input_ids`` / ``attention_mask`` / ``weights``: ``[n_stimuli, max_tokens]`` (int64, int64, float32),
    row ``i`` for stimulus ``i``; ``weights[i]`` sums to 1 and is 0 on padding. ``n_target_tokens``: how
    many tokens the target span covered. Feed ``input_ids`` (and ``attention_mask``) to the model; pool
    any ``[n, tokens, d]`` activation with :meth:`pool`."""
    input_ids: np.ndarray
    attention_mask: np.ndarray
    weights: np.ndarray
    n_target_tokens: np.ndarray
    pooling: str

    def pool(self, activations) -> np.ndarray:
        """``[n, tokens, d]`` (numpy or torch; the first ``tokens`` columns of the padded rows) -> ``[n, d]``
        float32, the weighted sum over tokens: probekit's pooled vector."""
        a = activations.detach().float().cpu().numpy() if hasattr(activations, "detach") else np.asarray(activations)
        if a.ndim != 3 or a.shape[0] != self.weights.shape[0] or a.shape[1] > self.weights.shape[1]:
            raise ValueError(f"activations of shape {a.shape}: expected [n_stimuli={self.weights.shape[0]}, "
                             f"tokens<={self.weights.shape[1]}, d_model] from these input_ids")
        w = self.weights[:, :a.shape[1]]
        if not np.allclose(w.sum(1), 1.0, atol=1e-5):
            raise ValueError(f"activations cover {a.shape[1]} token positions but the pooled tokens reach "
                             f"position {int(np.nonzero(self.weights.any(0))[0].max())}: run the whole input_ids")
        return np.einsum("nt,ntd->nd", w.astype(np.float64), a.astype(np.float64)).astype(np.float32)


def target_token_weights(tokenizer, stimuli: pd.DataFrame, pooling: str = "target_mean") -> TargetTokenWeights:
    """probekit's tokenization (``tokenizer(text, add_special_tokens=True)``) and pooling weights of
    ``stimuli`` (``text`` and, for ``target_mean``, ``target``), exactly what :func:`probekit.extract`
    uses: ``target_mean`` spreads weight 1 over the target word's tokens (its first whole-word occurrence,
    found through character offsets), several targets weighted equally; ``last_token`` puts it on the last
    token. Errors name the stimulus and the word."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
    check_tokenizer(tokenizer, "target_token_weights")
    stimuli = stimuli.reset_index(drop=True)
    enc = encode(tokenizer, stimuli, pooling)
    ids, mask, w = pad_batch(enc.input_ids, pad_token_id(tokenizer), enc.weights)
    return TargetTokenWeights(ids.numpy(), mask.numpy(), w.numpy(), np.asarray(enc.n_target_tokens), pooling)
