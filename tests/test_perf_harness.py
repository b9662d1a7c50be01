"""The speed benchmarks' harness (benchmarks/perf), checked cheaply in the default suite.

* The timing runs never enter the default test command: ``pytest benchmarks``
  collects none of them; naming ``benchmarks/perf`` (or ``--benchmark-only``) does.
* A saved baseline and ``--benchmark-compare-fail`` catch a planted slowdown
  (``PROBEKIT_BENCH_SLOWDOWN``, the test-only hook of benchmarks/perf/conftest.py)
  and pass without it: three short pytest runs of the machine-reference benchmark.

No wall time is asserted here; the planted slowdown is a 3x factor against a
50 % threshold on the minimum round, far outside a busy machine's noise.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PERF_FILES = ("bench_extraction.py", "bench_probes.py", "bench_e2e.py", "bench_machine.py")


def _pytest(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("PROBEKIT_BENCH_SLOWDOWN", "PYTEST_ADDOPTS")}
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)


def _collected(out: str) -> list[str]:
    return [line for line in out.splitlines() if "::" in line]


def test_default_run_collects_no_speed_benchmark():
    r = _pytest("benchmarks", "--collect-only", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    ids = _collected(r.stdout)
    assert ids, "the claim benchmarks should still be collected"
    assert not [i for i in ids if i.startswith("benchmarks/perf")], r.stdout


def test_asking_for_benchmarks_collects_them():
    """``--benchmark-only`` turns them on (a path inside benchmarks/perf does too: the compare test below)."""
    r = _pytest("benchmarks", "--benchmark-only", "--collect-only", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    files = {i.split("::")[0] for i in _collected(r.stdout) if i.startswith("benchmarks/perf")}
    assert files >= {f"benchmarks/perf/{f}" for f in PERF_FILES}, r.stdout


def test_compare_fails_on_planted_slowdown_and_passes_without(tmp_path):
    storage = f"file://{tmp_path / 'store'}"
    common = ["benchmarks/perf/bench_machine.py", "--benchmark-only", "-q", f"--benchmark-storage={storage}",
              "--benchmark-max-time=0.05", "--benchmark-min-rounds=15", "--benchmark-warmup=off"]
    # the planted slowdown makes every call 3x as long (+200%); the gate at +100% catches it and leaves an
    # unchanged run room for a busy box (a clean-clone CI once measured an unchanged run's min at +54%)
    compare = ["--benchmark-compare=0001", "--benchmark-compare-fail=min:100%"]

    base = _pytest(*common, "--benchmark-save=base")
    assert base.returncode == 0, base.stdout + base.stderr
    assert list((tmp_path / "store").glob("*/0001_base.json")), base.stdout

    slow_json = tmp_path / "slow.json"
    slow = _pytest(*common, *compare, f"--benchmark-json={slow_json}", env={"PROBEKIT_BENCH_SLOWDOWN": "2"})
    assert slow.returncode != 0, "a 3x slower run passed the compare:\n" + slow.stdout + slow.stderr
    assert "Performance has regressed" in slow.stdout + slow.stderr, slow.stdout + slow.stderr
    saved = json.loads(slow_json.read_text())["benchmarks"]
    assert [b["extra_info"].get("planted_slowdown") for b in saved] == [2.0]

    same = _pytest(*common, *compare)
    assert same.returncode == 0, "an unchanged run failed the compare:\n" + same.stdout + same.stderr


def test_performance_page_tables_are_the_committed_run():
    """docs/performance.md's block is exactly what benchmarks/perf/report.py renders from the
    committed run (so the documented numbers and the benchmark output agree, and say which run)."""
    from benchmarks.perf import report
    readme = (ROOT / "docs" / "performance.md").read_text()
    block = report.readme_block(readme)
    runs = sorted((ROOT / "benchmarks" / "perf" / "runs").glob("*.json"))
    assert runs, "no committed benchmark run under benchmarks/perf/runs"
    shown = [r for r in runs if f"`benchmarks/perf/runs/{r.name}`" in block]
    assert len(shown) == 1, "the docs/performance.md block must name exactly one committed run"
    assert block == report.render(report.load(shown[0])), \
        "docs/performance.md out of date: python -m benchmarks.perf.report RUN.json --page docs/performance.md"
