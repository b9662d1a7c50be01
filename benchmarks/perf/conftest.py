"""Speed benchmarks (pytest-benchmark): collected only when asked for.

``./pk test`` is plain ``pytest`` over ``testpaths = tests benchmarks``, which CI
runs; timing runs there would cost minutes and prove nothing. So the files here
are collected only when the run asks for benchmarks:

* a path inside ``benchmarks/perf`` is on the command line
  (``pytest benchmarks/perf``, ``pytest benchmarks/perf/bench_probes.py::...``), or
* ``--benchmark-only`` or ``--benchmark-enable`` is given.

Otherwise every file here is ignored at collection (``pytest benchmarks
--collect-only -q`` lists none of them; ``tests/test_perf_harness.py`` checks).

Modes: quick by default (the embedded models, small sizes: a few minutes on a
2-core CPU); ``--full`` (defined in the root conftest) runs the sizes the
README's Performance section quotes. ``--model NAME`` / ``PROBEKIT_MODEL``
(root conftest) replaces the default model (``smollm2-135m``) of the
model-dependent benchmarks.

Torch runs on ``PROBEKIT_BENCH_THREADS`` threads (default 1, 0 = torch's
default; see ``harness.bench_threads``), recorded in the saved machine info.

Every benchmark puts in ``benchmark.extra_info``: ``ratio`` (its baseline's time
over its own, both measured in the same run; > 1 = faster than the baseline),
``ratio_meaning``, and throughput / peak memory where they apply.

Test-only hook: ``PROBEKIT_BENCH_SLOWDOWN=F`` makes every timed call sleep ``F``
times its own duration afterwards (0.5 = 50 % slower). It exists to prove that
``--benchmark-compare-fail`` catches a regression; never set it otherwise.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .harness import apply_threads, bench_threads, plant_slowdown, slowdown_factor

PERF_DIR = Path(__file__).resolve().parent
DEFAULT_MODELS = ["smollm2-135m"]


def _asks_for_perf(config) -> bool:
    if config.getoption("--benchmark-only", False) or config.getoption("--benchmark-enable", False):
        return True
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        p = Path(base, str(arg).split("::")[0]).resolve()
        if p == PERF_DIR or PERF_DIR in p.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path).resolve()
    if (path == PERF_DIR or PERF_DIR in path.parents) and not _asks_for_perf(config):
        return True
    return None


def pytest_collect_file(file_path, parent):
    """``bench_*.py`` files here are test modules too (the default pattern is ``test_*.py``)."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def bench_models(config) -> list[str]:
    env = [m.strip() for m in os.environ.get("PROBEKIT_MODEL", "").split(",") if m.strip()]
    extra = list(dict.fromkeys(list(config.getoption("--model", default=[]) or []) + env))
    return extra or DEFAULT_MODELS


def pytest_generate_tests(metafunc):
    if "bench_model" in metafunc.fixturenames:
        metafunc.parametrize("bench_model", bench_models(metafunc.config), scope="session")


def is_full(config) -> bool:
    return bool(config.getoption("--full", default=False)) or os.environ.get("PROBEKIT_BENCH_FULL") == "1"


@pytest.fixture(scope="session")
def full(pytestconfig) -> bool:
    """True with ``--full`` (or ``PROBEKIT_BENCH_FULL=1``): the sizes the README quotes; False: the quick mode."""
    return is_full(pytestconfig)


@pytest.fixture(scope="session")
def torch_threads():
    """Torch threads for the whole run (``PROBEKIT_BENCH_THREADS``, default 1), restored at the end."""
    import torch
    old = torch.get_num_threads()
    yield apply_threads()
    torch.set_num_threads(old)


_MODELS: dict = {}


@pytest.fixture(scope="session")
def loaded_model(bench_model, torch_threads):
    """The benchmark's model, loaded once per session (the load is never timed)."""
    from probekit.models.loading import ModelUnavailableError, load_model
    if bench_model not in _MODELS:
        try:
            _MODELS[bench_model] = load_model(bench_model)
        except ModelUnavailableError as exc:
            _MODELS[bench_model] = f"{bench_model}: {exc}"
    m = _MODELS[bench_model]
    if isinstance(m, str):
        pytest.skip(m)
    return m


@pytest.fixture
def benchmark(benchmark):
    """pytest-benchmark's ``benchmark``; slowed down only under ``PROBEKIT_BENCH_SLOWDOWN``."""
    f = slowdown_factor()
    if f > 0:
        plant_slowdown(benchmark, f)
    return benchmark


def pytest_benchmark_update_machine_info(config, machine_info):
    """Library versions and threads next to the CPU: a compare warns when these differ."""
    import importlib.metadata as md
    info = {}
    for dist in ("torch", "transformers", "numpy", "scikit-learn", "probekit-layers"):
        try:
            info[dist] = md.version(dist)
        except md.PackageNotFoundError:
            info[dist] = None
    n = bench_threads()
    if n is None:
        import torch
        n = torch.get_num_threads()
    info["torch_threads"] = n
    info["cpu_count"] = os.cpu_count()
    machine_info["probekit"] = info


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """What the machine was doing (a shared box says so): load average at the end, mode, a free-text note."""
    output_json["probekit_run"] = {
        "mode": "full" if is_full(config) else "quick",
        "models": bench_models(config),
        "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "note": os.environ.get("PROBEKIT_BENCH_NOTE", ""),
    }
