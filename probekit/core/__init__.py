"""The foundation every stage may use: errors, atomic writes, argument checks, hashing, text spans, the
ActivationSet container, cost estimates and the expected-rows table.
"""
from __future__ import annotations

__all__ = ["errors", "atomic", "checks", "hashing", "text", "activations", "cost", "expected"]
