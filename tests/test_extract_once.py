"""Each stimulus set goes through the model once per replication, and experiments that query one set
read the rows of its single store entry; cells are fitted in threads with identical results."""
import dataclasses

import numpy as np
import pytest

from probekit import pipeline
from probekit.probes.grid import probe_grid
from probekit.studies import load_study
from probekit.models.testing import make_synthetic_acts, tiny_model

SHARED = ("analogies", "analogies_wrong_d")          # two queries of the one `analogies` set


def _count_rows(model):
    """Wrap the base model's forward pass; returns the list of batch sizes it saw."""
    seen = []
    inner = model.model.model if hasattr(model.model, "model") else model.model
    forward = inner.forward

    def counted(*a, **kw):
        ids = kw.get("input_ids", a[0] if a else None)
        seen.append(int(ids.shape[0]))
        return forward(*a, **kw)
    inner.forward = counted
    return seen


@pytest.fixture(scope="module")
def study():
    s = load_study(None)
    return dataclasses.replace(s, transfers=())


def test_a_set_shared_by_two_experiments_is_extracted_once(study, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE", str(tmp_path))
    model = tiny_model("llama", n_layers=2)
    seen = _count_rows(model)
    whole = study.experiments["analogies"].stimulus_frame()
    parts = [study.experiments[n].stimuli() for n in SHARED]
    assert sum(map(len, parts)) > len(whole)                 # the two queries overlap
    probe_kw = dict(n_permutations=0, n_bootstrap=0, control_task=False)
    rep = pipeline.replicate(model, list(SHARED), study=study, store=True, probe_kw=probe_kw, log=None)
    assert sum(seen) == len(whole)                           # every text of the set once, none twice
    for name, part in zip(SHARED, parts):
        got = rep.results[name].predictions["valid"]
        assert len(got.rows) == len(part)
    # a warm rerun touches the model for nothing
    seen.clear()
    pipeline.replicate(model, list(SHARED), study=study, store=True, probe_kw=probe_kw, log=None)
    assert seen == []


def test_an_experiments_rows_of_the_whole_set_equal_its_own_extraction(study):
    import probekit
    model = tiny_model("llama", n_layers=2)
    exp = study.experiments["analogies_wrong_d"]
    whole = probekit.extract(model, exp.stimulus_frame())
    own = probekit.extract(model, exp.stimuli())
    taken = exp.activations(whole)
    assert list(taken.stimuli.text) == list(own.stimuli.text)
    assert (taken.stimuli.n_target_tokens.to_numpy() == own.stimuli.n_target_tokens.to_numpy()).all()
    assert taken.stimuli.attrs["name"] == own.stimuli.attrs["name"]
    for layer in range(model.n_layers):
        for comp in own.components:
            np.testing.assert_allclose(taken.get(layer, comp), own.get(layer, comp), rtol=1e-5, atol=1e-6)


def test_cells_in_threads_give_identical_results():
    acts = make_synthetic_acts(n_groups=24, per_group=5, d=48, n_layers=4, seed=2)
    kw = dict(n_permutations=20, n_bootstrap=50, n_control=2, seed=1)
    one = probe_grid(acts, n_jobs=1, **kw).scores
    three = probe_grid(acts, n_jobs=3, **kw).scores
    assert one.equals(three)


def test_the_grid_reports_progress_when_asked_and_is_silent_when_not(capsys):
    acts = make_synthetic_acts(n_groups=12, per_group=4, d=16, n_layers=3, seed=0)
    kw = dict(n_permutations=0, n_bootstrap=0, control_task=False)
    probe_grid(acts, progress=True, **kw)
    err = capsys.readouterr().err
    assert "cells (layer" in err and f"{acts.n_layers * len(acts.components)} cells done" in err
    probe_grid(acts, progress=False, **kw)
    assert capsys.readouterr().err == ""
