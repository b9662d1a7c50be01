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
from dataclasses import dataclass

import numpy as np
import pandas as pd

from probekit import __version__
from probekit.core.activations import COMPONENTS, POOLINGS, ActivationSet, carry_metadata
from probekit.models.adapters import adapter_for, base_model, blocks, sublayer
from probekit.core.checks import PROGRESS_AFTER_S, PROGRESS_EVERY_S, check_activation_range, count, usable_dir
from probekit.core.hashing import frame_hash
from probekit.extraction.interop import as_loaded_model, pad_token_id
from probekit.extraction.store import ActivationStore, StoreCorruptError, StoreMismatchError, is_read_only_error
from probekit.core.text import TargetNotFoundError, as_targets, target_spans



class ExtractionError(ValueError):
    """Bad input to extraction: names the stimulus, the word and what to do."""


@dataclass
class _Encoded:
    input_ids: list[list[int]]
    weights: list[np.ndarray]        # per stimulus: pooling weight per token (sums to 1)
    n_target_tokens: np.ndarray


def stimulus_key_hash(stimuli: pd.DataFrame) -> str:
    """What the activations depend on: texts and targets, in row order."""
    cols = ["text"] + (["target"] if "target" in stimuli.columns else [])
    return frame_hash(stimuli, cols)


def _describe(i: int, stimuli: pd.DataFrame, width: int = 80) -> str:
    """``stimulus 3 ('An apple'): `` -- a long text is shown truncated, with its length."""
    text = stimuli["text"].iloc[i]
    sid = f" id={stimuli['id'].iloc[i]!r}" if "id" in stimuli.columns else ""
    if isinstance(text, str) and len(text) > width:
        return f"stimulus {i}{sid} ({text[:width]!r}... {len(text)} characters): "
    return f"stimulus {i}{sid} ({text!r}): "


