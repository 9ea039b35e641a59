"""What a screen reads, handed to the sources as data: they know no criteria and no trial.

The criteria engine builds a ``ReadPlan`` from one trial or a portfolio
(``engine.cohort.read_plan``): the resource types the criteria read, the cohort gate (a
patient's Condition codes -> could be eligible for some trial), and how far back Observations
matter. File, REST, patient-list and Bulk sources read by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Callable, Iterable

MEDICATION_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")


@dataclass(frozen=True)
class ReadPlan:
    types: frozenset[str]  # resource types the criteria read (Patient is always read)
    gate: Callable[[list[Any]], bool] | None = None  # Condition codes -> in the cohort; None: everyone
    observation_days: int | None = None  # every Observation reader looks back at most this far

    @property
    def gated(self) -> bool:
        return self.gate is not None

    def admits(self, codes: Iterable[Any]) -> bool:
        """Could a patient with these Condition codes be eligible (for some trial)?"""
        return self.gate is None or self.gate(list(codes))

    def export_types(self, group: bool) -> list[str]:
        """Types to ``$export``: Medications only from a system export (not in the compartment)."""
        types = set(self.types) | {"Patient"}
        if not group:
            types.add("Medication")
        return sorted(types)

    def type_filters(self, as_of: date, tag: str | None, types: list[str]) -> list[str]:
        """``_typeFilter`` queries that only drop what no criterion can use: Observations older
        than the longest window when every criterion reading them has one; a ``tag``
        restricts every type to resources carrying it."""
        out = []
        for t in types:
            parts = [f"_tag={tag}"] if tag else []
            if t == "Observation" and self.observation_days is not None:
                parts.append(f"date=ge{(as_of - timedelta(days=self.observation_days + 1)).isoformat()}")
            if parts:
                out.append(f"{t}?{'&'.join(parts)}")
        return out
