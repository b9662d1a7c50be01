"""Shared fixtures for the unit tests.

``smollm2`` / ``smollm2_acts`` use the real embedded SmolLM2-135M (installed by
``./pk`` and by CI). They skip, with the way to install it, only when its
package is missing.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2():
    from probekit.models.loading import ModelUnavailableError, load_model
    try:
        return load_model("smollm2-135m")
    except ModelUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_acts(smollm2, tmp_path_factory):
    """SmolLM2-135M activations on the `items` stimulus set (352 short texts, ~3 s)."""
    import probekit
    import probekit.stimuli.sets as S
    return probekit.extract(smollm2, S.load("items"), batch_size=64, store=True)


# synthetic experiments: planted peak layer and the label that plays the experiment's primary label
SYNTH = {"items": (2, None), "relations": (5, "related"), "analogies": (6, "valid")}


def make_replication(model: str = "synth-10l", n_layers: int = 10, seed: int = 0):
    """items / relations / analogies with planted peaks at layers 2 / 5 / 6 of 10 (10 layers: the
    anti-persistence measurement needs >= 5 layers in the back half). ~4 s."""
    import dataclasses

    import numpy as np

    from probekit.pipeline import Replication, with_shuffled_controls
    from probekit.probes.grid import make_synthetic_acts, probe_grid

    rep = Replication(model, n_layers, 24, ("synthetic",), f"synthetic:{seed}", timings={"load_model_s": 0.0})
    for i, (exp, (peak, name)) in enumerate(SYNTH.items()):
        signal = 1.2 * np.exp(-0.5 * (np.arange(n_layers) - peak) ** 2)
        acts = make_synthetic_acts(n_groups=20, per_group=6, d=24, n_layers=n_layers, n_binary=2, n_continuous=0,
                                   signal=signal, seed=seed + i)
        primary = ["bin0", "bin1"]
        if name:
            labels = dict(acts.stimuli.attrs["labels"])
            labels[name] = labels.pop("bin0")
            stim = acts.stimuli.rename(columns={"bin0": name})
            stim.attrs = dict(acts.stimuli.attrs, labels=labels)
            acts = dataclasses.replace(acts, stimuli=stim)
            primary = [name]
        res = probe_grid(with_shuffled_controls(acts, primary), n_permutations=20, n_bootstrap=100, n_splits=3,
                          seed=seed)
        res.meta.update(primary=primary, experiment=exp)
        rep.results[exp] = res
    return rep


@pytest.fixture(scope="session")
def synthetic_replication():
    """One synthetic Replication per session (test_report, test_cli, test_reliability; read-only use)."""
    return make_replication()


# No per-example deadlines: timing belongs in benchmarks/perf, and a first example
# that imports scipy on a busy 2-core machine must not fail a property test.
from hypothesis import settings as _hsettings  # noqa: E402

# derandomize: the same examples on every run, so CI cannot fail on a draw a developer never saw
_hsettings.register_profile("probekit", deadline=None, derandomize=True)
_hsettings.load_profile("probekit")
