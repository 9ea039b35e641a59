"""Evaluate a patient against a trial: every criterion, then the status."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any, Iterator

from ..normalize.units import UnitSystem, default_units
from ..record import PatientRecord
from ..trial import EXCLUSION, INCLUSION, Trial
from .context import Context, Outcome
from .kinds import MET, NOT_MET, UNKNOWN, run

log = logging.getLogger("fhir_matcher")

CANDIDATE, POTENTIAL, INELIGIBLE = "candidate", "potential-candidate", "ineligible"
STATUSES = (CANDIDATE, POTENTIAL, INELIGIBLE)
SHORTLIST = (CANDIDATE, POTENTIAL)  # the statuses that get a ResearchSubject

_strict = False


@contextmanager
def strict_kinds() -> Iterator[None]:
    """Let an exception inside a kind escape instead of becoming an ``unknown`` criterion.

    For tests: malformed data must be handled where it is read, so any exception a kind
    raises is a bug, which the top-level catch in ``evaluate`` would otherwise hide.
    """
    global _strict
    before, _strict = _strict, True
    try:
        yield
    finally:
        _strict = before


@dataclass
class PatientResult:
    patient: str
    status: str
    criteria: dict[str, Outcome]
    recheck_on: date | None = None  # the first day the result may change with time alone

    def criteria_json(self) -> dict[str, Any]:
        return {cid: o.to_json() for cid, o in self.criteria.items()}

    @staticmethod
    def criteria_from_json(data: dict[str, Any]) -> dict[str, Outcome]:
        return {cid: Outcome.from_json(o) for cid, o in data.items()}

    def to_json(self, trial: Trial, as_of: date) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "status": self.status,
            "trial": trial.id,
            "as_of": as_of.isoformat(),
            "criteria": self.criteria_json(),
        }


def deciding(trial: Trial, results: dict[str, Outcome]) -> list[str]:
    """The criteria that make a patient ineligible, in the trial's order."""
    out = []
    for c in trial.criteria:
        if c.washout or c.manual:
            continue
        r = results[c.id].result
        if (c.type == INCLUSION and r == NOT_MET) or (c.type == EXCLUSION and r == MET):
            out.append(c.id)
    return out


def to_obtain(trial: Trial, results: dict[str, Outcome]) -> list[str]:
    """Computable criteria still unknown: the data a coordinator should obtain."""
    return [c.id for c in trial.criteria if results[c.id].result == UNKNOWN and not (c.washout or c.manual)]


def washouts_due(trial: Trial, results: dict[str, Outcome]) -> list[str]:
    """Washout criteria that apply: drugs to stop before the study treatment (the trial says when)."""
    return [c.id for c in trial.criteria if c.washout and results[c.id].result == MET]


def still_to_do(trial: Trial, results: dict[str, Outcome]) -> list[str]:
    """What stands between a (potential) candidate and enrolment, as short phrases."""
    notes = []
    if todo := to_obtain(trial, results):
        notes.append("data to obtain: " + ", ".join(todo))
    if washouts := washouts_due(trial, results):
        notes.append("washout needed: " + ", ".join(washouts))
    return notes


def status_of(trial: Trial, results: dict[str, Outcome]) -> str:
    if deciding(trial, results):
        return INELIGIBLE
    if any(results[c.id].result == UNKNOWN for c in trial.criteria if not (c.washout or c.manual)):
        return POTENTIAL
    return CANDIDATE


def evaluate(record: PatientRecord, trial: Trial, as_of: date, units: UnitSystem | None = None) -> PatientResult:
    """Pure function of the record, the trial and the as-of date."""
    ctx = Context(record, trial, as_of, units or default_units())
    results: dict[str, Outcome] = {}
    for c in trial.criteria:
        try:
            results[c.id] = run(c, ctx)
        except Exception as e:  # one criterion's bad data must not sink the patient
            if _strict:
                raise
            log.warning("criterion %s could not be evaluated for one patient (%s)", c.id, type(e).__name__)
            log.debug("criterion %s failed", c.id, exc_info=True)
            results[c.id] = Outcome(UNKNOWN, f"could not be evaluated ({type(e).__name__} on malformed data)")
    return PatientResult(record.key, status_of(trial, results), results, ctx.recheck_on)
