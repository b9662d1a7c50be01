"""A second study (tests/toystudy: two toy claims, a toy stimulus set) goes through pytest, the CLI and the
report with no edit to the core: the study folder is the unit of a paper."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from probekit.studies import StudyError, load_study
from probekit.models.testing import tiny_model

TOY = Path(__file__).resolve().parent / "toystudy"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinyllama")
    m = tiny_model("llama", n_layers=4, seed=3)
    m.model.save_pretrained(d)
    m.tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return dict(os.environ, PROBEKIT_CACHE=str(tmp_path_factory.mktemp("cache")), HF_HUB_OFFLINE="1")


def test_the_toy_study_loads_by_path_and_unknown_ones_are_refused(tmp_path):
    s = load_study(str(TOY))
    assert s.id == "toy" and [c.id for c in s.claims] == ["toy.colour_decodable", "toy.control_at_chance"]
    assert set(s.expected().claim) == {"toy.colour_decodable", "toy.control_at_chance"}
    with pytest.raises(StudyError, match="not a shipped study"):
        load_study(str(tmp_path / "nowhere"))


def test_toy_study_through_the_cli_and_report(checkpoint, env, tmp_path):
    out = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "probekit", "run", "--study", str(TOY), "--model", str(checkpoint),
                        "--out", str(out), "--permutations", "20", "--bootstrap", "200"],
                       capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    from probekit.cli import results_folder
    run = out / results_folder(str(checkpoint), checkpoint.name)       # a local checkpoint: name + path hash
    meta = json.loads((run / "replication.json").read_text())         # issue 24: the folder is written down
    assert meta["folder"] == run.name and str(checkpoint.resolve()) in meta["source"]
    v = pd.read_parquet(run / "verdicts.parquet")
    assert set(v.claim) == {"toy.colour_decodable", "toy.control_at_chance"}
    assert set(v.basis) == {"paper-normalised"}
    assert "Colour warmth is decodable" in (run / "claims.md").read_text()
    assert "study `toy`" in (run / "report.md").read_text()
    r = subprocess.run([sys.executable, "-m", "probekit", "audit", "--results", str(out)], capture_output=True,
                       text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "toy.control_at_chance" in (out / "audit.md").read_text()


def test_toy_study_through_pytest(checkpoint, env, tmp_path):
    r = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_claims.py", "--study", str(TOY),
                        "--model", str(checkpoint), "-m", "newmodel", "--claims-out", str(tmp_path / "claims"),
                        "-p", "no:cacheprovider", "-q", "-rA"],
                       capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-2000:]     # verdicts, not errors
    assert (tmp_path / "claims" / "claims.md").exists()
    # each claim's pytest outcome is its verdict, judged again here from the saved run (not read from pytest)
    from probekit.claims.verdicts import all_verdicts, measure_run
    from probekit.pipeline import Replication
    (saved,) = [d for d in (tmp_path / "claims").iterdir() if d.is_dir()]
    v = all_verdicts(measure_run(Replication.load(saved)), load_study(str(TOY)))
    passed = v.groupby("claim").passed.all()
    assert set(passed.index) == {"toy.colour_decodable", "toy.control_at_chance"}
    assert passed["toy.control_at_chance"], v          # a shuffled label is at chance, on any model
    for cid, ok in passed.items():
        line = f"{'PASSED' if ok else 'FAILED'} benchmarks/test_claims.py::test_claim[{cid}-{checkpoint}]"
        assert line in r.stdout, (line, r.stdout[-3000:])
    assert r.returncode == (0 if passed.all() else 1)
    written = pd.read_parquet(tmp_path / "claims" / "verdicts.parquet").groupby("claim").passed.all()
    assert written.equals(passed)


def test_toy_study_calibrates():
    from probekit.claims import calibration as Cal
    t = Cal.calibrate(load_study(str(TOY)), n_draws=60, depths=(8,))
    assert set(t.claim) == {"toy.colour_decodable", "toy.control_at_chance"}
    assert t[t.scenario == "planted"].rate.iloc[0] > 0.8
