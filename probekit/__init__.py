"""probekit: where do language models represent what, layer by layer?

Data flows one way, and each stage is a subpackage (``ls probekit``):

* :mod:`probekit.core`        the foundation: errors, atomic writes, checks, hashing, ``ActivationSet``, expected rows
* :mod:`probekit.stimuli`     stimulus sets and experiments (a set + a query)
* :mod:`probekit.models`      registry and loading (embedded GGUF models, hub, local), placement, weights
* :mod:`probekit.extraction`  hooked forward passes, pooling, streaming, the on-disk activation store
* :mod:`probekit.probes`      per-layer probes with group cross-validation (``probe_grid``), solver, stats
* :mod:`probekit.profiles`    layer-profile metrics (peaks, anti-persistence), simulated profiles
* :mod:`probekit.claims`      a claim: its measurement and decision rule, judged against expected rows; calibration
* :mod:`probekit.report`      figures, claims tables, audit
* :mod:`probekit.studies`     the studies (``bogdan2025``: its claims, experiments, stimuli and expected rows)
* :mod:`probekit.pipeline` runs a replication; :mod:`probekit.cli` the command line

docs/architecture.md draws the flow; ``tests/test_imports.py`` checks it on the imports.
"""
from probekit.core.version import __version__
from probekit import _compat

_compat.install()   # the old flat module paths, for one release (CHANGELOG.md)

from probekit.core.activations import COMPONENTS, ActivationSet  # noqa: E402
from probekit.models import load_model  # noqa: E402
from probekit.extraction.forward import extract  # noqa: E402


__all__ = ["__version__", "COMPONENTS", "ActivationSet", "load_model", "extract"]
