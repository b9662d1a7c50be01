"""How much a study widens its bootstrap intervals, per kind of statistic (one small value object: the
study registry holds one, the claims read it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Inflation:
    """How much a study widens its bootstrap intervals, per kind of statistic (the variance the bootstrap of
    out-of-fold predictions misses: refitting and the CV split). ``depth``: centroids and centroid
    differences, each one's deviation quantiles x ``depth``; ``band``: simultaneous bands over layers and what
    is read from them (gains, excesses, the dip test's null deviations). Measured on refit replicates
    (:func:`probekit.claims.calibration.inflation_table`); 1.0 = the reweighting bootstrap as it is."""
    depth: float = 1.0
    band: float = 1.0

    def __post_init__(self):
        for k in ("depth", "band"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 1.0):
                raise ValueError(f"Inflation.{k} = {v!r}: an inflation widens an interval; give a finite number "
                                 f">= 1.0")

    def of(self, kind: str) -> float:
        """The factor for an interval kind of :func:`~probekit.claims.calibration.inflation_table` (``ci`` of a
        centroid or difference, or a ``simultaneous band``)."""
        if kind not in ("ci", "simultaneous band"):
            raise ValueError(f"Inflation.of({kind!r}): the kinds are 'ci' (a centroid or a difference of two) and "
                             "'simultaneous band'")
        return self.depth if kind == "ci" else self.band
