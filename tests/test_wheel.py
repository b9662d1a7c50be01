"""The built wheel carries the study's data: installed into a fresh venv outside the checkout, probekit loads
every stimulus set and the expected rows, and `probekit models` runs.

The venv reuses this interpreter's installed packages (torch & co. are not reinstalled) through a .pth line
naming their site-packages (a plain path: that folder's own .pth files, an editable probekit's finder among
them, are not run), and must import probekit from the wheel, not from a checkout: the test runs from a
temporary directory with PYTHONPATH cleared and checks probekit.__file__ is inside the venv.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from probekit.core.version import __version__

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow
BUMPED = f"{__version__}.post999"     # the copy's version (_source_copy)


def _run(cmd, cwd, env, timeout=600):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}: rc {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def _source_copy(tmp_path) -> Path:
    """A copy of the sources to build from: a build/ folder left in the checkout would leak stale files into
    the wheel. Its version is bumped in probekit/core/version.py only, so a build whose metadata follows it
    proves that file is the one version source (a version also written in pyproject.toml would win there)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             "results", ".pytest_cache"))
    vfile = src / "probekit" / "core" / "version.py"
    text = vfile.read_text()
    assert text.count(f'__version__ = "{__version__}"') == 1, "core/version.py must assign __version__ once"
    vfile.write_text(text.replace(f'__version__ = "{__version__}"', f'__version__ = "{BUMPED}"'))
    return src


def test_the_version_is_stated_once():
    """pyproject.toml states no version of its own: setuptools reads probekit/core/version.py."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], "pyproject.toml: state the version in probekit/core/version.py"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "probekit.core.version.__version__"}


def test_an_editable_build_reads_the_version_from_the_package(tmp_path):
    """What ``pip install -e`` records (the editable metadata hook) is core/version.py's version."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    src = _source_copy(tmp_path)
    meta = tmp_path / "meta"
    meta.mkdir()
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.prepare_metadata_for_build_editable(sys.argv[1]))")
    dist_info = _run([sys.executable, "-c", code, str(meta)], cwd=src, env=env).strip().splitlines()[-1]
    text = (meta / dist_info / "METADATA").read_text()
    assert f"\nVersion: {BUMPED}\n" in text, text[:300]


def test_the_installed_wheel_has_the_study_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    src = _source_copy(tmp_path)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
          str(src)], cwd=tmp_path, env=env)
    (wheel,) = wheels.glob(f"probekit_layers-{BUMPED}-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=env).strip())
    (site / "_probekit_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # this interpreter's pip installs into the venv's site-packages (--target): no network, no deps
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
         cwd=tmp_path, env=env)
    # the `probekit` command as the wheel's console_scripts entry point declares it, run by the venv's python
    (venv / "bin" / "probekit").write_text(
        f"#!{py}\nimport sys\nfrom importlib.metadata import entry_points\n"
        "(ep,) = [e for e in entry_points(group='console_scripts') if e.name == 'probekit'\n"
        f"         and str(e.dist.locate_file('')).startswith({str(venv)!r})]\n"
        "sys.exit(ep.load()())\n")
    (venv / "bin" / "probekit").chmod(0o755)
    code = ("import probekit, pathlib, sys\n"
            f"assert pathlib.Path(probekit.__file__).is_relative_to({str(venv)!r}), probekit.__file__\n"
            "from probekit import stimuli\n"
            "from probekit.studies import load_study\n"
            "names = stimuli.names()\n"
            "assert 'items' in names and len(names) >= 8, names\n"
            "n = {k: len(stimuli.load(k)) for k in names}\n"
            "rows = load_study().expected()\n"
            "assert (rows.provenance == 'measured').any() and (rows.provenance == 'paper').any()\n"
            "from probekit.studies.bogdan2025 import claims as C\n"
            "assert C.MEASURED_FILE.exists() and C._measured('items', 'resid_pre') is not None, C.MEASURED_FILE\n"
            "from importlib.metadata import version\n"
            f"assert probekit.__version__ == version('probekit-layers') == {BUMPED!r}, probekit.__version__\n"
            "print(probekit.__file__, n, len(rows))\n")
    out = _run([str(py), "-c", code], cwd=tmp_path, env=env)
    assert str(venv) in out and "'items': " in out
    cache = tmp_path / "cache"
    env_run = dict(env, PROBEKIT_CACHE=str(cache))
    for cmd in ([str(venv / "bin" / "probekit"), "models"], [str(py), "-m", "probekit", "models"]):
        assert "smollm2-135m" in _run(cmd, cwd=tmp_path, env=env_run, timeout=300)
