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
* Before an entry is begun, the free space of the store's file system is checked against the
  bytes the entry will hold, and every array's blocks are reserved (``posix_fallocate``): a
  memory-mapped write to a page the file system cannot back would kill the process with SIGBUS.
  A full disk (ENOSPC, EDQUOT, EIO) is a :class:`~probekit.core.checks.DiskFullError` naming the store
  and the bytes needed; the chunks already done stay, so a rerun after freeing space resumes.
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

from probekit.core.activations import COMPONENTS
from probekit.core.atomic import atomic_write_json
from probekit.core.checks import DiskFullError, check_free_space, is_disk_full
from probekit.core.hashing import dir_sha256, sha256_problem
from probekit.models.registry import cache_dir

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
        hint = (f" (or point PROBEKIT_CACHE at a larger disk, or run with --no-store); the entry at {self.path} "
                f"is begun again on the next run")
        check_free_space(self.path, self.planned_bytes() + (1 << 20), "activation store", hint)
        with disk_full_error(f"activation store: the disk filled up while reserving {self.planned_bytes() >> 20} "
                             f"MB at {self.path}", hint, cleanup=self.wipe):   # the rerun begins the entry again
            atomic_write_json(self.path / "manifest.json", self.identity, fsync=True)
            shape = (self.n, self.d_model)
            for l in range(self.n_layers):
                for c in COMPONENTS:
                    preallocated_npy(self.path / array_name(l, c), np.float32, shape)
            preallocated_npy(self.path / "n_target_tokens.npy", np.int32, (self.n,))
            atomic_write_json(self.path / "progress.json", {"chunks": chunks, "done": []}, fsync=True)
        return set()

    def planned_bytes(self) -> int:
        """Bytes of the entry's arrays (n x d_model float32 per layer and component, plus token counts)."""
        return self.n_layers * len(COMPONENTS) * self.n * self.d_model * 4 + self.n * 4

    def open_writers(self) -> dict:
        w = {(l, c): np.load(self.path / array_name(l, c), mmap_mode="r+")
             for l in range(self.n_layers) for c in COMPONENTS}
        w["n_target_tokens"] = np.load(self.path / "n_target_tokens.npy", mmap_mode="r+")
        return w

    def mark_done(self, writers: dict, chunk_id: int) -> None:
        with disk_full_error(f"activation store: cannot record chunk {chunk_id} at {self.path}",
                             " and rerun: it resumes after the last chunk recorded"):
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
        sums = dir_sha256(self.path, "*.npy")
        with disk_full_error(f"activation store: cannot mark {self.path} complete",
                             " and rerun: every chunk is written, only the checksums are left"):
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
        bad = sha256_problem(self.path, sums) if checksums else None
        if bad:
            raise StoreCorruptError(f"{self.path / bad[0]}: checksum mismatch (the file changed after it was written)")

    def load(self, layer: int, component: str) -> np.ndarray:
        return np.load(self.path / array_name(layer, component), mmap_mode="r")

    def n_target_tokens(self) -> np.ndarray:
        return np.asarray(np.load(self.path / "n_target_tokens.npy"))


def reserve_blocks(path, size: int) -> None:
    """Create ``path`` (or keep it) with its first ``size`` bytes' blocks reserved on disk (``posix_fallocate``),
    so memory-mapped writes into it can never hit a full file system (SIGBUS, no message). Where the file
    system cannot reserve (no ``posix_fallocate``), the file is extended sparse, as before."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        if hasattr(os, "posix_fallocate") and size > 0:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):   # not supported here: sparse
                    raise
    finally:
        os.close(fd)


def preallocated_npy(path: Path, dtype, shape) -> np.memmap:
    """An .npy file of ``shape`` (zeros, like ``open_memmap``, which leaves the file sparse) whose data blocks
    are reserved (:func:`reserve_blocks`); returns it memory-mapped for writing."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    arr.flush()
    reserve_blocks(path, os.stat(path).st_size)
    return arr


@contextlib.contextmanager
def disk_full_error(what: str, hint: str = "", cleanup=None):
    """Turn a full disk (ENOSPC, EDQUOT, EIO, EFBIG) inside the block into a :class:`DiskFullError`:
    ``"<what> (<strerror>); free some space<hint>"``, after ``cleanup()`` freed what was reserved. Other
    errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, DiskFullError) or not is_disk_full(exc):
            raise
        if cleanup is not None:
            cleanup()
        raise DiskFullError(f"{what} ({exc.strerror}); free some space{hint}") from None


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
