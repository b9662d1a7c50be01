"""The old flat import paths (probekit._compat): each one is the moved module itself, warns once with its
new path, and leaves the module's own identity (``__spec__``) alone. Run in a fresh interpreter, since the
warnings and sys.modules are per process."""
from __future__ import annotations

import subprocess
import sys

from probekit._compat import MOVED

CODE = r"""
import importlib, warnings
import probekit
from probekit._compat import MOVED
bad = []
for old, new in MOVED.items():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = importlib.import_module(f"probekit.{old}")
    b = importlib.import_module(f"probekit.{new}")
    if a is not b:
        bad.append(f"{old}: another module object than probekit.{new}")
    if b.__spec__.name != f"probekit.{new}":
        bad.append(f"{old}: probekit.{new}.__spec__.name became {b.__spec__.name!r}")
    if not any(issubclass(x.category, DeprecationWarning) and f"probekit.{new}" in str(x.message) for x in w):
        bad.append(f"{old}: no DeprecationWarning naming probekit.{new}")
importlib.reload(importlib.import_module("probekit.probes.solver"))
print("BAD" if bad else "OK", *bad, sep="\n")
"""


def test_every_old_path_is_the_moved_module_warns_and_keeps_its_spec():
    assert len(MOVED) >= 20
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "OK", out.stdout
