"""probekit: where do language models represent what, layer by layer?

Data flows one way: stimuli -> extraction (activation store) -> probes ->
layer profiles -> claims / reports. Each stage is a module:

* :mod:`probekit.stimuli`     stimulus sets and the bring-your-own loader
* :mod:`probekit.models`      model registry and loading (embedded GGUF models, hub, local)
* :mod:`probekit.extraction`  hooked forward passes, pooling  -> :class:`ActivationSet`
* :mod:`probekit.store`       the on-disk activation store
* :mod:`probekit.probes`      per-layer probes with group cross-validation (``probe_grid``), over
  :mod:`probekit.design` (labels, folds, columns), :mod:`probekit.solver` (Grams, LOO ridge)
  and :mod:`probekit.results` (``ProbeResults``, persistence)
* :mod:`probekit.stats`       permutation tests, bootstraps, control tasks
* :mod:`probekit.profiles`    layer-profile metrics (peaks, anti-persistence)
* :mod:`probekit.claim`       a claim: its measurement and decision rule, judged against ``expected/``
  (a study's claims live in its folder, :mod:`probekit.studies`)
* :mod:`probekit.report`      figures, claims tables, audit; :mod:`probekit.cli` the command line

The README's "Library" section draws the flow; ``tests/test_imports.py`` checks it on the imports.
"""
__version__ = "0.1.0"

from .activations import COMPONENTS, ActivationSet  # noqa: E402
from .models import load_model  # noqa: E402


def extract(*args, **kwargs):
    """:func:`probekit.extraction.extract`."""
    from .extraction import extract as _extract   # cycle: extraction imports __version__ from this package
    return _extract(*args, **kwargs)


__all__ = ["__version__", "COMPONENTS", "ActivationSet", "load_model", "extract"]
