"""Root conftest: the model axis of the claim benchmarks.

* ``--model NAME_OR_PATH`` (repeatable) or ``PROBEKIT_MODEL=a,b`` adds models
  (hub ids, local directories, .gguf files) to the claim tests, marked ``newmodel``.
* ``--claims-out DIR`` (default ``results/claims``): where the verdicts, the
  audit of the paper's claims and the claims table are written at the end.
* ``--full``: the speed benchmarks of ``benchmarks/perf`` at the README's sizes
  (see ``benchmarks/perf/conftest.py``; they run only when asked for).
* ``--device`` / ``--dtype`` / ``--stream-layers`` (or ``PROBEKIT_DEVICE`` /
  ``PROBEKIT_DTYPE`` / ``PROBEKIT_STREAM_LAYERS``): where and how the models run,
  default ``auto`` (see :mod:`probekit.models.placement`).
* ``--update-expected``: rewrite the ``measured`` rows of ``expected/`` for the
  models that ran (the embedded references), then judge against them.
* ``--study ID_OR_DIR``: whose claims ``benchmarks/test_claims.py`` parametrizes
  (default ``bogdan2025``; a folder path runs a study that lives elsewhere).

Every registry model is a parameter with its markers (``smollm2``, ``gemma3``,
``embedded``, ``3b``, ``70b``), so ``pytest benchmarks -m 3b`` selects the
paper's small model; a model whose weights cannot be obtained is skipped with
the reason and the way to supply it (shown by ``-rs``).
"""
from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    g = parser.getgroup("probekit")
    g.addoption("--model", action="append", default=[], metavar="NAME_OR_PATH",
                help="add a model (hub id, local dir, .gguf) to the claim benchmarks; repeatable")
    g.addoption("--claims-out", default="results/claims", help="where verdicts and the claims table go")
    g.addoption("--update-expected", action="store_true",
                help="rewrite expected/measured.parquet rows of the models that ran")
    g.addoption("--study", default=None, metavar="ID_OR_DIR",
                help="the study whose claims are tested: a shipped id (default bogdan2025) or a study folder")
    # defined here, not in benchmarks/perf/conftest.py, so that `pytest --benchmark-only --full` parses too
    g.addoption("--full", action="store_true",
                help="speed benchmarks (benchmarks/perf): the sizes the README quotes instead of the quick mode")
    g.addoption("--causal", action="store_true",
                help="claim benchmarks: also run the causal claims (about 40 extra forward passes per causal "
                     "experiment and model; selected too by -k causal or -m causal)")
    g.addoption("--device", default=None, help="auto (default), cpu, cuda, cuda:N  [env PROBEKIT_DEVICE]")
    g.addoption("--dtype", default=None, help="auto (default), float32, bfloat16, float16  [env PROBEKIT_DTYPE]")
    g.addoption("--stream-layers", default=None, nargs="?", const="1", metavar="auto|1|0",
                help="layer-streamed extraction: auto (default: when the model does not fit), 1 forces, "
                     "0 forbids  [env PROBEKIT_STREAM_LAYERS]")


def run_options(config) -> dict:
    """device / dtype / stream_layers for replicate(): command line, else PROBEKIT_* environment, else auto."""
    def pick(opt, env):
        v = config.getoption(opt)
        return v if v is not None else (os.environ.get(env) or "auto")
    stream = pick("--stream-layers", "PROBEKIT_STREAM_LAYERS").lower()
    table = {"auto": "auto", "1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if stream not in table:
        raise pytest.UsageError(f"--stream-layers / PROBEKIT_STREAM_LAYERS: {stream!r}; use auto, 1 or 0 "
                                f"(a bare --stream-layers must come after the test paths)")
    return {"device": pick("--device", "PROBEKIT_DEVICE"), "dtype": pick("--dtype", "PROBEKIT_DTYPE"),
            "stream_layers": table[stream]}


def pytest_configure(config):
    config.probekit_run_options = run_options(config)      # read by benchmarks/conftest.py


def extra_models(config) -> list[str]:
    env = [m.strip() for m in os.environ.get("PROBEKIT_MODEL", "").split(",") if m.strip()]
    return list(dict.fromkeys(config.getoption("--model") + env))


def pytest_generate_tests(metafunc):
    if "claim_id" in metafunc.fixturenames:
        from probekit.studies import load_study
        study = load_study(metafunc.config.getoption("--study"))
        metafunc.parametrize("claim_id", [pytest.param(c.id, id=c.id, marks=[pytest.mark.causal] if
                                                       getattr(c, "causal", None) is not None else [])
                                          for c in study.claims])
    if "model_name" not in metafunc.fixturenames:
        return
    from probekit.models.loading import MODELS
    params = []
    extra = extra_models(metafunc.config)
    for name, spec in MODELS.items():
        # a registry alias given with --model is one of "the models added" too: -m newmodel selects it
        marks = [getattr(pytest.mark, m) for m in spec.markers] + ([pytest.mark.newmodel] if name in extra else [])
        params.append(pytest.param(name, marks=marks, id=name))
    for name in extra:
        if name in MODELS:
            continue
        params.append(pytest.param(name, marks=[pytest.mark.newmodel], id=name))
    metafunc.parametrize("model_name", params)


def pytest_collection_finish(session):
    """A marker expression that selects no claim test is said, with the markers there are (was: exit 5 and
    no word on what to type instead)."""
    expr = session.config.option.markexpr
    if session.items or not expr or not any("claim" in str(a) or "benchmarks" in str(a) for a in session.config.args):
        return
    from probekit.models.loading import MODELS
    known = "; ".join(f"{name}: {', '.join(spec.markers)}" for name, spec in MODELS.items())
    session.config.get_terminal_writer().line(
        f"probekit: -m {expr!r} selects no test. Registry models and their markers: {known}; models given "
        f"with --model (or PROBEKIT_MODEL) are marked newmodel", red=True)
