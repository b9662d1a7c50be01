"""ActivationSet: pooled per-layer component activations for one stimulus set.

The contract every downstream stage relies on:

* ``components`` is ``("resid_pre", "attn_out", "mlp_out")`` (TransformerLens
  names): the input of block ``l``, and what the attention and MLP sublayers of
  block ``l`` add to the residual stream. Activations brought from elsewhere
  (:meth:`ActivationSet.from_arrays` / :meth:`ActivationSet.from_cache`) may hold a
  subset of them, in that order; every component held covers every layer.
* ``get(layer, component)`` returns a float32 array ``[n_stimuli, d_model]``,
  row ``i`` belonging to row ``i`` of ``stimuli``; only that matrix is read
  (memory-mapped when the set is backed by the on-disk store).
* ``stimuli`` is the stimulus DataFrame that was extracted (labels, groups and
  metadata carried through), plus ``n_target_tokens``: how many tokens the
  pooled span covered, a per-model surface feature.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import pandas as pd

COMPONENTS: tuple[str, ...] = ("resid_pre", "attn_out", "mlp_out")
#: How a stimulus's token activations become one vector: mean over the target word's tokens, or the last token.
POOLINGS: tuple[str, ...] = ("target_mean", "last_token")


def carry_metadata(frame: pd.DataFrame, source: pd.DataFrame, **changes) -> pd.DataFrame:
    """``frame``, made from the stimulus frame ``source`` by a pandas operation, given ``source``'s stage
    metadata (``attrs``: name, version, hash, pooling, labels, checks; a deep copy) updated by ``changes``.

    pandas carries ``attrs`` through most operations, but not by contract (pandas-dev/pandas#52166 proposes
    to stop): every stage that derives a stimulus frame from another goes through here, so the metadata
    the next stage reads (labels, pooling, the set's name and hash) survives by construction."""
    frame.attrs = {**copy.deepcopy(dict(source.attrs)), **changes}
    return frame


_TL_KEY = re.compile(r"blocks\.(\d+)\.hook_(resid_pre|attn_out|mlp_out)")
_TL_ANY = re.compile(r"blocks\.\d+\..+|hook_embed|hook_pos_embed|ln_final\..+|embed\..+|unembed\..+")


def parse_key(key) -> tuple[int | None, str] | None:
    """``(layer, component)`` of an activation key (see :meth:`ActivationSet.from_arrays`); ``layer`` None for
    a component alone (a stacked value); None when ``key`` is not one."""
    def comp(c):
        c = c[5:] if isinstance(c, str) and c.startswith("hook_") else c
        return c if c in COMPONENTS else None
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], (int, np.integer)) and comp(key[1]):
        return int(key[0]), comp(key[1])
    if isinstance(key, str):
        m = _TL_KEY.fullmatch(key)
        if m:
            return int(m.group(1)), m.group(2)
        if comp(key):
            return None, comp(key)
    return None


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):                  # a torch tensor (bf16 included)
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def _ranges(xs: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2, 5'``."""
    parts, start = [], xs[0]
    for a, b in zip(xs, xs[1:] + [None]):
        if b != a + 1:
            parts.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(parts)


@dataclass
class ActivationSet:
    stimuli: pd.DataFrame
    n_layers: int
    d_model: int
    model_name: str = "unknown"
    pooling: str = "target_mean"
    meta: dict = field(default_factory=dict)
    _loader: Callable[[int, str], np.ndarray] | None = field(default=None, repr=False)
    _arrays: Mapping[tuple[int, str], np.ndarray] | None = field(default=None, repr=False)

    components: tuple[str, ...] = COMPONENTS

    @classmethod
    def from_arrays(cls, arrays, stimuli: pd.DataFrame, model_name: str = "in-memory", pooling: str = "target_mean",
                    meta: dict | None = None, *, weights=None) -> "ActivationSet":
        """Build from pooled activations computed anywhere (a TransformerLens cache, nnsight, your own hooks).

        ``arrays``: a mapping (a TransformerLens ``ActivationCache`` works) whose keys are any of

        * ``(layer, component)`` with component ``resid_pre``/``attn_out``/``mlp_out`` or ``hook_resid_pre``/...;
        * TransformerLens names ``"blocks.{layer}.hook_resid_pre"`` (``hook_attn_out``, ``hook_mlp_out``);
        * a component name alone (``"resid_pre"`` or ``"hook_resid_pre"``) with a stacked ``[L, n, d]`` value.

        Values are numpy arrays or torch tensors ``[n_stimuli, d_model]``, row ``i`` for row ``i`` of
        ``stimuli``; token-level ``[n, tokens, d]`` values (``[L, n, tokens, d]`` stacked) are pooled with
        ``weights`` (:func:`probekit.extraction.interop.target_token_weights`: probekit's own pooling). Any subset of the
        three components may be given (``probe_grid`` then probes those), but each one for every layer
        ``0..L-1`` (the block index, ``hook_resid_pre`` of block 0 being the embeddings). Everything is
        checked here and a problem is named: a missing layer or component, an unknown key, a shape.
        """
        from collections import defaultdict
        if not hasattr(arrays, "items"):
            raise ValueError(f"arrays must be a mapping (dict or TransformerLens ActivationCache), got "
                             f"{type(arrays).__name__}")
        out: dict[tuple[int, str], np.ndarray] = {}
        n_pool = None if weights is None else np.asarray(weights.weights).shape[0]
        for key, value in arrays.items():
            parsed = parse_key(key)
            if parsed is None:
                raise ValueError(f"key {key!r}: not an activation key; use (layer, component), "
                                 f"'blocks.{{layer}}.hook_{{component}}' or a component with a stacked [L, n, d] "
                                 f"value, component one of {COMPONENTS} (or hook_ + its name)")
            layer, comp = parsed
            a = _as_numpy(value)
            if layer is None:                                   # stacked [L, n, d]
                if a.ndim not in (3, 4):
                    raise ValueError(f"key {key!r}: a component alone needs a stacked [L, n_stimuli, d_model] "
                                     f"value, got shape {a.shape}")
                items = [((l, comp), a[l]) for l in range(a.shape[0])]
            else:
                items = [((layer, comp), a)]
            for k, v in items:
                if k in out:
                    raise ValueError(f"layer {k[0]} {k[1]} is given twice (key {key!r})")
                if v.ndim == 3:
                    if weights is None:
                        raise ValueError(f"layer {k[0]} {k[1]}: token-level activations {v.shape} need pooling; "
                                         f"pass weights=probekit.extraction.interop.target_token_weights(tokenizer, "
                                         f"stimuli) (or pool them yourself to [n_stimuli, d_model])")
                    v = weights.pool(v)
                elif v.ndim != 2:
                    raise ValueError(f"layer {k[0]} {k[1]}: expected [n_stimuli, d_model], got shape {v.shape}")
                out[k] = np.ascontiguousarray(v, dtype=np.float32)
        if not out:
            raise ValueError("no activations given (arrays is empty)")
        if n_pool is not None and n_pool != len(stimuli):
            raise ValueError(f"weights cover {n_pool} stimuli but stimuli has {len(stimuli)}")
        by_comp = defaultdict(set)
        for l, c in out:
            by_comp[c].add(l)
        layers = sorted(set().union(*by_comp.values()))
        n_layers = layers[-1] + 1
        if layers[0] < 0:
            raise ValueError(f"negative layer {layers[0]}; layers are block indices 0..L-1")
        problems = []
        for c in sorted(by_comp, key=COMPONENTS.index):
            missing = sorted(set(range(n_layers)) - by_comp[c])
            if missing:
                problems.append(f"{c} lacks layer(s) {_ranges(missing)}")
        if problems:
            raise ValueError(f"incomplete activations ({n_layers} layers, 0..{n_layers - 1}): {'; '.join(problems)}. "
                             f"Every component given needs every layer 0..L-1, numbered by block (resid_pre of "
                             f"block 0 = the embeddings); depth is layer / L, so a subset of layers cannot be "
                             f"renumbered silently")
        first_key = min(out)
        shape = out[first_key].shape
        for key, arr in out.items():
            if arr.shape != shape:
                raise ValueError(f"layer {key[0]} {key[1]} has shape {arr.shape}, layer {first_key[0]} "
                                 f"{first_key[1]} has {shape}")
        if shape[0] != len(stimuli):
            raise ValueError(f"arrays have {shape[0]} rows but stimuli has {len(stimuli)}")
        stim = carry_metadata(stimuli.reset_index(drop=True), stimuli)
        if weights is not None and "n_target_tokens" not in stim.columns:
            stim["n_target_tokens"] = np.asarray(weights.n_target_tokens)
        comps = tuple(c for c in COMPONENTS if c in by_comp)
        return cls(stimuli=stim, n_layers=n_layers, d_model=shape[1], model_name=model_name,
                   pooling=getattr(weights, "pooling", pooling), meta=dict(meta or {}), _arrays=out,
                   components=comps)

    @classmethod
    def from_cache(cls, cache, stimuli: pd.DataFrame, weights=None, model_name: str = "in-memory",
                   pooling: str = "target_mean", meta: dict | None = None) -> "ActivationSet":
        """A TransformerLens ``ActivationCache`` (or any mapping of its names) -> ActivationSet.

        Like :meth:`from_arrays`, except that keys ``blocks.{l}.<other hook>`` (``hook_resid_mid``,
        ``attn.hook_z``, ...: a full cache holds many) are left out, so ``run_with_cache`` without a
        ``names_filter`` works; the three components are what is kept. ``weights``
        (:func:`probekit.extraction.interop.target_token_weights`) pools a token-level cache."""
        kept = {k: cache[k] for k in cache.keys() if not (isinstance(k, str) and parse_key(k) is None
                                                           and _TL_ANY.fullmatch(k))}
        if not kept:
            raise ValueError(f"the cache has none of blocks.{{l}}.hook_resid_pre / hook_attn_out / hook_mlp_out "
                             f"(keys: {', '.join(map(str, list(cache.keys())[:6]))}...); cache those, e.g. "
                             f"run_with_cache(tokens, names_filter=lambda n: n.endswith(('hook_resid_pre', "
                             f"'hook_attn_out', 'hook_mlp_out')))")
        return cls.from_arrays(kept, stimuli, model_name=model_name, pooling=pooling,
                               meta=dict(meta or {}, source="from_cache"), weights=weights)

    def take(self, rows, stimuli: pd.DataFrame | None = None) -> "ActivationSet":
        """The activations of ``rows`` (positions) only, with ``stimuli`` (default: those rows of
        ``self.stimuli``); ``get`` reads the parent's matrix and takes the rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(self))):
            raise ValueError(f"rows must be positions in 0..{len(self) - 1}")
        if stimuli is None:
            stimuli = carry_metadata(self.stimuli.iloc[rows].reset_index(drop=True), self.stimuli)
        if len(stimuli) != len(rows):
            raise ValueError(f"{len(rows)} rows but {len(stimuli)} stimuli")
        parent = self
        return ActivationSet(stimuli=stimuli, n_layers=self.n_layers, d_model=self.d_model,
                             model_name=self.model_name, pooling=self.pooling, meta=dict(self.meta),
                             _loader=lambda layer, comp: parent.get(layer, comp)[rows],
                             components=self.components)

    @property
    def layers(self) -> range:
        return range(self.n_layers)

    def __len__(self) -> int:
        return len(self.stimuli)

    def get(self, layer: int, component: str) -> np.ndarray:
        if component not in self.components:
            if component in COMPONENTS:
                raise KeyError(f"component {component!r} is not in this ActivationSet of {self.model_name} (it "
                               f"holds {', '.join(self.components)}); probe those (probe_grid(acts, components="
                               f"{list(self.components)!r})) or supply {component} too")
            raise KeyError(f"unknown component {component!r}; expected one of {self.components}")
        if not 0 <= int(layer) < self.n_layers:
            raise KeyError(f"layer {layer} out of range 0..{self.n_layers - 1} for {self.model_name}")
        if self._arrays is not None:
            return self._arrays[(int(layer), component)]
        assert self._loader is not None
        return self._loader(int(layer), component)
