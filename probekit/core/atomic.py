"""Atomic writes: a crash leaves the old file (or directory) or the new one, never half of one.

The cache and results writers of probekit go through these: the activation store's
manifests, the model cache, probe-result caches and saved replications (each written into
an :func:`atomic_directory`), expected tables, stimulus sets (``stimuli.save``: the data,
then its sidecar), reports and figures. ``ProbeResults.save`` writes plain files into the
directory it is given; it is atomic only inside such a directory, as the pipeline calls it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_file(path, write: Callable[[str], None], fsync: bool = False) -> Path:
    """Call ``write(tmp_path)``, then move the file onto ``path`` (same directory, so the move is atomic).

    ``write`` may raise (e.g. a checksum mismatch): the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())      # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str, fsync: bool = False) -> Path:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_file(path, write, fsync)


def atomic_write_json(path, obj, fsync: bool = False) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True), fsync)


def atomic_write_parquet(df, path) -> Path:
    return atomic_file(path, lambda tmp: df.to_parquet(tmp, index=False))


@contextlib.contextmanager
def atomic_directory(target, keep: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; on success it replaces ``target``.

    ``keep(name)``: entries of an existing ``target`` to carry over into the new
    one (e.g. figures next to saved results). On an exception the temporary
    directory is removed and ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        if keep is not None and target.exists():
            for p in target.iterdir():
                if keep(p.name):
                    (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp / p.name)
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
