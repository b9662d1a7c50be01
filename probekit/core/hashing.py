"""Stable content hashes used to key caches and to version stimulus sets."""
from __future__ import annotations

import hashlib
import json
from typing import Iterable

import numpy as np
import pandas as pd


def _canonical(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_canonical(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def frame_hash(df: pd.DataFrame, columns: Iterable[str] | None = None) -> str:
    """SHA256 over the given columns of ``df``, row order included.

    Lists (e.g. multi-word targets) and numpy scalars are canonicalised, so a
    frame read back from parquet hashes like the one that was written.
    """
    cols = list(df.columns if columns is None else columns)
    h = hashlib.sha256()
    h.update(json.dumps(cols).encode())
    for row in df[cols].itertuples(index=False, name=None):
        h.update(json.dumps([_canonical(v) for v in row], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
