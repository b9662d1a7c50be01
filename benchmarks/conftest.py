"""Session state of the claim benchmarks: one replication per model, verdicts collected for the report."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from probekit.core import expected as E
from probekit.core.atomic import atomic_write_parquet

_RUNS: dict[str, object] = {}          # model -> (Replication, measurements), a skip reason, or a load failure
_VERDICTS: list[pd.DataFrame] = []


class _Failed(str):
    """A model that failed to load with something other than 'unavailable': remembered for the session, so
    it is not loaded again for every claim (for a 70B that would be hours)."""


def causal_selected(config) -> bool:
    """Causal claims run only when asked for: ``--causal``, or ``causal`` in the ``-k`` / ``-m`` expression
    (``pytest benchmarks -k causal``); otherwise they are skipped with that reason (they cost ~40 forward
    passes per experiment and model, with the LM head)."""
    expr = f"{config.option.keyword or ''} {config.option.markexpr or ''}"
    return bool(config.getoption("--causal")) or ("causal" in expr and "not causal" not in expr)


def _run(model_name: str, config, study, causal: bool = False):
    """The model's replication, once per session; ``causal``: with the causal claims' runs (a replication
    without them is redone with them, from the warm store: the ordinary part is read back, not recomputed)."""
    run = _RUNS.get(model_name)
    if causal and isinstance(run, tuple) and run[0].causal is None:
        del _RUNS[model_name]
    if model_name not in _RUNS:
        from probekit.models.loading import ModelUnavailableError
        from probekit.pipeline import replicate
        from probekit.claims.verdicts import measure_run
        try:
            rep = replicate(model_name, study=study, log=lambda msg: print(msg, flush=True), causal=causal,
                            **getattr(config, "probekit_run_options", {}))
        except ModelUnavailableError as exc:
            _RUNS[model_name] = f"{model_name}: weights not available here. {exc}"
        except Exception as exc:                          # noqa: BLE001 - reported on every claim of the model
            _RUNS[model_name] = _Failed(f"{model_name}: the replication failed ({type(exc).__name__}: {exc}); "
                                        f"not retried in this session")
        else:
            meas = measure_run(rep)
            if config.getoption("--update-expected") and "embedded" in rep.markers:
                E.write_measured(meas, study.expected_dir)
            out = Path(config.getoption("--claims-out")) / rep.model
            rep.save(out)
            atomic_write_parquet(meas, out / "measurements.parquet")
            _RUNS[model_name] = (rep, meas)
    run = _RUNS[model_name]
    if isinstance(run, _Failed):
        pytest.fail(run)
    if isinstance(run, str):
        pytest.skip(run)
    return run


@pytest.fixture(scope="session")
def study(request):
    from probekit.studies import load_study
    return load_study(request.config.getoption("--study"))


@pytest.fixture
def run(model_name, request, study):
    """(Replication, measurements) for the parametrized model, computed once per session (with the causal
    runs when the claim under test is a causal one)."""
    claim_id = request.getfixturevalue("claim_id") if "claim_id" in request.fixturenames else None
    causal = claim_id is not None and getattr(study.claim(claim_id), "causal", None) is not None
    if causal and not causal_selected(request.config):
        pytest.skip(f"{claim_id} is a causal claim: run it with --causal or -k causal (about 40 extra forward "
                    f"passes per experiment)")
    return _run(model_name, request.config, study, causal=causal)


@pytest.fixture(scope="session")
def expected_table(study):
    return study.expected()


def record(verdicts: pd.DataFrame) -> None:
    _VERDICTS.append(verdicts)


def pytest_sessionfinish(session, exitstatus):
    if not _VERDICTS:
        return
    from probekit.report.render import write_claims_table
    out = Path(session.config.getoption("--claims-out"))
    allv = pd.concat(_VERDICTS, ignore_index=True)
    write_claims_table(allv, out)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Wall time of each model's replication in this session (cold = the store was empty)."""
    lines = []
    for name, run in _RUNS.items():
        if isinstance(run, str):
            continue
        rep, _ = run
        t = rep.timings
        ex = sum(v["extract_s"] for v in t.values() if isinstance(v, dict))
        pr = sum(v["probe_s"] for v in t.values() if isinstance(v, dict))
        lines.append(f"{rep.model}: total {t.get('total_s')} s (load {t.get('load_model_s')} s, "
                     f"extraction {ex:.1f} s, probes {pr:.1f} s)")
    if _VERDICTS:
        from probekit.report.render import answer_headline, claim_rows
        cr = claim_rows(pd.concat(_VERDICTS, ignore_index=True))
        terminalreporter.section("probekit answers")
        for basis, part in cr.groupby("basis", sort=False):
            terminalreporter.write_line(f"{basis}: {answer_headline(part)}")
    if lines:
        terminalreporter.section("probekit replication wall time")
        for line in lines:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"claims table: {config.getoption('--claims-out')}/claims.md")
