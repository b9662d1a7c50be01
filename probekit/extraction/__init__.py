"""Stage 3: tokens and batches (``batching``), pooling hooks (``hooks``), the hooked forward pass
(``forward``: in memory, or through the layer-streamed runner ``streaming``; under an intervention:
``interventions``, docs/causal.md), what a store entry is keyed by
(``keys``), the on-disk activation store, and the interop with TransformerLens / nnsight models.
"""
from __future__ import annotations

from .batching import (  # noqa: F401
    ExtractionError,
    Encoded,
    encode,
    describe_stimulus,
    DEFAULT_MAX_BATCH_TOKENS,
    plan_batches,
    plan_chunks,
    pad_batch,
    input_device,
)
from .hooks import (  # noqa: F401
    Hooks,
    OwnHooks,
    hooks_for,
    check_finite,
)
from .keys import (  # noqa: F401
    stimulus_key_hash,
    store_identity,
)
from .forward import (  # noqa: F401
    extract,
    capture,
)
from .store import (  # noqa: F401
    FORMAT_VERSION,
    StoreMismatchError,
    StoreCorruptError,
    array_name,
    StoreEntry,
    is_read_only_error,
    ActivationStore,
)
from .streaming import (  # noqa: F401
    StreamingError,
    STREAMABLE,
    WeightIndex,
    StreamedModel,
    load_streamed,
    hidden_bytes,
    preflight,
    plan,
    run_streamed,
    release_layer,
    trim_heap,
)
from .interventions import (  # noqa: F401
    InterventionError,
    ABLATABLE,
    ZeroAblation,
    MeanAblation,
    ResampleAblation,
    SwapBlocks,
    PatchResidual,
    Intervention,
    as_intervention,
)
from .readout import (  # noqa: F401
    SPANS,
    loglik,
    loglik_change,
)
from .interop import (  # noqa: F401
    as_loaded_model,
    target_token_weights,
    TargetTokenWeights,
    pad_token_id,
    HookedTransformerRunner,
)
from . import batching, hooks, keys, interventions, forward, readout, store, streaming, interop  # noqa: F401,E402  (the modules, as namespaces)

__all__ = [
    'ExtractionError',
    'Encoded',
    'describe_stimulus',
    'Hooks',
    'OwnHooks',
    'hooks_for',
    'check_finite',
    'stimulus_key_hash',
    'encode',
    'DEFAULT_MAX_BATCH_TOKENS',
    'plan_batches',
    'plan_chunks',
    'pad_batch',
    'input_device',
    'extract',
    'store_identity',
    'capture',
    'FORMAT_VERSION',
    'StoreMismatchError',
    'StoreCorruptError',
    'array_name',
    'StoreEntry',
    'is_read_only_error',
    'ActivationStore',
    'StreamingError',
    'STREAMABLE',
    'WeightIndex',
    'StreamedModel',
    'load_streamed',
    'hidden_bytes',
    'preflight',
    'plan',
    'run_streamed',
    'release_layer',
    'trim_heap',
    'as_loaded_model',
    'target_token_weights',
    'TargetTokenWeights',
    'pad_token_id',
    'HookedTransformerRunner',
    'InterventionError',
    'ABLATABLE',
    'ZeroAblation',
    'MeanAblation',
    'ResampleAblation',
    'SwapBlocks',
    'PatchResidual',
    'Intervention',
    'as_intervention',
    'SPANS',
    'loglik',
    'loglik_change',
]
