"""On-disk activation store: one memory-mappable ``.npy`` per (layer, component).

Layout of one entry (a directory named by its key)::

    <root>/<key>/
        manifest.json          identity (model fingerprint, stimulus hash, pooling,
                               probekit version, shapes) — written first
        progress.json          extraction plan (chunks of stimulus rows) and the chunks done
        L{l:03d}_{component}.npy   float32 [n_stimuli, d_model]
        n_target_tokens.npy    int32 [n_stimuli]
        complete.json          checksums of every array — written last, atomically

* The key is a hash of the identity, so another model, stimulus set, pooling or
  probekit version never reads this entry; a manifest that disagrees with the
  key (a copied or edited directory) is detected and the entry rebuilt. The
  stimulus part of the identity is the hash of the texts and targets in row
  order (what activations depend on): a corrected label reuses the activations,
  while the probe-results cache (:mod:`probekit.pipeline`) keys on the set's
  full content hash, labels included.
* Writes go to preallocated memmaps; a chunk is marked done in
  ``progress.json`` (atomic replace) only after its rows are flushed, so a run
  killed halfway resumes at the first chunk not done.
* ``complete.json`` holds SHA256 checksums; opening a complete entry verifies
  sizes, headers and checksums, and a corrupt entry is rebuilt with a warning,
  never silently reused.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from .activations import COMPONENTS
from .atomic import atomic_write_json
from .hashing import file_sha256
from .registry import cache_dir

FORMAT_VERSION = 1


class StoreMismatchError(RuntimeError):
    """A store entry belongs to another model, stimulus set, pooling or version."""


class StoreCorruptError(RuntimeError):
    """A store entry failed its integrity checks."""


def array_name(layer: int, component: str) -> str:
    return f"L{layer:03d}_{component}.npy"


class StoreEntry:
    """One (model, stimuli, pooling) entry of the store."""

    def __init__(self, path: Path, identity: dict):
        self.path = Path(path)
        self.identity = identity

    # -- identity ---------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.identity["n_stimuli"])

    @property
    def n_layers(self) -> int:
        return int(self.identity["n_layers"])

    @property
    def d_model(self) -> int:
        return int(self.identity["d_model"])

    def _check_manifest(self) -> None:
        mf = self.path / "manifest.json"
        try:
            found = json.loads(mf.read_text())
        except (OSError, ValueError) as exc:
            raise StoreCorruptError(f"{mf}: unreadable manifest ({exc})") from None
        if found != self.identity:
            diff = {k: (found.get(k), v) for k, v in self.identity.items() if found.get(k) != v}
            raise StoreMismatchError(f"store entry {self.path} was written for another identity: "
                                     f"{ {k: f'{a!r} != {b!r}' for k, (a, b) in diff.items()} }")

    # -- state ------------------------------------------------------------------------------
    def is_complete(self) -> bool:
        return (self.path / "complete.json").exists()

    def progress(self) -> dict | None:
        try:
            return json.loads((self.path / "progress.json").read_text())
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def lock(self):
        """Exclusive lock so two processes never extract into the same entry at once.

        Raises OSError (EROFS/EACCES) when the store cannot be written: see :func:`is_read_only_error`."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- writing ----------------------------------------------------------------------------
    def begin(self, chunks: list[list[int]]) -> set[int]:
        """Start or resume: returns the ids of chunks already done.

        A partial entry with a different plan or identity is wiped and restarted."""
        rows = sorted(i for chunk in chunks for batch in chunk for i in batch)
        if rows != list(range(self.n)):
            raise ValueError(f"activation store: the extraction plan covers {len(rows)} row slots for "
                             f"{self.n} stimuli; every row must be in exactly one batch")
        prog = self.progress()
        if prog is not None:
            try:
                self._check_manifest()
                ok = prog.get("chunks") == chunks and all(
                    (self.path / array_name(l, c)).exists() for l in range(self.n_layers) for c in COMPONENTS)
            except (StoreMismatchError, StoreCorruptError):
                ok = False
            if ok:
                return set(prog.get("done", []))
            warnings.warn(f"activation store: discarding an unusable partial entry at {self.path}")
        self.wipe()
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / "manifest.json", self.identity, fsync=True)
        shape = (self.n, self.d_model)
        for l in range(self.n_layers):
            for c in COMPONENTS:
                np.lib.format.open_memmap(self.path / array_name(l, c), mode="w+", dtype=np.float32,
                                          shape=shape).flush()
        np.lib.format.open_memmap(self.path / "n_target_tokens.npy", mode="w+", dtype=np.int32,
                                  shape=(self.n,)).flush()
        atomic_write_json(self.path / "progress.json", {"chunks": chunks, "done": []}, fsync=True)
        return set()

    def open_writers(self) -> dict:
        w = {(l, c): np.load(self.path / array_name(l, c), mmap_mode="r+")
             for l in range(self.n_layers) for c in COMPONENTS}
        w["n_target_tokens"] = np.load(self.path / "n_target_tokens.npy", mmap_mode="r+")
        return w

    def mark_done(self, writers: dict, chunk_id: int) -> None:
        for arr in writers.values():
            arr.flush()
        prog = self.progress() or {"chunks": [], "done": []}
        prog["done"] = sorted(set(prog["done"]) | {chunk_id})
        atomic_write_json(self.path / "progress.json", prog, fsync=True)

    def finish(self) -> None:
        """Checksum the arrays and mark the entry complete -- only once every chunk of the plan was
        written by a real batch (never checksum the preallocated zeros of a chunk that did not run)."""
        prog = self.progress()
        if prog is None:
            raise StoreCorruptError(f"{self.path}: no progress.json; the entry was not begun")
        missing = sorted(set(range(len(prog.get("chunks", [])))) - set(prog.get("done", [])))
        rows = sorted(i for chunk in prog.get("chunks", []) for batch in chunk for i in batch)
        if missing or rows != list(range(self.n)):
            raise StoreCorruptError(f"{self.path}: refusing to complete the entry: chunks {missing} not written, "
                                    f"{len(rows)} of {self.n} rows planned")
        sums = {p.name: file_sha256(p) for p in sorted(self.path.glob("*.npy"))}
        atomic_write_json(self.path / "complete.json", {"sha256": sums}, fsync=True)
        (self.path / "progress.json").unlink(missing_ok=True)

    def wipe(self) -> None:
        if self.path.exists():
            for p in self.path.iterdir():
                if p.name != ".lock":
                    p.unlink() if p.is_file() else shutil.rmtree(p)

    # -- reading ----------------------------------------------------------------------------
    def verify(self, checksums: bool = True) -> None:
        """Raise StoreCorruptError / StoreMismatchError unless the entry is complete and intact."""
        self._check_manifest()
        try:
            sums = json.loads((self.path / "complete.json").read_text())["sha256"]
        except (OSError, ValueError, KeyError) as exc:
            raise StoreCorruptError(f"{self.path}: incomplete entry ({exc})") from None
        expected = {array_name(l, c) for l in range(self.n_layers) for c in COMPONENTS} | {"n_target_tokens.npy"}
        if set(sums) != expected:
            raise StoreCorruptError(f"{self.path}: checksum list does not match the expected arrays")
        for name in sorted(expected):
            p = self.path / name
            try:
                arr = np.load(p, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise StoreCorruptError(f"{p}: unreadable ({exc})") from None
            want = (self.n,) if name == "n_target_tokens.npy" else (self.n, self.d_model)
            if arr.shape != want:
                raise StoreCorruptError(f"{p}: shape {arr.shape}, expected {want}")
            if checksums and file_sha256(p) != sums[name]:
                raise StoreCorruptError(f"{p}: checksum mismatch (the file changed after it was written)")

    def load(self, layer: int, component: str) -> np.ndarray:
        return np.load(self.path / array_name(layer, component), mmap_mode="r")

    def n_target_tokens(self) -> np.ndarray:
        return np.asarray(np.load(self.path / "n_target_tokens.npy"))


def is_read_only_error(exc: BaseException) -> bool:
    """An OSError that means "this directory cannot be written" (read-only mount, permissions)."""
    return isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


class ActivationStore:
    """A directory of store entries (default: ``<cache_dir>/activations``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            root = cache_dir() / "activations"
        self.root = Path(root)

    @staticmethod
    def key(identity: dict) -> str:
        blob = json.dumps(identity, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def entry(self, identity: dict) -> StoreEntry:
        identity = dict(identity, format_version=FORMAT_VERSION)
        return StoreEntry(self.root / self.key(identity), identity)

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.root)!r})"
