"""One record per patient: what every source produces and the engine reads."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Iterator

from .fhirjson import Json, as_list, as_str, normalize_reference, ref_of, subject_reference
from .record_checks import check_resource

log = logging.getLogger("fhir_matcher")
_SALT = secrets.token_bytes(16)  # per run: a patient in a log line cannot be looked up


def patient_hash(ref: str) -> str:
    """How a patient appears in logs, if at all: a salted hash, never the id."""
    return "Patient#" + hashlib.sha256(_SALT + ref.encode()).hexdigest()[:10]


@dataclass
class Problem:
    """A piece of input that was skipped or is malformed: where, which resource, why.

    The full text goes to run.json and the report (owner-only files); the log line at the
    default level carries the location and resource type only, never an id or a value.
    """

    where: str
    reason: str
    resource: str | None = None  # "Observation/123"

    def __str__(self) -> str:
        return f"{self.where} ({self.resource}): {self.reason}" if self.resource else f"{self.where}: {self.reason}"

    def log_text(self) -> str:
        rtype = f" ({self.resource.split('/', 1)[0]})" if self.resource else ""
        return f"{self.where}{rtype}: {self.reason}"


@dataclass
class PatientRecord:
    key: str  # "Patient/<id>"
    patient: Json
    resources: dict[str, list[Json]] = field(default_factory=dict)
    medications: dict[str, Json] = field(default_factory=dict)  # shared Medication resources by reference

    def of_type(self, *types: str) -> list[Json]:
        out: list[Json] = []
        for t in types:
            out.extend(self.resources.get(t, ()))
        return out

    def medication(self, ref: str, container: Json) -> Json | None:
        """Resolve a medicationReference: contained (#id) or a shared Medication."""
        if ref.startswith("#"):
            for c in as_list(container.get("contained")):
                if isinstance(c, dict) and c.get("id") == ref[1:]:
                    return c
            return None
        return self.medications.get(ref) or self.medications.get(normalize_reference(ref))


class RecordBuilder:
    """Collects resources from any number of inputs and groups them per patient.

    References may point forward (NDJSON: Condition.ndjson before Patient.ndjson), so the
    grouping happens in ``records()`` after everything was added.
    """

    def __init__(self) -> None:
        self.patients: dict[str, Json] = {}
        self.aliases: dict[str, str] = {}  # urn:uuid / absolute fullUrl -> Patient/<id>
        self.pending: dict[str, Json] = {}  # Type/id -> resource (deduplicated)
        self.pending_subject: dict[str, str] = {}
        self.medications: dict[str, Json] = {}
        self.problems: list[Problem] = []
        self._anon = 0

    def problem(self, where: str, reason: str, resource: str | None = None) -> None:
        p = Problem(where, reason, resource)
        self.problems.append(p)
        log.warning("%s", p.log_text())
        log.debug("%s", p)

    def add_patient(self, resource: Json, where: str, full_url: str | None = None) -> None:
        pid = as_str(resource.get("id"))
        if not pid and full_url:
            pid = full_url.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        if not pid:
            self.problem(where, "Patient without id or fullUrl")
            return
        key = f"Patient/{pid}"
        if full_url:
            self.aliases[full_url] = key
        for reason in check_resource(resource):
            self.problem(where, reason, key)
        if key in self.patients and self.patients[key] != resource:
            self.problem(where, "the same Patient id appears again with other content; the newest is used", key)
        if key in self.patients and _newer(self.patients[key], resource):
            return
        self.patients[key] = resource

    def add(self, resource: Json, where: str, full_url: str | None = None, local: dict[str, str] | None = None) -> None:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            self.problem(where, "not a FHIR resource (no resourceType)")
            return
        if rtype == "Patient":
            self.add_patient(resource, where, full_url)
            return
        if rtype == "Medication":
            for ref in filter(None, (full_url, f"Medication/{resource.get('id')}" if resource.get("id") else None)):
                self.medications[ref] = resource
            return
        subject = subject_reference(resource)
        if not subject:
            self.problem(where, f"{rtype} has no subject or patient reference (skipped)", ref_of(resource))
            return
        for reason in check_resource(resource):
            self.problem(where, reason, ref_of(resource))
        if subject.startswith("urn:") and local and subject in local:
            subject = local[subject]
        elif not subject.startswith("urn:"):
            subject = normalize_reference(subject)
        if not (subject.startswith("Patient/") or subject.startswith("urn:")):
            return  # about a Group, Location or Device: not patient data
        rid = as_str(resource.get("id"))
        if rid:
            key = f"{rtype}/{rid}"
        else:
            self._anon += 1
            key = f"{rtype}/#{self._anon}"
        old = self.pending.get(key)
        if old is not None and old != resource:
            self.problem(where, "the same id appears again with other content; the newest (meta.lastUpdated, else the last read) is used", key)
        if old is not None and _newer(old, resource):
            return
        self.pending[key] = resource
        self.pending_subject[key] = subject

    def forget(self, keys: set[str]) -> None:
        """Drop these patients and every resource about them (their records were handed over)."""
        for key in keys:
            self.patients.pop(key, None)
        for k in [k for k, subj in self.pending_subject.items() if self.aliases.get(subj, subj) in keys]:
            del self.pending[k]
            del self.pending_subject[k]

    def conditions_by_patient(self) -> dict[str, list[Json]]:
        """Condition codes read so far, per patient (for the cohort gate)."""
        out: dict[str, list[Json]] = {}
        for key, r in self.pending.items():
            if r.get("resourceType") == "Condition" and isinstance(r.get("code"), dict):
                subject = self.pending_subject[key]
                out.setdefault(self.aliases.get(subject, subject), []).append(r["code"])
        return out

    def records(self, only: set[str] | None = None) -> Iterator[PatientRecord]:
        """One record per patient (``only``: just these patients, e.g. the cohort)."""
        grouped: dict[str, dict[str, list[Json]]] = {}
        orphans: dict[str, int] = {}
        for key, resource in self.pending.items():
            subject = self.pending_subject[key]
            subject = self.aliases.get(subject, subject)
            if only is not None and subject not in only:
                continue
            if subject not in self.patients:
                orphans[subject] = orphans.get(subject, 0) + 1
                continue
            grouped.setdefault(subject, {}).setdefault(resource["resourceType"], []).append(resource)
        for subject, count in sorted(orphans.items()):
            self.problem(f"{count} resource(s)", "they reference a patient who is not in the source (skipped)", patient_hash(subject))
        for key in sorted(self.patients):
            if only is None or key in only:
                yield PatientRecord(key, self.patients[key], grouped.get(key, {}), self.medications)


def _newer(old: Json, new: Json) -> bool:
    """True when ``old`` is strictly newer than ``new`` by meta.lastUpdated."""
    a = as_str((old.get("meta") or {}).get("lastUpdated")) if isinstance(old.get("meta"), dict) else None
    b = as_str((new.get("meta") or {}).get("lastUpdated")) if isinstance(new.get("meta"), dict) else None
    return bool(a and b and a > b)


