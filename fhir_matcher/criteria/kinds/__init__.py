"""The kinds of criteria: pure functions of (criterion, context) -> Outcome.

A trial names a kind and its parameters; nothing here knows a particular trial. Each module
registers its kinds; ``run`` evaluates any criterion or rule.
"""

from __future__ import annotations

from ...plan import MEDICATION_TYPES
from ...trial import Criterion
from . import conditions, demographics, labs, logic, medications  # noqa: F401  (register the kinds)
from .base import KIND_FUNCTIONS, MANUAL, MET, NOT_MET, UNKNOWN, run

__all__ = ["KIND_FUNCTIONS", "MANUAL", "MET", "NOT_MET", "UNKNOWN", "MEDICATION_TYPES", "run", "resource_types"]


def resource_types(c: Criterion) -> set[str]:
    """The FHIR resource types a criterion reads (sources fetch only these)."""
    meds = set(MEDICATION_TYPES)
    reads = {
        "condition": {"Condition"},
        "lab": {"Observation"},
        "lab-uln": {"Observation"},
        "test-result": {"Observation"},
        "treatment-history": meds,
        "medication-use": meds,
        "exposure": (meds if c.params.get("medications", True) else set()) | ({"Procedure"} if c.params.get("procedures") else set()),
        "manual": set([c.params["evidence_types"]] if isinstance(c.params.get("evidence_types"), str) else c.params.get("evidence_types", [])),
    }.get(c.kind, set())
    for rule in c.rules:
        reads = reads | resource_types(rule)
    return reads
