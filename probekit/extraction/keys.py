"""What an activation-store entry is keyed by: the stimuli's texts and targets, the model, the pooling."""
from __future__ import annotations

import pandas as pd

from probekit.core.hashing import frame_hash
from probekit.core.version import __version__


def stimulus_key_hash(stimuli: pd.DataFrame) -> str:
    """What the activations depend on: texts and targets, in row order."""
    cols = ["text"] + (["target"] if "target" in stimuli.columns else [])
    return frame_hash(stimuli, cols)


def store_identity(model, stimuli: pd.DataFrame, pooling: str, fingerprint: str | None = None,
                   intervention: str = "") -> dict:
    """What an activation-store entry is keyed by (``stimuli`` with a fresh index; ``fingerprint``:
    ``model.fingerprint`` when the caller has already computed it, since it hashes the weights;
    ``intervention``: the key of :class:`probekit.extraction.interventions.Intervention`, entered only when
    not empty, so an ordinary run's identity, and every existing store entry, is unchanged)."""
    identity = {"model_fingerprint": fingerprint or model.fingerprint, "model_name": model.name,
                "stimulus_hash": stimulus_key_hash(stimuli), "pooling": pooling,
                "probekit_version": __version__, "n_stimuli": len(stimuli),
                "n_layers": model.n_layers, "d_model": model.d_model, "dtype": "float32"}
    if intervention:
        identity["intervention"] = intervention
    return identity
