"""The ``probekit`` command line: help texts, report --from a saved run, audit, models, unavailable models."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from probekit import cli
from probekit.models.loading import MODELS

SUBCOMMANDS = ["run", "report", "audit", "models", "expected", "calibrate"]


def test_python_m_probekit_help():
    r = subprocess.run([sys.executable, "-m", "probekit", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for sub in SUBCOMMANDS:
        assert sub in r.stdout


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: probekit " + sub in out
    # every option is documented: it appears in the help with a help text of its own
    parser = next(a for a in cli.build_parser()._actions if a.choices and sub in a.choices).choices[sub]
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, (sub, action.option_strings)
            assert action.option_strings[-1] in out


def test_unknown_experiment_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--experiments", "items,nope"])
    assert e.value.code == 2 and "nope" in capsys.readouterr().err


def test_models_lists_the_registry(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for alias in ("smollm2-135m", "gemma3-270m", "llama-3.2-3b", "llama-3.3-70b"):
        assert alias in out
    # one line per registry entry, each with its availability (none dropped, none listed twice)
    lines = [ln for ln in out.splitlines() if "available=" in ln]
    assert len(lines) == len(MODELS)
    for name in MODELS:
        assert sum(ln.split()[0] == name for ln in lines) == 1, name


def test_unavailable_model_exits_2_with_message(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PROBEKIT_CACHE=str(tmp_path / "cache"))
    env.pop("PROBEKIT_LLAMA_3_3_70B", None)
    env.pop("PROBEKIT_ALLOW_DOWNLOAD", None)
    r = subprocess.run([sys.executable, "-m", "probekit", "run", "--model", "llama-3.3-70b", "--out",
                        str(tmp_path / "results")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "llama-3.3-70b" in r.stderr.lower() and "not available" in r.stderr
    assert "PROBEKIT_LLAMA_3_3_70B" in r.stderr                  # says how to supply the weights


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, synthetic_replication):
    d = tmp_path_factory.mktemp("results") / "synth-10l"
    synthetic_replication.save(d)
    return d


def test_report_from_saved_run_and_audit(saved_run, tmp_path, capsys):
    out = tmp_path / "rebuilt"
    assert cli.main(["report", "--from", str(saved_run), "--out", str(out)]) == 0
    assert (out / "report.md").exists() and (out / "claims.md").exists()
    assert (out / "figures" / "synth-10l_overview.png").stat().st_size > 0
    printed = capsys.readouterr().out
    buried = [ln for ln in printed.splitlines() if "buried_decodable" in ln]
    assert buried, printed                                  # buried is missing from the synthetic run:
    assert all(ln.split()[0] in ("FAIL", "INCONCLUSIVE", "CONTRADICTED") for ln in buried), buried   # never a yes

    # audit over a results root with the rebuilt run in it
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(out, root / "synth-10l")
    assert cli.main(["audit", "--results", str(root)]) == 0
    md = (root / "audit.md").read_text()
    assert "Paper-normalised audit" in md and "synth-10l" in md
    v = pd.read_parquet(root / "audit_verdicts.parquet")
    assert set(v.model) == {"synth-10l"}


def test_report_from_a_directory_without_a_run(tmp_path, capsys):
    assert cli.main(["report", "--from", str(tmp_path)]) == 1
    assert "replication.json" in capsys.readouterr().err


def test_expected_write_paper(tmp_path):
    assert cli.main(["expected", "--write-paper", "--dir", str(tmp_path)]) == 0
    from probekit.core import expected as E
    from probekit.studies import load_study
    assert len(E.load(tmp_path)) == len(load_study("bogdan2025").paper_rows())


def test_calibrate_writes_the_table(tmp_path, capsys):
    rc = cli.main(["calibrate", "--out", str(tmp_path), "--draws", "20", "--layers", "18", "--claims",
                   "double_peak", "--workers", "1"])
    t = pd.read_parquet(tmp_path / "calibration.parquet")
    assert set(t.claim) == {"bogdan2025.double_peak"} and set(t.n_layers) == {18}
    assert {"null", "planted"} <= set(t.kind) and (t.n_draws == 20).all()
    assert rc == (1 if (t[t.kind == "null"].ci_low > 0.05).any() else 0)
    assert "Calibration" in (tmp_path / "calibration.md").read_text()


def test_calibrate_without_the_untrained_profiles_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """Was: the 'untrained' null cells skipped one by one and exit 0 (a CI gate on the table passed without
    them). Now one line before the simulation: the claim, the scenario, the file, how to make it, and the
    claims that can run without it."""
    import probekit.studies.bogdan2025.claims as BC
    from probekit.claims import calibration as Cal
    monkeypatch.setattr(BC, "UNTRAINED_FILE", tmp_path / "untrained_profiles.json")     # not there
    monkeypatch.setattr(Cal, "calibrate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("simulated")))
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        cli.main(["calibrate", "--out", str(out), "--draws", "20", "--layers", "18", "--workers", "1"])
    assert e.value.code == 2
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and "Traceback" not in cap.err, cap.err
    assert "bogdan2025.item_peak_early's scenario 'untrained" in cap.err and "untrained_profiles.json" in cap.err
    assert "record that input first (docs/statistics.md" in cap.err
    assert "leave the claim(s) out: --claims buried_decodable,shuffled_at_chance" in cap.err
    assert "calibrating" not in cap.out and not out.exists()


def test_calibrate_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:         # an argparse type now: refused while parsing
        cli.main(["calibrate", "--draws", "3"])
    assert e.value.code == 2
    assert "--draws" in capsys.readouterr().err


def test_end_of_run_summary_says_the_three_answers_and_regression_pass_fail():
    """Rows judged against the paper print their answer with power and MDE (never PASS/FAIL, which cannot
    tell 'contradicted' from 'underpowered'); regression rows keep PASS/FAIL."""
    import numpy as np

    from probekit.claims.claim import ANSWER_COLUMNS
    base = {"model": "m", "claim": "bogdan2025.analogies_deeper", "metric": "analogies_minus_relations.depth",
            "unit": "", "value": 0.16, "ci_low": 0.11, "ci_high": 0.2, "interval": "ci", "provenance": "x",
            "reason": "", **{c: np.nan for c in ANSWER_COLUMNS}}
    rows = [dict(base, basis="own", passed=False, reason="value out of its band", answer="regression"),
            dict(base, basis="paper-normalised", passed=True, answer="reproduced", power_at_paper=0.96, mde80=0.067),
            dict(base, basis="paper-normalised-b", passed=False, answer="inconclusive", power_at_paper=0.31,
                 mde80=0.2, answer_reason="neither rejected nor excluded"),
            dict(base, basis="paper-normalised-c", passed=False, answer="contradicted", power_at_paper=1.0,
                 mde80=0.07, answer_reason="far bound below the paper's size")]
    lines = "\n".join(cli._summary_lines(pd.DataFrame(rows)))
    assert "FAIL          own" in lines and "value out of its band" in lines
    assert "REPRODUCED    paper-normalised " in lines and "power at the paper's size 0.96, MDE 0.067" in lines
    assert "INCONCLUSIVE" in lines and "neither rejected nor excluded" in lines and "power at the paper's size 0.31" in lines
    assert "CONTRADICTED" in lines and "far bound below" in lines
    assert "PASS  " not in lines.replace("PASS          own", "")      # no answered row says PASS


def test_report_into_a_folder_a_run_is_writing_is_refused(saved_run, tmp_path, capsys):
    """`report --out D` takes the same per-folder lock as `run`: while another process holds D's lock the
    report is refused at once with who holds it, and nothing is written into D."""
    out = tmp_path / "busy"
    with cli._run_locks(out.parent, [out.name], "probekit run"):
        code = cli.main(["report", "--from", str(saved_run), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "is already writing" in err and "probekit run, pid" in err, err
    assert not (out / "report.md").exists()
    assert cli.main(["report", "--from", str(saved_run), "--out", str(out)]) == 0      # free again: works


def test_a_cuda_probe_backend_without_a_gpu_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import probekit.models.placement as placement
    import probekit.models.loading as loading
    monkeypatch.setattr(placement, "cuda_count", lambda: 0)
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code = cli.main(["run", "--probe-backend", "torch:cuda", "--experiments", "items", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--probe-backend" in err and "CUDA" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
