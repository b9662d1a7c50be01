"""arXiv 2501.07359 (Bogdan 2025), "Emergent effects of scaling on the functional hierarchies within large
language models": items early, relations deeper, analogies deeper still, the 70B double peak, attention
anti-persistence, buried concepts, and the shuffled-label control.

``experiments`` — the stimulus sets and primary labels of each experiment;
``claims`` — the seven claims (measurement, nulls, planted effects);
``causal`` — the causal claims (``probekit run --causal``: ablating the probe peak's layers);
``paper`` — the paper's numbers as the claims' expected rows (``expected/paper.parquet``).
"""
from pathlib import Path

from probekit.studies import Study

from .causal import CAUSAL_CLAIMS
from .claims import CLAIMS, INFLATION, NOISE
from .experiments import EXPERIMENTS, TRANSFERS
from .paper import PAPER_RANGES, paper_rows

STUDY = Study(
    id="bogdan2025",
    title="Claims of arXiv 2501.07359 (Bogdan 2025)",
    experiments=EXPERIMENTS,
    claims=CLAIMS + CAUSAL_CLAIMS,
    paper_rows=paper_rows,
    inflation=INFLATION,
    noise=NOISE,
    paper_ranges=PAPER_RANGES,
    transfers=TRANSFERS,
    folder=Path(__file__).resolve().parent,
)
