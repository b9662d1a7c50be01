"""Stage 1: stimulus sets (load, save, validate) and experiments (a set + a query).
"""
from __future__ import annotations

from .sets import (  # noqa: F401
    SET_NAMES,
    STIMULI_DIR,
    StimulusError,
    Problem,
    names,
    load,
    load_file,
    save,
    validate,
    metadata,
    content_hash,
    indefinite_article,
    with_article,
    article_errors,
    A_EXCEPTIONS,
    AN_EXCEPTIONS,
)
from .experiments import (  # noqa: F401
    Experiment,
    experiment_profile,
)
from . import sets, experiments  # noqa: F401,E402  (the modules, as namespaces)

__all__ = [
    'SET_NAMES',
    'STIMULI_DIR',
    'StimulusError',
    'Problem',
    'names',
    'load',
    'load_file',
    'save',
    'validate',
    'metadata',
    'content_hash',
    'indefinite_article',
    'with_article',
    'article_errors',
    'A_EXCEPTIONS',
    'AN_EXCEPTIONS',
    'Experiment',
    'experiment_profile',
]
