"""The old flat import paths (``probekit.solver``, ``probekit.store``, ...) for one release.

probekit 0.2 moved its 33 flat modules into stage subpackages (CHANGELOG.md). ``import probekit.solver``
still works: this meta-path finder answers the old dotted name with the module at its new home (the same
module object, so monkeypatching through either name patches both) and warns once per name with a
DeprecationWarning naming the new path. Old names that are now packages (``probekit.stimuli``,
``probekit.models``, ``probekit.extraction``, ``probekit.probes``, ``probekit.profiles``, ``probekit.report``)
need no alias: each package's ``__init__`` re-exports the old module's public names.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module -> its new home (both under ``probekit.``); removed in the release after 0.2.
MOVED = {
    "errors": "core.errors", "atomic": "core.atomic", "checks": "core.checks", "hashing": "core.hashing",
    "text": "core.text", "activations": "core.activations", "cost": "core.cost", "expected": "core.expected",
    "experiments": "stimuli.experiments",
    "registry": "models.registry", "placement": "models.placement", "checkpoint": "models.checkpoint",
    "weights": "models.weights", "adapters": "models.adapters", "llama3": "models.llama3",
    "testing": "models.testing",
    "streaming": "extraction.streaming", "store": "extraction.store", "interop": "extraction.interop",
    "design": "probes.design", "solver": "probes.solver", "stats": "probes.stats", "results": "probes.results",
    "transfer": "probes.transfer",
    "simulate": "profiles.simulate",
    "claim": "claims.claim", "calibration": "claims.calibration",
}


_REAL_SPECS: dict = {}     # alias name -> the moved module's own spec, between create_module and exec_module


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        pkg, _, old = fullname.partition(".")
        if pkg != "probekit" or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = f"probekit.{MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old path goes in the next release (CHANGELOG.md)",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        _REAL_SPECS[spec.name] = module.__spec__   # the import system overwrites it with the alias's spec next
        return module

    def exec_module(self, module):
        # the module at the new path is already executed; give it back its own spec (reload, pickling by
        # spec, tools that read __spec__.name must see probekit.<new path>, not the alias)
        module.__spec__ = _REAL_SPECS.pop(module.__spec__.name)


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())      # before any finder that could still see an old flat file
