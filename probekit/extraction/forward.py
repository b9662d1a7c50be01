"""Extraction: one forward pass per batch, hooks on every block, pooling on the device.

For every layer ``l`` we capture, at the pooled positions,

* ``resid_pre``  — the input of block ``l`` (block 0: the scaled embeddings);
* ``attn_out``   — what the attention sublayer of block ``l`` adds to the stream;
* ``mlp_out``    — what the MLP sublayer of block ``l`` adds.

Pooling happens inside the hooks (a ``[batch, tokens]`` weight matrix times the
``[batch, tokens, d_model]`` activation), so no per-position tensor outlives its
hook: stored bytes = stimuli x layers x 3 x d_model x 4.

``pooling="target_mean"``: mean over the tokens of each target word (tokens
whose character offsets overlap the word's first whole-word occurrence), then
mean over the target words. ``pooling="last_token"``: the last non-padding token.
Padding (right side) never enters a pooled vector: its weight is zero.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd

from probekit.core.activations import COMPONENTS, ActivationSet, carry_metadata
from probekit.core.checks import PROGRESS_AFTER_S, PROGRESS_EVERY_S, count, usable_dir
from probekit.core.version import __version__
from probekit.extraction.batching import (DEFAULT_MAX_BATCH_TOKENS, Encoded, ExtractionError,  # noqa: F401 (re-exported)
                                          encode, input_device, pad_batch, pad_token_id, plan_batches, plan_chunks)
from probekit.extraction.hooks import Hooks, OwnHooks, check_finite, hooks_for
from probekit.extraction.interop import as_loaded_model
from probekit.extraction.interventions import Applied, as_intervention, check, prepare
from probekit.extraction.keys import stimulus_key_hash, store_identity  # noqa: F401 (re-exported)
from probekit.extraction.store import ActivationStore, StoreCorruptError, StoreMismatchError, is_read_only_error
from probekit.extraction.streaming import preflight, run_streamed
from probekit.models.adapters import base_model
from probekit.models.streamed import StreamedModel

__all__ = ["ExtractionError", "stimulus_key_hash", "encode", "DEFAULT_MAX_BATCH_TOKENS", "plan_batches",
           "plan_chunks", "pad_batch", "input_device", "extract", "store_identity", "capture",
           "run_in_memory"]


def _forward(model, hooks: Hooks, ids: list[list[int]], weights: list[np.ndarray], pad_id: int):
    """One padded forward pass of the base model (no LM head, no KV cache)."""
    import torch
    device = input_device(model)
    input_ids, mask, W = pad_batch(ids, pad_id, weights)
    hooks.weights = W.to(device)
    hooks.out = {}
    with torch.inference_mode():
        if isinstance(hooks, OwnHooks):
            hooks.runner.forward(input_ids.to(device), mask.to(device))
        else:
            base_model(model)(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
    return hooks.out




def extract(model, stimuli: pd.DataFrame, pooling: str | None = None, *, batch_size: int = 32,
            store: ActivationStore | str | bool | None = None, progress: bool | None = None,
            max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS, intervention=None) -> ActivationSet:
    """Pooled per-layer activations of ``stimuli`` (a DataFrame with ``text`` and ``target``).

    ``model``: a :class:`probekit.models.loading.LoadedModel`, a ``(transformers_model, tokenizer)`` pair, a
    TransformerLens ``HookedTransformer`` or ``TransformerBridge``, or an nnsight ``LanguageModel``
    (:func:`probekit.extraction.interop.as_loaded_model`; anything else is refused with what to pass). ``pooling`` defaults to
    ``stimuli.attrs['pooling']`` or ``'target_mean'``. ``store``: ``None`` keeps
    everything in memory; ``True`` uses the default on-disk store; a path or
    :class:`ActivationStore` uses that one (resumable, verified, memory-mapped;
    a read-only store serves complete entries and extracts the rest in memory).
    Batches hold at most ``batch_size`` texts and ``max_batch_tokens`` padded
    tokens (None: no token budget). ``progress``: None prints progress lines
    (stimuli and tokens per second) to stderr once an extraction has run for a
    few seconds; True from the start; False never. ``intervention``: an
    :class:`~probekit.extraction.interventions.Intervention` (or a step, or a tuple of steps) run with the
    extraction (docs/causal.md); checked before any forward pass; the store keys it (``None`` or an empty
    one is the ordinary extraction, with the ordinary key).
    """
    model = as_loaded_model(model)
    intervention = as_intervention(intervention)
    batch_size = count(batch_size, "batch_size", 1)
    if max_batch_tokens is not None:
        max_batch_tokens = count(max_batch_tokens, "max_batch_tokens", 1)
    store = _open_store(store)
    job = _Extraction(model, stimuli, pooling, batch_size, max_batch_tokens, progress, intervention)
    if store is None:
        return job.in_memory()
    return job.through_store(store)


def _open_store(store) -> ActivationStore | None:
    """``None`` / ``False``: no store; ``True``: the default one; a path or store: that one (a file in its
    place is refused now, before any work)."""
    if store is None or store is False:
        return None
    if not isinstance(store, ActivationStore):
        store = ActivationStore(None if store is True else store)
    usable_dir(store.root, f"activation store {store.root}", write=False)
    return store


class _Extraction:
    """One :func:`extract` call, step by step: its encoding and batches (every input error raised on
    construction), its runner (in memory, or streamed after the streamed preflight), and the two ways to
    its :class:`ActivationSet`: in memory, or through a store entry."""

    def __init__(self, model, stimuli, pooling, batch_size, max_batch_tokens, progress, intervention=None):
        self.model, self.progress, self.intervention = model, progress, intervention
        self.pooling = pooling or stimuli.attrs.get("pooling") or "target_mean"
        self.stimuli = carry_metadata(stimuli.reset_index(drop=True), stimuli)
        max_len = getattr(model.config, "max_position_embeddings", None)
        self.enc = encode(model.tokenizer, self.stimuli, self.pooling, model.name, max_length=max_len)
        self.chunks = plan_chunks([len(x) for x in self.enc.input_ids], batch_size, max_tokens=max_batch_tokens)
        if intervention is not None:              # bad steps refused before any pass and before the store
            check(intervention, model, [len(x) for x in self.enc.input_ids])
        self.fingerprint = model.fingerprint      # hashes the weights in memory: read it once per extraction
        self.meta = {"probekit_version": __version__, "model_fingerprint": self.fingerprint,
                     "stimulus_set": self.stimuli.attrs.get("name"),
                     "stimulus_version": self.stimuli.attrs.get("version"),
                     "stimulus_hash": self.stimuli.attrs.get("hash")}
        if intervention is not None:
            self.meta["intervention"] = intervention.key()
        self.stim_out = carry_metadata(self.stimuli.copy(), self.stimuli)
        self.runner = run_in_memory
        if isinstance(model, StreamedModel):      # probekit.extraction.streaming: layer-major, weights read once
            preflight(model, self.enc, self.chunks)   # missing shards / disk refused before the store is touched
            self.runner = run_streamed

    def run(self, arrays, done: set, on_chunk) -> None:
        self.runner(self.model, self.enc, self.chunks, self.stimuli, arrays, done=done, on_chunk=on_chunk,
                    progress=self.progress, intervention=self.intervention)

    def in_memory(self) -> ActivationSet:
        m = self.model
        arrays = {(l, c): np.zeros((len(self.stimuli), m.d_model), np.float32)
                  for l in range(m.n_layers) for c in COMPONENTS}
        self.run(arrays, done=set(), on_chunk=None)
        self.stim_out["n_target_tokens"] = self.enc.n_target_tokens
        return ActivationSet.from_arrays(arrays, self.stim_out, model_name=m.name, pooling=self.pooling,
                                         meta=self.meta)

    def stored(self, entry) -> ActivationSet:
        m = self.model
        self.stim_out["n_target_tokens"] = entry.n_target_tokens()
        return ActivationSet(stimuli=self.stim_out, n_layers=m.n_layers, d_model=m.d_model, model_name=m.name,
                             pooling=self.pooling, meta=dict(self.meta, store=str(entry.path)),
                             _loader=entry.load)

    def through_store(self, store: ActivationStore) -> ActivationSet:
        """The store's entry, filled first when it is incomplete (resumable: chunks already done are kept)
        or rebuilt when it fails verification; a read-only store serves a complete entry or is bypassed."""
        entry = store.entry(store_identity(self.model, self.stimuli, self.pooling, self.fingerprint,
                                           self.intervention.key() if self.intervention else ""))
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(entry.lock())
            except OSError as exc:
                if not is_read_only_error(exc):
                    raise
                return self._read_only(store, entry, exc)
            if entry.is_complete():
                try:
                    entry.verify()
                except (StoreCorruptError, StoreMismatchError) as exc:
                    warnings.warn(f"activation store: rebuilding {entry.path}: {exc}")
                    entry.wipe()
            if not entry.is_complete():
                self._fill(entry)
        return self.stored(entry)

    def _read_only(self, store, entry, exc: OSError) -> ActivationSet:
        """A read-only store (e.g. a shared cache): a complete, intact entry is read without a lock; else
        the extraction runs in memory and nothing is cached."""
        try:
            entry.verify()
            return self.stored(entry)
        except (StoreCorruptError, StoreMismatchError) as bad:
            why = f"its entry is not usable ({bad})" if entry.path.exists() else "it has no entry for these stimuli"
        warnings.warn(f"activation store {store.root} is read-only ({exc.strerror}) and {why}: "
                      f"extracting in memory, nothing is cached")
        return self.in_memory()

    def _fill(self, entry) -> None:
        batch_plan = [[list(b) for b in chunk] for chunk in self.chunks]
        done = entry.begin(batch_plan)
        writers = entry.open_writers()
        writers["n_target_tokens"][:] = self.enc.n_target_tokens
        self.run(writers, done=done, on_chunk=lambda k: entry.mark_done(writers, k))
        del writers
        entry.finish()


class _Progress:
    """Progress lines on stderr: stimuli done, stimuli/s, tokens/s (real, not padding), time left."""

    def __init__(self, name: str, n_stimuli: int, n_tokens: int, mode: bool | None):
        import time
        self.name, self.n, self.n_tokens, self.mode = name, n_stimuli, n_tokens, mode
        self.done = self.tokens = 0
        self.t0 = time.monotonic()
        self.last = None
        self.after = 0.0 if mode else PROGRESS_AFTER_S

    def _line(self, now: float, final: bool = False) -> str:
        dt = max(now - self.t0, 1e-9)
        sps, tps = self.done / dt, self.tokens / dt
        left = "" if final or sps == 0 else f", ~{(self.n - self.done) / sps:.0f} s left"
        return (f"extract {self.name}: {self.done}/{self.n} stimuli, {sps:.1f} stimuli/s, {tps:.0f} tokens/s"
                f"{left}" + (f" (done in {dt:.1f} s)" if final else ""))

    def update(self, n_stimuli: int, n_tokens: int) -> None:
        import sys
        import time
        self.done += n_stimuli
        self.tokens += n_tokens
        if self.mode is False:
            return
        now = time.monotonic()
        if now - self.t0 >= self.after and (self.last is None or now - self.last >= PROGRESS_EVERY_S):
            self.last = now
            print(self._line(now), file=sys.stderr, flush=True)

    def close(self) -> None:
        import sys
        import time
        if self.last is not None:                    # a line was printed: say how it ended
            print(self._line(time.monotonic(), final=True), file=sys.stderr, flush=True)


def run_in_memory(model, enc: Encoded, chunks, stimuli, arrays, done: set, on_chunk, progress,
                  intervention=None, standalone: bool = False) -> None:
    """The in-memory runner: fill ``arrays[(layer, component)]`` for the chunks not in ``done``, batch by batch
    through every layer, under ``intervention`` (its first passes first: :func:`interventions.prepare`).
    ``standalone``: the streamed runner's flag (a pass outside the planning session); nothing to do here."""
    todo = [(k, chunk) for k, chunk in enumerate(chunks) if k not in done]
    if not todo:
        return
    with contextlib.ExitStack() as stack:
        applied = None
        if intervention is not None:
            applied = stack.enter_context(Applied(model.model, prepare(intervention, model, enc, chunks, stimuli,
                                                                       run_in_memory)))
        _run_batches(model, enc, todo, stimuli, arrays, on_chunk, progress, applied)


