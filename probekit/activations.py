"""ActivationSet: pooled per-layer component activations for one stimulus set.

The contract every downstream stage relies on:

* ``components`` is ``("resid_pre", "attn_out", "mlp_out")`` (TransformerLens
  names): the input of block ``l``, and what the attention and MLP sublayers of
  block ``l`` add to the residual stream.
* ``get(layer, component)`` returns a float32 array ``[n_stimuli, d_model]``,
  row ``i`` belonging to row ``i`` of ``stimuli``; only that matrix is read
  (memory-mapped when the set is backed by the on-disk store).
* ``stimuli`` is the stimulus DataFrame that was extracted (labels, groups and
  metadata carried through), plus ``n_target_tokens``: how many tokens the
  pooled span covered, a per-model surface feature.
"""
from __future__ import annotations

import copy
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
    def from_arrays(cls, arrays: Mapping[tuple[int, str], np.ndarray], stimuli: pd.DataFrame,
                    model_name: str = "in-memory", pooling: str = "target_mean",
                    meta: dict | None = None) -> "ActivationSet":
        """Build from ``{(layer, component): array[n, d]}`` (tests, synthetic data)."""
        layers = sorted({l for l, _ in arrays})
        if layers != list(range(len(layers))):
            raise ValueError(f"layers must be 0..L-1, got {layers}")
        first = next(iter(arrays.values()))
        for key, arr in arrays.items():
            if arr.shape != first.shape:
                raise ValueError(f"array {key} has shape {arr.shape}, expected {first.shape}")
        if first.shape[0] != len(stimuli):
            raise ValueError(f"arrays have {first.shape[0]} rows but stimuli has {len(stimuli)}")
        return cls(stimuli=carry_metadata(stimuli.reset_index(drop=True), stimuli), n_layers=len(layers),
                   d_model=first.shape[1], model_name=model_name, pooling=pooling,
                   meta=dict(meta or {}), _arrays=dict(arrays))

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
            raise KeyError(f"unknown component {component!r}; expected one of {self.components}")
        if not 0 <= int(layer) < self.n_layers:
            raise KeyError(f"layer {layer} out of range 0..{self.n_layers - 1} for {self.model_name}")
        if self._arrays is not None:
            return self._arrays[(int(layer), component)]
        assert self._loader is not None
        return self._loader(int(layer), component)
