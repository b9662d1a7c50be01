"""Argument and filesystem checks shared by the library and the command line.

Every public entry point (``extract``, ``probe_grid``, ``replicate``, ``probekit run``)
checks its counts and paths before any work starts, so a bad argument is refused
with a specific message instead of producing silently wrong numbers or a
half-written cache.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path


class ArgumentError(ValueError):
    """A bad argument: names the argument, the value and the accepted range."""


class PathError(OSError):
    """A path that cannot be used as a directory (a file in the way, or not writable)."""


def count(value, name: str, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``; bools, floats with a fraction and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and not isinstance(value, bool):
            value = int(value)
        else:
            raise ArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ArgumentError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def blocking_file(path) -> Path | None:
    """The first existing non-directory among ``path`` and its parents (what blocks a mkdir), else None."""
    p = Path(path).expanduser().absolute()
    for q in [p, *p.parents]:
        if q.exists() or q.is_symlink():
            return None if q.is_dir() else q
    return None


def usable_dir(path, what: str, *, write: bool = True) -> Path:
    """Check that ``path`` is (or can be created as) a directory, writable if ``write``.

    Raises :class:`PathError` naming ``what`` (e.g. "--out", "the cache") and the blocking file."""
    p = Path(path).expanduser()
    block = blocking_file(p)
    if block is not None:
        where = "" if block == p.absolute() else f" (a parent of {p})"
        raise PathError(f"{what}: {block} is a file, not a directory{where}; remove or rename it, "
                        f"or choose another path")
    if write:
        existing = next(q for q in [p.absolute(), *p.absolute().parents] if q.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PathError(f"{what}: {existing} is not writable; choose another path")
    return p


def writable(path) -> bool:
    """Can files be created in the directory ``path`` (or its first existing parent)?"""
    p = Path(path).absolute()
    existing = next((q for q in [p, *p.parents] if q.exists()), None)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


# the probe grid's settings for a replication (probekit.pipeline); here so that the command line's
# --help can show them without importing the probes
DEFAULT_PROBE = dict(n_splits=6, n_permutations=100, n_bootstrap=1000, control_task=True, seed=0)


def check_probe_kw(probe_kw: dict | None) -> dict:
    """The probe settings with their counts checked (n_splits >= 2, permutations/bootstrap >= 0)."""
    kw = dict(probe_kw or {})
    for name, minimum in (("n_splits", 2), ("n_permutations", 0), ("n_bootstrap", 0), ("n_control", 1)):
        if name in kw:
            kw[name] = count(kw[name], name, minimum)
    return kw
