"""Stage metadata (``DataFrame.attrs``: the set's name, version, hash, pooling, labels) survives the path
stimuli -> experiment query -> extraction -> shuffled controls -> probe design, whether or not pandas
propagates ``attrs`` (it does not promise to: pandas-dev/pandas#52166)."""
from __future__ import annotations

import pandas as pd
import pytest

import probekit.stimuli.sets as stimuli_mod
from probekit.core.activations import carry_metadata
from probekit.probes.design import grid_columns
from probekit.stimuli.experiments import Experiment
from probekit.extraction.forward import extract
from probekit.pipeline import SHUFFLED_PREFIX, with_shuffled_controls
from probekit.models.testing import tiny_model


@pytest.fixture(params=["pandas propagates attrs", "pandas drops attrs"])
def pandas_attrs(request, monkeypatch):
    if request.param == "pandas drops attrs":
        def finalize(self, other, method=None, **kwargs):     # derived frames start with empty attrs
            return self
        monkeypatch.setattr(pd.core.generic.NDFrame, "__finalize__", finalize)
        derived = pd.DataFrame({"a": [1, 2]})
        derived.attrs["x"] = 1
        assert derived.query("a > 1").attrs == {}        # the patch does what it says
    return request.param


def test_metadata_survives_query_extraction_and_design(pandas_attrs):
    full = stimuli_mod.load("analogies")
    before = {k: full.attrs[k] for k in ("name", "version", "hash", "pooling")}
    exp = Experiment("cross", "analogies", "test", paper="-", query="invalid_kind != 'wrong_d'", primary=("valid",))

    stim = exp.stimuli()
    assert 0 < len(stim) < len(full)
    assert stim.attrs["name"] == "analogies[invalid_kind != 'wrong_d']"
    assert stim.attrs["pooling"] == before["pooling"]
    assert stim.attrs["hash"] == before["hash"] and stim.attrs["version"] == before["version"]
    assert stim.attrs["labels"] == full.attrs["labels"]
    stim.attrs["labels"]["probe_me"] = {"kind": "binary"}           # a deep copy: the loaded set is untouched
    assert "probe_me" not in stimuli_mod.load("analogies").attrs["labels"]
    del stim.attrs["labels"]["probe_me"]

    acts = extract(tiny_model("llama", n_layers=2, d_model=16), stim, store=False, progress=False)
    assert acts.pooling == before["pooling"]
    assert acts.meta["stimulus_set"] == stim.attrs["name"]
    assert acts.meta["stimulus_hash"] == before["hash"]
    assert acts.stimuli.attrs["labels"] == stim.attrs["labels"]

    primary = exp.primary_labels(acts.stimuli)
    shuffled = with_shuffled_controls(acts, primary).stimuli
    assert shuffled.attrs["name"] == stim.attrs["name"]
    assert list(shuffled.attrs["labels"]) == list(stim.attrs["labels"]) + [SHUFFLED_PREFIX + p for p in primary]
    assert SHUFFLED_PREFIX + primary[0] not in acts.stimuli.attrs["labels"]

    design = grid_columns(shuffled, n_permutations=2, n_control=1)
    assert set(design.specs) == set(shuffled.attrs["labels"])
    assert design.stimuli.attrs["name"] == stim.attrs["name"]
    assert design.specs[SHUFFLED_PREFIX + primary[0]].role == "control"


def test_carry_metadata_copies_and_updates():
    src = pd.DataFrame({"a": [1, 2, 3]})
    src.attrs = {"name": "s", "labels": {"a": {"kind": "binary"}}}
    out = carry_metadata(pd.DataFrame({"a": [3]}), src, name="s[a > 2]")
    assert out.attrs == {"name": "s[a > 2]", "labels": {"a": {"kind": "binary"}}}
    out.attrs["labels"]["a"]["kind"] = "continuous"
    assert src.attrs["labels"]["a"]["kind"] == "binary"
