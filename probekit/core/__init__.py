"""The foundation every stage may use: errors, atomic writes, argument checks, hashing, text spans, the
ActivationSet container, cost estimates, the expected-rows table, a study's interval inflation and the version.
"""
from __future__ import annotations

__all__ = ["errors", "atomic", "checks", "hashing", "text", "activations", "cost", "expected", "inflation", "version"]