def encode(tokenizer, stimuli: pd.DataFrame, pooling: str, model_name: str = "", max_length: int | None = None) -> _Encoded:
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
            raise ExtractionError(f"{_describe(i, stimuli)}{len(ids)} tokens exceed model {model_name}'s "
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
                    raise ExtractionError(f"{_describe(i, stimuli)}target word {word!r} maps to no token of "
                                          f"model {model_name} (was the text truncated?)")
                w[toks] += 1.0 / toks.size
                ntok[i] += toks.size
            w /= len(spans)
        ids_out.append(list(ids))
        weights.append(w)
    return _Encoded(ids_out, weights, ntok)


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


class _Hooks:
    """Registers pooling hooks on every block; each writes into ``self.out[(layer, component)]``."""

    def __init__(self, model, with_final: bool = False):
        self.model = model
        self.weights = None           # torch [B, T] on the device, set per batch
        self.out: dict = {}
        self.handles = []
        self.with_final = with_final
        adapter = adapter_for(model)
        for l, block in enumerate(blocks(model)):
            self.handles.append(block.register_forward_pre_hook(self._pre(l), with_kwargs=True))
            self.handles.append(sublayer(block, adapter.attn).register_forward_hook(self._post(l, "attn_out")))
            self.handles.append(sublayer(block, adapter.mlp).register_forward_hook(self._post(l, "mlp_out")))
        if with_final:
            last = blocks(model)[-1]
            self.handles.append(last.register_forward_hook(self._post(len(blocks(model)) - 1, "resid_post")))

    def _pool(self, key, h):
        import torch
        if isinstance(h, (tuple, list)):
            h = h[0]
        w = self.weights.to(h.dtype)
        pooled = torch.bmm(w.unsqueeze(1), h).squeeze(1).float()
        self.out[key] = pooled

    def _pre(self, layer):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            self._pool((layer, "resid_pre"), h)
        return hook

    def _post(self, layer, comp):
        def hook(module, args, output):
            self._pool((layer, comp), output)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


class _OwnHooks(_Hooks):
    """The same pooling through a model's own hook points (a TransformerLens ``HookedTransformer``:
    ``blocks.{l}.hook_resid_pre`` / ``hook_attn_out`` / ``hook_mlp_out``, see :mod:`probekit.extraction.interop`)."""

    def __init__(self, runner):
        self.model, self.runner = runner.model, runner
        self.weights, self.out, self.handles, self.with_final = None, {}, [], False
        for l, comp, point in runner.hook_points():
            self.handles.append(point.register_forward_hook(self._post(l, comp)))


def _hooks_for(model, with_final: bool = False) -> _Hooks:
    if getattr(model, "runs_own_hooks", False):
        if with_final:
            raise ExtractionError(f"model {model.name}: capture(with_final=True) needs a transformers model")
        return _OwnHooks(model)
    return _Hooks(model.model, with_final=with_final)


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


def _forward(model, hooks: _Hooks, ids: list[list[int]], weights: list[np.ndarray], pad_id: int):
    """One padded forward pass of the base model (no LM head, no KV cache)."""
    import torch
    device = input_device(model)
    input_ids, mask, W = pad_batch(ids, pad_id, weights)
    hooks.weights = W.to(device)
    hooks.out = {}
    with torch.inference_mode():
        if isinstance(hooks, _OwnHooks):
            hooks.runner.forward(input_ids.to(device), mask.to(device))
        else:
            base_model(model)(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
    return hooks.out


def _check_finite(out: dict, rows: list[int], stimuli: pd.DataFrame, model_name: str) -> None:
    import torch
    for (l, c), t in out.items():
        bad = ~torch.isfinite(t).all(dim=1)
        if bool(bad.any()):
            i = rows[int(bad.nonzero()[0, 0])]
            raise ExtractionError(f"model {model_name}: non-finite activations (NaN/inf) at layer {l} {c} for "
                                  f"{_describe(i, stimuli)}in a float16 model usually overflow (load it with "
                                  f"dtype='bfloat16' or 'float32'); in bfloat16 or float32 the weights themselves "
                                  f"hold NaN/inf or overflow (check them: torch.isfinite on each parameter)")
    check_activation_range(out, rows, model_name, lambda i: _describe(i, stimuli))   # finite but absurd: now too


def extract(model, stimuli: pd.DataFrame, pooling: str | None = None, *, batch_size: int = 32,
            store: ActivationStore | str | bool | None = None, progress: bool | None = None,
            max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS) -> ActivationSet:
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
    few seconds; True from the start; False never.
    """
    model = as_loaded_model(model)
    batch_size = count(batch_size, "batch_size", 1)
    if max_batch_tokens is not None:
        max_batch_tokens = count(max_batch_tokens, "max_batch_tokens", 1)
    if store is not None and store is not False and not isinstance(store, ActivationStore):
        store = ActivationStore(None if store is True else store)
    if isinstance(store, ActivationStore):
        usable_dir(store.root, f"activation store {store.root}", write=False)     # a file in the way: now
    pooling = pooling or stimuli.attrs.get("pooling") or "target_mean"
    stimuli = carry_metadata(stimuli.reset_index(drop=True), stimuli)
    tok = model.tokenizer
    max_len = getattr(model.config, "max_position_embeddings", None)
    enc = encode(tok, stimuli, pooling, model.name, max_length=max_len)
    chunks = plan_chunks([len(x) for x in enc.input_ids], batch_size, max_tokens=max_batch_tokens)
    fingerprint = model.fingerprint                # hashes the weights in memory: read it once per extraction
    meta = {"probekit_version": __version__, "model_fingerprint": fingerprint,
            "stimulus_set": stimuli.attrs.get("name"), "stimulus_version": stimuli.attrs.get("version"),
            "stimulus_hash": stimuli.attrs.get("hash")}
    stim_out = carry_metadata(stimuli.copy(), stimuli)
    runner = _run
    if getattr(model, "streamed", False):          # probekit.extraction.streaming: layer-major, weights read once
        from probekit.extraction.streaming import preflight, run_streamed   # cycle: streaming reuses this module's batching and hooks
        preflight(model, enc, chunks)              # missing shards / disk refused before the store is touched
        runner = run_streamed

    def in_memory() -> ActivationSet:
        arrays = {(l, c): np.zeros((len(stimuli), model.d_model), np.float32)
                  for l in range(model.n_layers) for c in COMPONENTS}
        runner(model, enc, chunks, stimuli, arrays, done=set(), on_chunk=None, progress=progress)
        stim_out["n_target_tokens"] = enc.n_target_tokens
        return ActivationSet.from_arrays(arrays, stim_out, model_name=model.name, pooling=pooling, meta=meta)

    if store is None or store is False:
        return in_memory()

    entry = store.entry(store_identity(model, stimuli, pooling, fingerprint))

    def stored() -> ActivationSet:
        stim_out["n_target_tokens"] = entry.n_target_tokens()
        return ActivationSet(stimuli=stim_out, n_layers=model.n_layers, d_model=model.d_model,
                             model_name=model.name, pooling=pooling, meta=dict(meta, store=str(entry.path)),
                             _loader=entry.load)

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(entry.lock())
        except OSError as exc:
            if not is_read_only_error(exc):
                raise
            # a read-only store (e.g. a shared cache): a complete, intact entry is read without a lock
            try:
                entry.verify()
                return stored()
            except (StoreCorruptError, StoreMismatchError) as bad:
                why = f"its entry is not usable ({bad})" if entry.path.exists() else "it has no entry for these stimuli"
            warnings.warn(f"activation store {store.root} is read-only ({exc.strerror}) and {why}: "
                          f"extracting in memory, nothing is cached")
            return in_memory()
        if entry.is_complete():
            try:
                entry.verify()
            except (StoreCorruptError, StoreMismatchError) as exc:
                warnings.warn(f"activation store: rebuilding {entry.path}: {exc}")
                entry.wipe()
        if not entry.is_complete():
            batch_plan = [[list(b) for b in chunk] for chunk in chunks]
            done = entry.begin(batch_plan)
            writers = entry.open_writers()
            writers["n_target_tokens"][:] = enc.n_target_tokens
            runner(model, enc, chunks, stimuli, writers, done=done,
                 on_chunk=lambda k: entry.mark_done(writers, k), progress=progress)
            del writers
            entry.finish()
    return stored()




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


def store_identity(model, stimuli: pd.DataFrame, pooling: str, fingerprint: str | None = None) -> dict:
    """What an activation-store entry is keyed by (``stimuli`` with a fresh index; ``fingerprint``:
    ``model.fingerprint`` when the caller has already computed it, since it hashes the weights)."""
    return {"model_fingerprint": fingerprint or model.fingerprint, "model_name": model.name,
            "stimulus_hash": stimulus_key_hash(stimuli), "pooling": pooling,
            "probekit_version": __version__, "n_stimuli": len(stimuli),
            "n_layers": model.n_layers, "d_model": model.d_model, "dtype": "float32"}


def _run(model, enc: _Encoded, chunks, stimuli, arrays, done: set, on_chunk, progress) -> None:
    todo = [(k, chunk) for k, chunk in enumerate(chunks) if k not in done]
    if not todo:
        return
    pad_id = pad_token_id(model.tokenizer)
    rows_todo = [i for _, chunk in todo for rows in chunk for i in rows]
    bar = _Progress(model.name, len(rows_todo), sum(len(enc.input_ids[i]) for i in rows_todo), progress)
    hooks = _hooks_for(model)
    try:
        for k, chunk in todo:
            for rows in chunk:
                out = _forward(model.model, hooks, [enc.input_ids[i] for i in rows],
                               [enc.weights[i] for i in rows], pad_id)
                _check_finite(out, rows, stimuli, model.name)
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
    hooks = _hooks_for(model, with_final=with_final)
    try:
        yield lambda ids, weights: _forward(model.model, hooks, ids, weights, pad_token_id(model.tokenizer))
    finally:
        hooks.remove()
