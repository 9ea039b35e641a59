"""Field checks on the resources the criteria read: what is malformed, named, never fatal.

A resource with a malformed field is kept (the other fields still count); the criterion the
field feeds becomes ``unknown`` or ignores it, and the problem is listed in run.json and the
report. Messages name the field and the reason, never its value (values can be clinical).
"""

from __future__ import annotations

from typing import Any, Callable

from .fhirjson import Json, as_number, parse_date

_COMPARATORS = {"<", "<=", ">=", ">"}


def _date(field: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if parse_date(value) else f"{field} is not a valid date"

    return check


def _object(field: str) -> Callable[[Any], str | None]:
    return lambda v: None if isinstance(v, dict) else f"{field} is not an object"


def _period(field: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"{field} is not an object"
        bad = [k for k in ("start", "end") if k in value and not parse_date(value[k])]
        return f"{field}.{bad[0]} is not a valid date" if bad else None

    return check


def _quantity(field: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"{field} is not an object"
        v = value.get("value")
        if "value" in value and (not isinstance(v, (int, float)) or as_number(v) is None):
            return f"{field}.value is not a number"
        if "comparator" in value and not (isinstance(value["comparator"], str) and value["comparator"] in _COMPARATORS):
            return f"{field}.comparator is not one of < <= >= >"
        return None

    return check


_REFERENCE = _object
_MED = {
    "medicationCodeableConcept": _object("medicationCodeableConcept"),
    "effectiveDateTime": _date("effectiveDateTime"),
    "effectivePeriod": _period("effectivePeriod"),
    "authoredOn": _date("authoredOn"),
    "subject": _REFERENCE("subject"),
}
CHECKS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "Patient": {"birthDate": _date("birthDate"), "deceasedDateTime": _date("deceasedDateTime"), "gender": lambda v: None if isinstance(v, str) else "gender is not a code"},
    "Condition": {"code": _object("code"), "onsetDateTime": _date("onsetDateTime"), "recordedDate": _date("recordedDate"),
                  "clinicalStatus": _object("clinicalStatus"), "verificationStatus": _object("verificationStatus"), "subject": _REFERENCE("subject")},
    "Observation": {"code": _object("code"), "effectiveDateTime": _date("effectiveDateTime"), "effectivePeriod": _period("effectivePeriod"),
                    "issued": _date("issued"), "valueQuantity": _quantity("valueQuantity"), "subject": _REFERENCE("subject"),
                    "status": lambda v: None if isinstance(v, str) else "status is not a code"},
    "MedicationStatement": _MED,
    "MedicationRequest": _MED,
    "MedicationAdministration": _MED,
    "Procedure": {"code": _object("code"), "performedDateTime": _date("performedDateTime"), "performedPeriod": _period("performedPeriod"), "subject": _REFERENCE("subject")},
}


def check_resource(resource: Json) -> list[str]:
    """The malformed fields of a resource, as short reasons."""
    checks = CHECKS.get(resource.get("resourceType", ""), {})
    out = []
    for field, check in checks.items():
        if field in resource:
            reason = check(resource[field])
            if reason:
                out.append(reason)
    if resource.get("resourceType") == "Observation" and "status" not in resource:
        out.append("status is missing (the result is ignored)")
    return out
