"""Stable content hashes used to key caches and to version stimulus sets."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
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


# one manifest scheme: {file name: SHA256} of a directory's files, written last, checked on read (the store's
# complete.json, a converted checkpoint's probekit-converted.json, saved probe results' checksums.json)

def dir_sha256(d, pattern: str = "*", skip: Iterable[str] = ()) -> dict[str, str]:
    """``{name: SHA256}`` of the plain files of directory ``d`` matching ``pattern``, except ``skip``."""
    skip = set(skip)
    return {p.name: file_sha256(p) for p in sorted(Path(d).glob(pattern)) if p.is_file() and p.name not in skip}


def sha256_problem(d, sums: dict) -> tuple[str, str | None, str] | None:
    """The first file (by name) of ``sums`` that is missing from ``d`` or whose SHA256 differs, as ``(name,
    actual SHA256 or None when missing, recorded SHA256)``; None when every listed file matches."""
    for name, want in sorted(sums.items()):
        p = Path(d) / name
        if not p.is_file():
            return name, None, want
        got = file_sha256(p)
        if got != want:
            return name, got, want
    return None