def _run_batches(model, enc: Encoded, todo, stimuli, arrays, on_chunk, progress, applied) -> None:
    pad_id = pad_token_id(model.tokenizer)
    rows_todo = [i for _, chunk in todo for rows in chunk for i in rows]
    bar = _Progress(model.name, len(rows_todo), sum(len(enc.input_ids[i]) for i in rows_todo), progress)
    hooks = hooks_for(model)                      # after the intervention's block order: labels by position
    try:
        for k, chunk in todo:
            for rows in chunk:
                if applied is not None:
                    applied.batch(rows)
                out = _forward(model.model, hooks, [enc.input_ids[i] for i in rows],
                               [enc.weights[i] for i in rows], pad_id)
                check_finite(out, rows, stimuli, model.name)
                idx = np.asarray(rows)
                for key, t in out.items():
                    arrays[key][idx] = t.cpu().numpy()
                bar.update(len(rows), sum(len(enc.input_ids[i]) for i in rows))
            if on_chunk is not None:
                on_chunk(k)
        bar.close()
    finally:
        hooks.remove()


@contextlib.contextmanager
def capture(model, with_final: bool = True):
    """Low-level access for oracles: yields a function ``run(ids, weights) -> {(l, comp): tensor}``
    that also returns ``(L-1, 'resid_post')``, the last block's output before the final norm."""
    model = as_loaded_model(model)
    hooks = hooks_for(model, with_final=with_final)
    try:
        yield lambda ids, weights: _forward(model.model, hooks, ids, weights, pad_token_id(model.tokenizer))
    finally:
        hooks.remove()
