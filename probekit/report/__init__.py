"""Stage 7: figures, claims tables and the audit markdown.
"""
from __future__ import annotations

from .render import (  # noqa: F401
    CHANCE,
    OVERVIEW_COMPONENT,
    BASIS_TITLES,
    profile_summary,
    plot_experiment,
    plot_overview,
    plot_profiles,
    claim_rows,
    answer_headline,
    claims_markdown,
    write_claims_table,
    all_verdicts,
    twin_markdown,
    preregistration,
    measure_run,
    write_claim_profiles,
    write_report,
    transfer_lines,
    report_markdown,
)
from . import render  # noqa: F401,E402  (the modules, as namespaces)

__all__ = [
    'CHANCE',
    'OVERVIEW_COMPONENT',
    'BASIS_TITLES',
    'profile_summary',
    'plot_experiment',
    'plot_overview',
    'plot_profiles',
    'claim_rows',
    'answer_headline',
    'claims_markdown',
    'write_claims_table',
    'all_verdicts',
    'twin_markdown',
    'preregistration',
    'measure_run',
    'write_claim_profiles',
    'write_report',
    'transfer_lines',
    'report_markdown',
]
