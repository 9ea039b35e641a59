"""What one evaluation sees: a patient's normalized facts, the trial and the as-of date."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

from ..fhirjson import as_str
from ..normalize import facts
from ..normalize.units import UnitSystem
from ..record import PatientRecord
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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Outcome":
        return cls(data["result"], data["reason"], data.get("evidence", []), data.get("value"), data.get("unit"))


class Context:
    def __init__(self, record: PatientRecord, trial: Trial, as_of: date, units: UnitSystem):
        self.record = record
        self.trial = trial
        self.as_of = as_of
        self.units = units
        self.boundaries: set[date] = set()
        self._matches: dict[int, tuple[Any, list[Match]]] = {}
        self._asked: dict[tuple[int, tuple[str, ...]], tuple[Any, list[Match]]] = {}

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
        """Results whose code is in some value set (vitals and other noise are never built)."""
        return facts.measurements(self.record, lambda code: bool(self.match_all(code)))

    @cached_property
    def _measurements_by_valueset(self) -> dict[str, list[facts.Measurement]]:
        index: dict[str, list[facts.Measurement]] = {}
        for m in self.measurements:
            if m.has_value:
                for vs in {x.concept.valueset for x in self.match_all(m.code)}:
                    index.setdefault(vs, []).append(m)
        return index

    def measurements_in(self, valuesets: list[str]) -> list[facts.Measurement]:
        """Results with a value whose code is in any of the value sets (each classified once)."""
        if len(valuesets) == 1:
            return self._measurements_by_valueset.get(valuesets[0], [])
        seen: dict[int, facts.Measurement] = {}
        for vs in valuesets:
            for m in self._measurements_by_valueset.get(vs, []):
                seen.setdefault(id(m), m)
        return list(seen.values())

    @cached_property
    def medication_uses(self) -> list[facts.MedicationUse]:
        return facts.medication_uses(self.record)

    @cached_property
    def procedures(self) -> list[facts.ProcedureFact]:
        return facts.procedures(self.record)

    @property
    def gender(self) -> str | None:
        return as_str(self.record.patient.get("gender"))

    def match_all(self, concept: Any) -> list[Match]:
        """Every value-set match of a concept; each concept object is classified once."""
        cached = self._matches.get(id(concept))
        if cached is None or cached[0] is not concept:
            cached = (concept, self.trial.valuesets.match(concept))
            self._matches[id(concept)] = cached  # holding the concept keeps its id unique
        return cached[1]

    def match(self, concept: Any, valuesets: str | list[str]) -> list[Match]:
        """Matches of a concept against some value sets (names compete among those sets only)."""
        wanted = (valuesets,) if isinstance(valuesets, str) else tuple(valuesets)
        if not any(m.concept.valueset in wanted for m in self.match_all(concept)):
            return []  # the common case, answered from the per-concept cache
        key = (id(concept), wanted)
        cached = self._asked.get(key)
        if cached is None or cached[0] is not concept:  # criteria ask the same question per rule
            cached = self._asked[key] = (concept, self.trial.valuesets.match(concept, wanted))
        return cached[1]

    def systemic(self, use: facts.MedicationUse) -> bool:
        """False for inhaled, topical and other local routes (by route, else by dose form)."""
        vs = self.trial.non_systemic_routes
        if use.routes:
            return not any(self.match(r, vs) for r in use.routes)
        return not self.match(use.concept, vs)
