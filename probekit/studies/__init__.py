"""Studies: a paper as a folder — its experiments, its claims, its paper rows.

A study folder is a Python package whose ``__init__`` defines ``STUDY``, a
:class:`Study`. The shipped ones live here (``probekit/studies/<id>/``); any other
folder can be given by path (``--study path/to/folder``), so a new paper needs no
edit to the core. :func:`load_study` is the one way in.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from probekit.core.inflation import Inflation
from probekit.core import expected as E

DEFAULT_STUDY = "bogdan2025"
BUILTIN = ("bogdan2025",)


def data_dir(kind: str, study: str = DEFAULT_STUDY) -> Path:
    """A shipped study's data folder (``kind``: ``"stimuli"`` or ``"expected"``), without importing its code:
    ``probekit/studies/<study>/<kind>/`` (package data, so an installed wheel has it too)."""
    return Path(__file__).resolve().parent / study / kind


class StudyError(ValueError):
    """A study name or folder that cannot be loaded."""


@dataclass
class Study:
    """A paper's experiments and claims.

    ``paper_rows()`` builds the paper's expected rows (the design card written to
    ``expected_dir/paper.parquet``); measured regression rows of reference models live in
    ``expected_dir/measured.parquet``. ``inflation`` (a :class:`probekit.claims.Inflation`, one factor per kind of statistic) widens every
    bootstrap interval of the study's decision rules (the variance the bootstrap of out-of-fold predictions misses);
    ``noise`` holds the simulation parameters its claims are calibrated with; ``paper_ranges``
    maps an experiment to the paper's layer ranges drawn in the figures."""
    id: str
    title: str
    experiments: dict
    claims: list
    paper_rows: object                       # () -> DataFrame
    expected_path: Path | None = None        # None: <folder>/expected/ (or $PROBEKIT_EXPECTED_DIR)
    inflation: Inflation = field(default_factory=Inflation)
    noise: dict = field(default_factory=dict)
    paper_ranges: dict = field(default_factory=dict)
    transfers: tuple = ()                    # (experiment, held-out stimulus set): probes trained on one, tested
    folder: Path | None = None

    def claim(self, claim_id: str):
        for c in self.claims:
            if c.id == claim_id or c.id == f"{self.id}.{claim_id}":
                return c
        raise KeyError(f"study {self.id}: no claim {claim_id!r}; claims: {', '.join(c.id for c in self.claims)}")

    def experiment(self, name: str):
        if name not in self.experiments:
            raise KeyError(f"study {self.id}: unknown experiment {name!r}; known: {', '.join(self.experiments)}")
        return self.experiments[name]

    @property
    def expected_dir(self) -> Path:
        if self.expected_path:
            return Path(self.expected_path)
        return E.expected_dir(Path(self.folder) / "expected" if self.folder else data_dir("expected", self.id))

    def owns(self, claim_id: str) -> bool:
        return any(c.id == claim_id for c in self.claims)

    def expected(self) -> pd.DataFrame:
        """This study's rows of ``expected_dir/*.parquet`` (validated); the paper rows from code when
        none are written yet."""
        E.check_env_dir()                                           # a typo'd folder is refused, not "no tables"
        table = E.load(self.expected_dir) if Path(self.expected_dir).is_dir() else pd.DataFrame(columns=E.COLUMNS)
        E.check_claim_ids(table, self, str(self.expected_dir))      # a typo'd claim id is refused, not dropped
        mine = table[table.claim.map(self.owns)] if len(table) else table
        if not (mine.provenance == "paper").any():
            mine = pd.concat([self.paper_rows(), mine], ignore_index=True) if len(mine) else self.paper_rows()
        return mine.reset_index(drop=True)


_LOADED: dict[str, Study] = {}


def load_study(name_or_path: str | os.PathLike | None = None) -> Study:
    """A shipped study by id (default ``bogdan2025``) or a study folder by path."""
    key = str(name_or_path or DEFAULT_STUDY)
    if key in _LOADED:
        return _LOADED[key]
    if key in BUILTIN:
        mod = importlib.import_module(f"{__name__}.{key}")
    else:
        folder = Path(key)
        init = folder / "__init__.py"
        if not init.is_file():
            raise StudyError(f"study {key!r}: not a shipped study ({', '.join(BUILTIN)}) and not a folder with an "
                             f"__init__.py defining STUDY")
        name = f"probekit_study_{folder.resolve().name}_{abs(hash(str(folder.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    study = getattr(mod, "STUDY", None)
    if not isinstance(study, Study):
        raise StudyError(f"study {key!r}: its __init__.py must define STUDY = probekit.studies.Study(...)")
    _LOADED[key] = _LOADED[study.id] = study
    return study


def study_of_claim(claim_id: str) -> Study:
    """The loaded study that owns ``claim_id`` (``<study>.<claim>``)."""
    sid = claim_id.split(".", 1)[0]
    if sid in _LOADED:
        return _LOADED[sid]
    return load_study(sid)
