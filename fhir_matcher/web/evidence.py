"""Evidence resolved from the FHIR server: what a reference like ``Observation/abc`` says.

The state keeps each criterion's evidence as references; the patient page shows what they
point at (a lab's value, unit, date and reference range; a condition's code and text; a
medication, its dose and dates), read from the server in one batch per page, and a clear
line for a reference the server no longer has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..fhirjson import Json, as_dict, as_list, as_number, as_str, codings, concept_label, normalize_reference
from ..rest.client import FhirClient, FhirError
from ..rest.transport import TransportError

log = logging.getLogger("fhir_matcher")

SYSTEMS = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.whocc.no/atc": "ATC",
    "http://unitsofmeasure.org": "UCUM",
}
BATCH = 50  # references per batch request


@dataclass
class Evidence:
    """One resolved reference, ready to show: a title, codes and (label, value) facts."""

    ref: str
    type: str
    title: str = ""
    codes: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    problem: str | None = None  # not found, not readable: said instead of the facts


def _system(system: str | None) -> str:
    if not system:
        return ""
    return SYSTEMS.get(system, system.rstrip("/").rsplit("/", 1)[-1])


def code_list(concept: Any) -> list[str]:
    return [f"{_system(c.system)} {c.code}" + (f" ({c.display})" if c.display else "") for c in codings(concept) if c.code]


def quantity(q: Any) -> str:
    q = as_dict(q)
    value = as_number(q.get("value"))
    if value is None:
        return ""
    unit = as_str(q.get("unit")) or as_str(q.get("code")) or ""
    comparator = as_str(q.get("comparator")) or ""
    return f"{comparator}{value:g} {unit}".strip()


def _range(r: Any) -> str:
    r = as_dict(r)
    low, high = quantity(r.get("low")), quantity(r.get("high"))
    text = as_str(r.get("text"))
    if low and high:
        return f"{low} – {high}"
    if low:
        return f"≥ {low}"
    if high:
        return f"≤ {high}"
    return text or ""


def _when(resource: Json, *names: str) -> str:
    for name in names:
        v = resource.get(name)
        if isinstance(v, str) and v.strip():
            return v[:10] if len(v) > 10 and "T" in v else v
        if isinstance(v, dict):
            start, end = as_str(v.get("start")), as_str(v.get("end"))
            if start or end:
                return f"{(start or '?')[:10]} → {(end or 'ongoing')[:10]}"
    return ""


def _value(resource: Json) -> str:
    for key in ("valueQuantity",):
        if key in resource:
            return quantity(resource[key])
    if "valueCodeableConcept" in resource:
        return concept_label(resource["valueCodeableConcept"])
    for key in ("valueString", "valueInteger", "valueBoolean", "valueDateTime"):
        if key in resource:
            return str(resource[key])
    if "valueRange" in resource:
        return _range(resource["valueRange"])
    return ""


def _dose(dosage: Any) -> str:
    d = as_dict(dosage)
    parts = []
    if text := as_str(d.get("text")):
        parts.append(text)
    for dr in as_list(d.get("doseAndRate")):
        if q := quantity(as_dict(dr).get("doseQuantity")):
            parts.append(q)
    if q := quantity(d.get("dose")):  # MedicationAdministration.dosage
        parts.append(q)
    if route := as_dict(d.get("route")):
        parts.append(concept_label(route))
    return "; ".join(dict.fromkeys(parts))


def summarize(resource: Json, medications: dict[str, Json] | None = None) -> Evidence:
    """What a person needs to see of one resource (any type; the common ones in detail)."""
    rtype = as_str(resource.get("resourceType")) or "?"
    ev = Evidence(f"{rtype}/{resource.get('id', '?')}", rtype)
    facts = ev.facts

    def add(label: str, value: str | None) -> None:
        if value:
            facts.append((label, value))

    if rtype == "Observation":
        ev.title = concept_label(resource.get("code"))
        ev.codes = code_list(resource.get("code"))
        add("Value", _value(resource) or (f"(none: {concept_label(resource.get('dataAbsentReason'))})" if resource.get("dataAbsentReason") else ""))
        for comp in as_list(resource.get("component")):
            add(concept_label(as_dict(comp).get("code")), _value(as_dict(comp)))
        add("Date", _when(resource, "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"))
        add("Reference range", "; ".join(filter(None, (_range(r) for r in as_list(resource.get("referenceRange"))))))
        add("Interpretation", ", ".join(concept_label(i) for i in as_list(resource.get("interpretation"))))
        add("Status", as_str(resource.get("status")))
    elif rtype == "Condition":
        ev.title = concept_label(resource.get("code"))
        ev.codes = code_list(resource.get("code"))
        add("Text", as_str(as_dict(resource.get("code")).get("text")))
        add("Clinical status", concept_label(resource["clinicalStatus"]) if resource.get("clinicalStatus") else "")
        add("Verification", concept_label(resource["verificationStatus"]) if resource.get("verificationStatus") else "")
        add("Onset", _when(resource, "onsetDateTime", "onsetPeriod", "onsetString"))
        add("Abatement", _when(resource, "abatementDateTime", "abatementPeriod", "abatementString"))
        add("Recorded", _when(resource, "recordedDate"))
    elif rtype in ("MedicationStatement", "MedicationRequest", "MedicationAdministration", "MedicationDispense"):
        concept = resource.get("medicationCodeableConcept")
        med_ref = as_str(as_dict(resource.get("medicationReference")).get("reference"))
        if concept is None and med_ref and medications is not None:
            concept = as_dict(medications.get(normalize_reference(med_ref))).get("code")
        ev.title = concept_label(concept) if concept else (as_str(as_dict(resource.get("medicationReference")).get("display")) or med_ref or "(medication not named)")
        ev.codes = code_list(concept)
        doses = [*as_list(resource.get("dosage")), *as_list(resource.get("dosageInstruction"))]
        add("Dose", " | ".join(filter(None, (_dose(d) for d in doses))))
        add("Dates", _when(resource, "effectivePeriod", "effectiveDateTime", "authoredOn", "whenHandedOver", "dateAsserted"))
        add("Status", as_str(resource.get("status")))
    elif rtype == "Procedure":
        ev.title = concept_label(resource.get("code"))
        ev.codes = code_list(resource.get("code"))
        add("Performed", _when(resource, "performedDateTime", "performedPeriod", "performedString"))
        add("Status", as_str(resource.get("status")))
    elif rtype == "Patient":
        ev.title = "Patient"
        add("Born", as_str(resource.get("birthDate")))
        add("Sex", as_str(resource.get("gender")))
        if "deceasedBoolean" in resource or "deceasedDateTime" in resource:
            add("Deceased", str(resource.get("deceasedDateTime") or resource.get("deceasedBoolean")))
    else:
        concept = resource.get("code") or resource.get("category")
        ev.title = concept_label(concept) if concept else rtype
        ev.codes = code_list(concept)
        add("Date", _when(resource, "effectiveDateTime", "effectivePeriod", "dateTime", "date", "issued", "authoredOn", "recordedDate"))
        add("Status", as_str(resource.get("status")))
    return ev


class Resolver:
    """Reads references from the server, each once (a cache per page)."""

    def __init__(self, client: FhirClient):
        self.client = client
        self.cache: dict[str, Json | str] = {}  # ref -> resource, or the reason it could not be read

    def read(self, refs: Iterable[str]) -> None:
        todo = sorted({normalize_reference(r) for r in refs if r and "/" in r} - set(self.cache))
        for i in range(0, len(todo), BATCH):
            self._batch(todo[i : i + BATCH])

    def _batch(self, refs: list[str]) -> None:
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": r}} for r in refs]}
        try:
            answer = self.client.transaction(bundle)
            entries = as_list(answer.get("entry"))
            if len(entries) != len(refs):
                raise FhirError("batch answer has the wrong number of entries")
        except (FhirError, TransportError) as e:  # no batch on this server: one read each
            log.info("evidence: batch read refused (%s); reading one by one", type(e).__name__)
            for r in refs:
                try:
                    self.cache[r] = self.client.request("GET", r)
                except FhirError as e1:
                    self.cache[r] = "not found on the server (deleted?)" if e1.status in (404, 410) else f"could not be read (HTTP {e1.status})"
                except TransportError:
                    self.cache[r] = "could not be read (server unreachable)"
            return
        for r, e in zip(refs, entries):
            e = as_dict(e)
            status = str(as_dict(e.get("response")).get("status", ""))
            resource = as_dict(e.get("resource"))
            if status.startswith("2") and resource.get("resourceType") not in (None, "OperationOutcome"):
                self.cache[r] = resource
            elif status.startswith(("404", "410")):
                self.cache[r] = "not found on the server (deleted?)"
            else:
                self.cache[r] = f"could not be read (HTTP {status.split()[0] if status else '?'})"

    def resource(self, ref: str) -> Json | None:
        got = self.cache.get(normalize_reference(ref))
        return got if isinstance(got, dict) else None

    def evidence(self, refs: list[str]) -> list[Evidence]:
        """Every reference resolved and summarized (Medications behind medicationReference too)."""
        self.read(refs)
        meds = [as_str(as_dict(r.get("medicationReference")).get("reference")) for ref in refs if (r := self.resource(ref))]
        self.read([m for m in meds if m])
        medications = {k: v for k, v in self.cache.items() if isinstance(v, dict) and k.startswith("Medication/")}
        out = []
        for ref in refs:
            key = normalize_reference(ref)
            got = self.cache.get(key)
            if isinstance(got, dict):
                out.append(summarize(got, medications))
            else:
                out.append(Evidence(key, key.split("/", 1)[0], problem=str(got or "not read")))
        return out


def patient_label(patient: Json | None) -> dict[str, str]:
    """Name, birth date and sex of a Patient resource, for headers and lists."""
    p = as_dict(patient)
    name = ""
    for n in as_list(p.get("name")):
        n = as_dict(n)
        name = as_str(n.get("text")) or " ".join(filter(None, [*map(str, as_list(n.get("given"))), as_str(n.get("family")) or ""])).strip()
        if name:
            break
    return {"name": name, "birth_date": as_str(p.get("birthDate")) or "", "gender": as_str(p.get("gender")) or ""}
