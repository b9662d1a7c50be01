"""Argument and filesystem checks shared by the library and the command line.

Every public entry point (``extract``, ``probe_grid``, ``replicate``, ``probekit run``)
checks its counts and paths before any work starts, so a bad argument is refused
with a specific message instead of producing silently wrong numbers or a
half-written cache.
"""
from __future__ import annotations

import argparse
import errno
import numbers
import os
import shutil
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


def count_type(name: str, minimum: int, maximum: int | None = None, *, or_zero: bool = False):
    """argparse type: an integer >= ``minimum`` (and <= ``maximum``; ``or_zero``: 0 allowed too, meaning
    "none"). A bad value is a usage error: exit 2 before any work."""
    want = f"0 or an integer >= {minimum}" if or_zero else f"an integer >= {minimum}"
    if maximum is not None:
        want += f" and <= {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {want}, got {text!r}") from None
        if (value < minimum and not (or_zero and value == 0)) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{name} must be {want}, got {value}")
        return value
    parse.__name__ = want
    return parse


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


# one path component: most file systems allow 255 bytes
NAME_MAX = 255


def check_name_length(path, what: str) -> None:
    """Refuse a path with a component longer than the file system allows, naming it (was: ``OSError: File
    name too long`` at the first write, after all the work)."""
    for part in Path(path).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise PathError(f"{what}: the name {part[:40]!r}... is {len(os.fsencode(part))} bytes, more than the "
                            f"{NAME_MAX} a file name may have; choose a shorter path")


def free_bytes(path) -> int | None:
    """Free bytes (for an unprivileged user) on the file system of ``path`` or its first existing parent."""
    p = Path(path).expanduser().absolute()
    existing = next((q for q in [p, *p.parents] if q.exists()), None)
    try:
        return shutil.disk_usage(existing).free if existing is not None else None
    except OSError:
        return None


def check_free_space(path, need: int, what: str, hint: str = "") -> None:
    """:class:`DiskFullError` unless the file system of ``path`` has ``need`` bytes free."""
    free = free_bytes(path)
    if free is not None and free < need:
        raise DiskFullError(f"{what}: {path} needs about {_mb(need)} and its file system has {_mb(free)} free; "
                            f"free some space{hint}")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


class DiskFullError(OSError):
    """The disk filled up (or would): says where, how much was needed, and that a rerun resumes."""

    def __init__(self, msg: str):
        super().__init__(errno.ENOSPC, msg)

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(exc: BaseException) -> bool:
    """An OSError meaning the disk is full or failing (ENOSPC, EDQUOT, EIO, EFBIG)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG)


def writable(path) -> bool:
    """Can files be created in the directory ``path`` (or its first existing parent)?"""
    p = Path(path).absolute()
    existing = next((q for q in [p, *p.parents] if q.exists()), None)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


# the probe grid's settings for a replication (probekit.pipeline); here so that the command line's
# --help can show them without importing the probes
#: Progress lines (extraction, probe grid) start once a stage has run this long (seconds), then come every
#: PROGRESS_EVERY_S.
PROGRESS_AFTER_S = 3.0
PROGRESS_EVERY_S = 10.0

DEFAULT_PROBE = dict(n_splits=6, n_permutations=100, n_bootstrap=1000, control_task=True, seed=0)


def check_probe_kw(probe_kw: dict | None) -> dict:
    """The probe settings with their counts checked (n_splits >= 2, permutations/bootstrap >= 0)."""
    kw = dict(probe_kw or {})
    for name, minimum in (("n_splits", 2), ("n_permutations", 0), ("n_bootstrap", 0), ("n_control", 1)):
        if name in kw:
            kw[name] = count(kw[name], name, minimum)
    return kw


#: Pooled activations above this magnitude (float32 terms) are refused at the first batch: no working model
#: comes near it (the largest "massive activations" of real LMs are ~1e4), while a weight scaled by mistake
#: (e.g. an ``o_proj`` x 1e30) gives ~1e29 -- finite, so only the probes refused it, after the whole extraction.
MAX_ACTIVATION = 1e15


class ActivationRangeError(ValueError):
    """Activations no working model produces (beyond :data:`MAX_ACTIVATION`): names where and what to do."""


def check_activation_range(out: dict, rows, model_name: str, describe=lambda i: f"row {i}: ",
                           limit: float = MAX_ACTIVATION) -> None:
    """Refuse a batch's pooled activations (``{(layer, component): tensor [batch, d_model]}``, in the order the
    forward pass made them) whose magnitude exceeds ``limit``, naming the first layer and component, the
    stimulus (``describe(row)``) and the value. Finite values only are judged (NaN/inf have their own check)."""
    import torch
    if not out:
        return
    peaks = [torch.nan_to_num(t.detach().float().abs(), nan=0.0, posinf=0.0).amax(dim=1) for t in out.values()]
    if not bool(torch.stack([p.max() for p in peaks]).max() > limit):     # one device sync per batch
        return
    for ((layer, comp), t), big in zip(out.items(), peaks):
        if bool((big > limit).any()):
            b = int((big > limit).nonzero()[0, 0])
            part = {"attn_out": f"layer {layer}'s attention (e.g. its o_proj)", "mlp_out": f"layer {layer}'s MLP",
                    "resid_pre": f"the layers before {layer} or the embeddings"}.get(comp, f"layer {layer}")
            raise ActivationRangeError(
                f"model {model_name}: activations of magnitude {float(big[b]):.3g} at layer {layer} {comp} for "
                f"{describe(rows[b])}more than {limit:.0e}, which no working model produces: the weights of "
                f"{part} are scaled or corrupt (check torch.abs(p).max() of each parameter); fix or re-download "
                f"the checkpoint")
