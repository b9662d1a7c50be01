"""Shared fixtures for the unit tests.

``smollm2`` / ``smollm2_acts`` use the real embedded SmolLM2-135M (installed by
``./pk`` and by CI). They skip, with the way to install it, only when its
package is missing.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2():
    from probekit.models import ModelUnavailableError, load_model
    try:
        return load_model("smollm2-135m")
    except ModelUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_acts(smollm2, tmp_path_factory):
    """SmolLM2-135M activations on the `items` stimulus set (352 short texts, ~3 s)."""
    import probekit
    import probekit.stimuli as S
    return probekit.extract(smollm2, S.load("items"), batch_size=64, store=True)


# No per-example deadlines: timing belongs in benchmarks/perf, and a first example
# that imports scipy on a busy 2-core machine must not fail a property test.
from hypothesis import settings as _hsettings  # noqa: E402

# derandomize: the same examples on every run, so CI cannot fail on a draw a developer never saw
_hsettings.register_profile("probekit", deadline=None, derandomize=True)
_hsettings.load_profile("probekit")
