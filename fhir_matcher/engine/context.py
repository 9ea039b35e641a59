"""What one evaluation sees: a patient's normalized facts, the trial and the as-of date."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

from ..fhirjson import as_str
from ..normalize import facts
from ..normalize.units import UnitSystem
from ..sources.record import PatientRecord
from ..terminology.valuesets import Match
from ..trial import Trial


@dataclass
class Outcome:
    """A criterion's result with its one-line reason, evidence and converted value."""

    result: str  # met | not-met | unknown | manual
    reason: str
    evidence: list[str] = field(default_factory=list)
    value: Any = None
    unit: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result": self.result, "reason": self.reason, "evidence": self.evidence, "value": self.value}
        if self.unit:
            out["unit"] = self.unit
        return out


class Context:
    def __init__(self, record: PatientRecord, trial: Trial, as_of: date, units: UnitSystem):
        self.record = record
        self.trial = trial
        self.as_of = as_of
        self.units = units
        self.boundaries: set[date] = set()

    def watch(self, *days: date | None) -> None:
        """Dates on which a criterion's result may change with time alone (record them all)."""
        self.boundaries.update(d for d in days if d is not None and d > self.as_of)

    @property
    def recheck_on(self) -> date | None:
        return min(self.boundaries) if self.boundaries else None

    @cached_property
    def conditions(self) -> list[facts.ConditionFact]:
        return facts.conditions(self.record)

    @cached_property
    def measurements(self) -> list[facts.Measurement]:
        return facts.measurements(self.record)

    @cached_property
    def medication_uses(self) -> list[facts.MedicationUse]:
        return facts.medication_uses(self.record)

    @cached_property
    def procedures(self) -> list[facts.ProcedureFact]:
        return facts.procedures(self.record)

    @property
    def gender(self) -> str | None:
        return as_str(self.record.patient.get("gender"))

    def match(self, concept: Any, valuesets: str | list[str]) -> list[Match]:
        return self.trial.valuesets.match(concept, [valuesets] if isinstance(valuesets, str) else valuesets)

    def systemic(self, use: facts.MedicationUse) -> bool:
        """False for inhaled, topical and other local routes (by route, else by dose form)."""
        vs = self.trial.non_systemic_routes
        if use.routes:
            return not any(self.match(r, vs) for r in use.routes)
        return not self.match(use.concept, vs)
