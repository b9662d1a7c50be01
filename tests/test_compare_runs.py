"""benchmarks/perf/compare_runs.py: the streamed-vs-in-memory score comparison behind the README's 3B row."""
from __future__ import annotations

import json

import pandas as pd

from benchmarks.perf import compare_runs as CR


def _cache(root, shift=0.0, experiments=("items", "relations"), model="llama-3.2-3b", **meta):
    for i, exp in enumerate(experiments):
        d = root / "results" / f"{exp}{i:04d}"
        d.mkdir(parents=True)
        (d / "meta.json").write_text(json.dumps({"experiment": exp, "model_name": model, **meta}))
        pd.DataFrame({"label": ["a", "a"], "layer": [0, 1], "component": ["resid_pre"] * 2,
                      "metric": ["balanced_accuracy", "accuracy"], "value": [0.6 + shift, 0.7],
                      "p_value": [0.01, 0.02]}).to_parquet(d / "scores.parquet")
    return root


def test_identical_runs_pass_and_differences_are_measured(tmp_path, capsys):
    a = _cache(tmp_path / "a")
    assert CR.main([str(a), str(_cache(tmp_path / "b"))]) == 0
    assert CR.main([str(a), str(_cache(tmp_path / "c", shift=0.02))]) == 1
    assert "max |d balanced accuracy| = 0.02" in capsys.readouterr().out
    assert CR.main([str(a), str(_cache(tmp_path / "d", shift=0.005))]) == 0


def test_an_experiment_missing_from_b_fails(tmp_path):
    a = _cache(tmp_path / "a")
    assert CR.main([str(a), str(_cache(tmp_path / "b", experiments=("items",)))]) == 1


def test_other_models_in_the_cache_are_filtered(tmp_path):
    a = _cache(tmp_path / "a")
    _cache(tmp_path / "a2", model="other")
    for d in (tmp_path / "a2" / "results").iterdir():
        d.rename(tmp_path / "a" / "results" / f"other-{d.name}")
    assert CR.main([str(a), str(_cache(tmp_path / "b")), "--model", "llama-3.2-3b"]) == 0


def test_two_results_of_one_experiment_need_a_meta_filter(tmp_path):
    """A cache reused across a probe-code change holds one result per solver version for each experiment."""
    import pytest
    a = _cache(tmp_path / "a")
    for d in (a / "results").iterdir():
        m = json.loads((d / "meta.json").read_text())
        (d / "meta.json").write_text(json.dumps(dict(m, solver_version=3)))
        old = d.with_name(d.name + "-v2")
        old.mkdir()
        (old / "meta.json").write_text(json.dumps(dict(m, solver_version=2)))
        (old / "scores.parquet").write_bytes((d / "scores.parquet").read_bytes())
    b = _cache(tmp_path / "b", solver_version=3)
    with pytest.raises(SystemExit, match="two probe results"):
        CR.main([str(a), str(b)])
    assert CR.main([str(a), str(b), "--meta", "solver_version=3"]) == 0
