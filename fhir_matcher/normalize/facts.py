"""Clinical facts read from a patient record, with the data-hygiene rules applied once.

Conditions drop entered-in-error and refuted; Observations keep final, amended and
corrected; medication records drop entered-in-error, not-taken, cancelled (and draft
requests). Everything else about a fact stays raw JSON for the criteria to interpret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

from ..fhirjson import DateSpan, Json, as_dict, as_list, as_number, as_str, codings, concept_label, parse_date, ref_of
from ..record import PatientRecord

OBSERVATION_STATUSES = {"final", "amended", "corrected"}
ACTIVE_CLINICAL = {"active", "recurrence", "relapse"}
IGNORED_VERIFICATION = {"entered-in-error", "refuted"}
IGNORED_MEDICATION = {"entered-in-error", "not-taken", "cancelled", "draft"}
IGNORED_PROCEDURE = {"entered-in-error", "not-done", "preparation"}
ONGOING_MEDICATION = {"active", "intended", "on-hold"}


def _code(concept: Any) -> set[str]:
    return {c.code for c in codings(concept) if c.code}


# ---------------------------------------------------------------- conditions


@dataclass(frozen=True)
class ConditionFact:
    ref: str
    concept: Json
    active: bool
    status: str  # clinicalStatus as written, or "(no status)"
    day: DateSpan | None  # onset, else recorded date

    @property
    def label(self) -> str:
        return concept_label(self.concept)


def conditions(record: PatientRecord) -> list[ConditionFact]:
    out = []
    for r in record.of_type("Condition"):
        if _code(r.get("verificationStatus")) & IGNORED_VERIFICATION:
            continue
        status_codes = _code(r.get("clinicalStatus"))
        if status_codes:
            active = bool(status_codes & ACTIVE_CLINICAL)
            status = sorted(status_codes)[0]
        else:
            # No clinicalStatus: active unless an abatement says otherwise.
            active = not any(k.startswith("abatement") for k in r)
            status = "(no status)"
        day = (
            parse_date(r.get("onsetDateTime"))
            or parse_date(as_dict(r.get("onsetPeriod")).get("start"))
            or parse_date(r.get("recordedDate"))
        )
        out.append(ConditionFact(ref_of(r), as_dict(r.get("code")), active, status, day))
    return out


# ---------------------------------------------------------------- observations

_NUMBER_STRING = re.compile(r"^\s*(<=|>=|<|>|≤|≥)?\s*([-+]?\d+(?:\.\d+)?)\s*$")


@dataclass(slots=True)
class Measurement:
    """One result: an Observation, or one of its components (ECG panels carry QTc there).

    Not frozen: a frozen dataclass sets each field through object.__setattr__, and a screen
    builds one of these per lab result (about a twentieth of its time)."""

    ref: str
    code: Json
    day: DateSpan | None
    sort_key: str
    number: float | None = None
    comparator: str | None = None
    unit_code: str | None = None
    unit_text: str | None = None
    concept: Json | None = None  # valueCodeableConcept
    text: str | None = None  # valueString that is not a number
    boolean: bool | None = None
    interpretation: list[Json] = field(default_factory=list)
    ref_high: tuple[float, str | None, str | None] | None = None  # referenceRange.high
    ref_high_problem: str | None = None  # a referenceRange.high that is there but unusable
    date_problem: str | None = None  # why ``day`` is None: a malformed or missing date
    malformed: str | None = None  # a value that is there but unusable: the criterion says so

    @property
    def has_value(self) -> bool:
        return any(v is not None for v in (self.number, self.concept, self.text, self.boolean, self.malformed))


_COMPARATORS = {"<", "<=", ">=", ">"}


def _value_fields(src: Json, ref: str, at: str = "") -> dict[str, Any]:
    """The value of an Observation (or of a component, ``at`` = "component[i].").

    A value that is there but unusable is kept as ``malformed``: the reason names the resource
    and the field, so the criterion it feeds says exactly what is wrong.
    """
    out: dict[str, Any] = {}
    q = src.get("valueQuantity")
    if isinstance(q, dict):
        out["number"] = as_number(q.get("value"))
        comp = q.get("comparator")
        out["unit_code"] = as_str(q.get("code"))
        out["unit_text"] = as_str(q.get("unit"))
        if out["number"] is None and "value" in q:
            out["malformed"] = f"{ref} {at}valueQuantity.value is not a number"
        elif comp is not None and not (isinstance(comp, str) and comp in _COMPARATORS):
            out["number"] = None
            out["malformed"] = f"{ref} {at}valueQuantity.comparator is not one of < <= >= >"
        else:
            out["comparator"] = comp
    elif "valueQuantity" in src and src["valueQuantity"] is not None:
        out["malformed"] = f"{ref} {at}valueQuantity is not an object"
    elif isinstance(src.get("valueCodeableConcept"), dict):
        out["concept"] = src["valueCodeableConcept"]
    elif isinstance(src.get("valueString"), str):
        m = _NUMBER_STRING.match(src["valueString"])
        number = as_number(m.group(2)) if m else None
        if number is not None:
            out["number"] = number
            out["comparator"] = {"≤": "<=", "≥": ">="}.get(m.group(1), m.group(1))
        else:
            out["text"] = src["valueString"]
    elif isinstance(src.get("valueBoolean"), bool):
        out["boolean"] = src["valueBoolean"]
    elif "valueInteger" in src:
        number = as_number(src["valueInteger"]) if isinstance(src["valueInteger"], int) else None
        if number is None:
            out["malformed"] = f"{ref} {at}valueInteger is not an integer"
        else:
            out["number"] = number
    for i, rr in enumerate(as_list(src.get("referenceRange"))):
        high = as_dict(rr).get("high")
        if high is None:
            continue
        value = as_number(as_dict(high).get("value"))
        if value is None or value <= 0:
            out["ref_high_problem"] = f"{ref} {at}referenceRange[{i}].high.value is not a positive number"
            break
        out["ref_high"] = (value, as_str(high.get("code")), as_str(high.get("unit")))
        break
    return out


def measurements(record: PatientRecord, wanted: Callable[[Json], bool] | None = None) -> list[Measurement]:
    """Results (and components) to use; ``wanted`` filters by code before any other work."""
    out: list[Measurement] = []
    for r in record.of_type("Observation"):
        if as_str(r.get("status")) not in OBSERVATION_STATUSES:
            continue
        code = as_dict(r.get("code"))
        components = [as_dict(c) for c in as_list(r.get("component"))]
        use_main = wanted is None or wanted(code)
        use_comps = [(i, c) for i, c in enumerate(components) if wanted is None or wanted(as_dict(c.get("code")))]
        if not use_main and not use_comps:
            continue
        dates = [("effectiveDateTime", r.get("effectiveDateTime")), ("effectivePeriod.end", as_dict(r.get("effectivePeriod")).get("end")),
                 ("effectiveInstant", r.get("effectiveInstant")), ("issued", r.get("issued"))]
        field_name, written = next(((f, v) for f, v in dates if as_str(v)), (None, None))
        ref = ref_of(r)
        day = parse_date(written)
        if day is not None:
            date_problem = None
        elif field_name:
            date_problem = f"{ref} {field_name} is not a valid date"
        else:
            date_problem = f"{ref} has no effective date"
        base = dict(ref=ref, day=day, sort_key=written or "", interpretation=as_list(r.get("interpretation")), date_problem=date_problem)
        if use_main:
            out.append(Measurement(code=code, **base, **_value_fields(r, ref)))
        for i, comp in use_comps:
            fields = _value_fields(comp, ref, f"component[{i}].")
            if fields:
                base_c = {**base, "interpretation": as_list(comp.get("interpretation")) or base["interpretation"]}
                out.append(Measurement(code=as_dict(comp.get("code")), **base_c, **fields))
    return out


# ---------------------------------------------------------------- medications


@dataclass(frozen=True)
class MedicationUse:
    """A MedicationStatement, MedicationRequest or MedicationAdministration, normalized."""

    ref: str
    concept: Json  # the medication's CodeableConcept (resolved from a Medication if referenced)
    status: str
    start: date | None
    end: date | None  # inclusive; None with ongoing=True means "to the as-of date"
    ongoing: bool
    dosages: tuple[Json, ...]
    routes: tuple[Json, ...]

    @property
    def label(self) -> str:
        return concept_label(self.concept)

    def days(self, as_of: date) -> tuple[date, date] | None:
        """The first and last day taken, as of ``as_of`` (None when undated)."""
        if self.start is None:
            return None
        end = self.end if self.end is not None else (as_of if self.ongoing else self.start)
        return self.start, max(self.start, end)


def _medication_concept(record: PatientRecord, r: Json) -> Json:
    if isinstance(r.get("medicationCodeableConcept"), dict):
        return r["medicationCodeableConcept"]
    ref = as_str(as_dict(r.get("medicationReference")).get("reference"))
    if ref:
        med = record.medication(ref, r)
        if med and isinstance(med.get("code"), dict):
            return med["code"]
    display = as_str(as_dict(r.get("medicationReference")).get("display"))
    return {"text": display} if display else {}


def _period(value: Any) -> tuple[date | None, date | None]:
    p = as_dict(value)
    lo = parse_date(p.get("start"))
    hi = parse_date(p.get("end"))
    return (lo.lo if lo else None), (hi.hi if hi else None)


def medication_uses(record: PatientRecord) -> list[MedicationUse]:
    out = []
    for r in record.of_type("MedicationStatement", "MedicationRequest", "MedicationAdministration"):
        status = as_str(r.get("status")) or "unknown"
        if status in IGNORED_MEDICATION or status == "not-done":
            continue
        rtype = r.get("resourceType")
        dosages: list[Json] = [as_dict(d) for d in as_list(r.get("dosage" if rtype != "MedicationRequest" else "dosageInstruction"))]
        start = end = None
        if rtype == "MedicationRequest":
            bounds = [as_dict(as_dict(d.get("timing")).get("repeat")).get("boundsPeriod") for d in dosages]
            start, end = next((_period(b) for b in bounds if isinstance(b, dict)), (None, None))
            if start is None:
                start, end = _period(as_dict(r.get("dispenseRequest")).get("validityPeriod"))
            if start is None:
                authored = parse_date(r.get("authoredOn"))
                start = authored.lo if authored else None
        else:
            one = parse_date(r.get("effectiveDateTime"))
            if one:
                start = one.lo
                end = None if status in ONGOING_MEDICATION else one.hi
            else:
                start, end = _period(r.get("effectivePeriod"))
        routes = tuple(as_dict(d.get("route")) for d in dosages if isinstance(d.get("route"), dict))
        out.append(
            MedicationUse(
                ref=ref_of(r),
                concept=_medication_concept(record, r),
                status=status,
                start=start,
                end=end,
                ongoing=status in ONGOING_MEDICATION,
                dosages=tuple(dosages),
                routes=routes,
            )
        )
    return out


# ---------------------------------------------------------------- procedures


@dataclass(frozen=True)
class ProcedureFact:
    ref: str
    concept: Json
    start: date | None
    end: date | None
    status: str = "unknown"


def procedures(record: PatientRecord) -> list[ProcedureFact]:
    out = []
    for r in record.of_type("Procedure"):
        if as_str(r.get("status")) in IGNORED_PROCEDURE:
            continue
        one = parse_date(r.get("performedDateTime"))
        if one:
            start, end = one.lo, one.hi
        else:
            start, end = _period(r.get("performedPeriod"))
            end = end or start
        out.append(ProcedureFact(ref_of(r), as_dict(r.get("code")), start, end, as_str(r.get("status")) or "unknown"))
    return out
