"""Session state of the claim benchmarks: one replication per model, verdicts collected for the report."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from probekit import claims as C
from probekit import expected as E

_RUNS: dict[str, object] = {}          # model -> (Replication, measurements) or the skip reason
_VERDICTS: list[pd.DataFrame] = []


def _run(model_name: str, config):
    if model_name not in _RUNS:
        from probekit.models import ModelUnavailableError
        from probekit.pipeline import replicate
        try:
            rep = replicate(model_name, log=lambda msg: print(msg, flush=True))
        except ModelUnavailableError as exc:
            _RUNS[model_name] = f"{model_name}: weights not available here. {exc}"
        else:
            meas = C.measure(rep)
            if config.getoption("--update-expected") and rep.model in ("smollm2-135m", "gemma3-270m"):
                E.write_measured(meas)
            out = Path(config.getoption("--claims-out")) / rep.model
            rep.save(out)
            meas.to_parquet(out / "measurements.parquet", index=False)
            _RUNS[model_name] = (rep, meas)
    run = _RUNS[model_name]
    if isinstance(run, str):
        pytest.skip(run)
    return run


@pytest.fixture
def run(model_name, request):
    """(Replication, measurements) for the parametrized model, computed once per session."""
    return _run(model_name, request.config)


@pytest.fixture(scope="session")
def expected_table():
    return E.load()


def record(verdicts: pd.DataFrame) -> None:
    _VERDICTS.append(verdicts)


def pytest_sessionfinish(session, exitstatus):
    if not _VERDICTS:
        return
    from probekit.report import write_claims_table
    out = Path(session.config.getoption("--claims-out"))
    allv = pd.concat(_VERDICTS, ignore_index=True)
    write_claims_table(allv, out)
