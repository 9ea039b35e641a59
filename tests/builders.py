"""Small builders for FHIR R4 test resources (plain JSON), and a one-patient evaluator."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

from fhir_matcher.criteria.evaluate import evaluate
from fhir_matcher.record import RecordBuilder

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
LOCAL = "http://hospital.example.cn/fhir/CodeSystem/local"
AS_OF = date(2026, 11, 24)

_ids = itertools.count(1)


def cc(system=None, code=None, display=None, text=None) -> dict:
    out: dict[str, Any] = {}
    if system or code:
        coding = {"system": system, "code": code}
        if display:
            coding["display"] = display
        out["coding"] = [coding]
    if text:
        out["text"] = text
    return out


def patient(pid="p1", birth="1980-01-01", gender="female", **extra) -> dict:
    p = {"resourceType": "Patient", "id": pid, "gender": gender, **extra}
    if birth:
        p["birthDate"] = birth
    return p


def condition(code: dict, onset="2020-01-01", clinical="active", verification="confirmed", pid="p1") -> dict:
    c = {"resourceType": "Condition", "id": f"c{next(_ids)}", "subject": {"reference": f"Patient/{pid}"}, "code": code}
    if clinical:
        c["clinicalStatus"] = cc("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
    if verification:
        c["verificationStatus"] = cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification)
    if onset:
        c["onsetDateTime"] = onset
    return c


def obs(loinc: str | dict, value=None, unit=None, code=None, when="2026-11-20", status="final", comparator=None, pid="p1", **extra) -> dict:
    o = {"resourceType": "Observation", "id": f"o{next(_ids)}", "status": status,
         "code": cc(LOINC, loinc) if isinstance(loinc, str) else loinc,
         "subject": {"reference": f"Patient/{pid}"}, **extra}
    if when:
        o["effectiveDateTime"] = when
    if value is not None:
        q: dict[str, Any] = {"value": value}
        if unit:
            q["unit"] = unit
        if code:
            q["system"], q["code"] = UCUM, code
        if comparator:
            q["comparator"] = comparator
        o["valueQuantity"] = q
    return o


def med(concept: dict, start="2020-01-01", end=None, status="active", dose=None, unit="mg", per_day=1, route=None, pid="p1", rtype="MedicationStatement") -> dict:
    m: dict[str, Any] = {"resourceType": rtype, "id": f"m{next(_ids)}", "status": status,
                         "subject": {"reference": f"Patient/{pid}"}, "medicationCodeableConcept": concept}
    period = {"start": start}
    if end:
        period["end"] = end
    if rtype == "MedicationRequest":
        m["intent"] = "order"
        m["authoredOn"] = start
    else:
        m["effectivePeriod"] = period
    dosage: dict[str, Any] = {}
    if dose is not None:
        dosage["doseAndRate"] = [{"doseQuantity": {"value": dose, "unit": unit}}]
        dosage["timing"] = {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}
    if route:
        dosage["route"] = route
    if dosage:
        m["dosageInstruction" if rtype == "MedicationRequest" else "dosage"] = [dosage]
    return m


def procedure(code: dict, when="2026-10-01", status="completed", pid="p1") -> dict:
    return {"resourceType": "Procedure", "id": f"pr{next(_ids)}", "status": status, "code": code,
            "subject": {"reference": f"Patient/{pid}"}, "performedDateTime": when}


def record(*resources: dict):
    b = RecordBuilder()
    for r in resources:
        b.add(r, "test")
    records = list(b.records())
    assert len(records) == 1, records
    return records[0]


def run(trial, *resources: dict, as_of: date = AS_OF):
    if not any(r["resourceType"] == "Patient" for r in resources):
        resources = (patient(),) + resources
    return evaluate(record(*resources), trial, as_of)


def result(trial, cid: str, *resources: dict, as_of: date = AS_OF) -> str:
    return run(trial, *resources, as_of=as_of).criteria[cid].result
