"""ResearchStudy and ResearchSubject resources, built and validated with fhir.resources (R4B).

The Bundle is a transaction keyed on identifiers: the study is a conditional update, each
subject a conditional create (``ifNoneExist``), so the same file can be POSTed to a server
any number of times without creating duplicates, and never overwrites a status a person set
on a subject already there (issue 11). Keeping existing subjects up to date is the nightly
job's work, with a version check.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Iterable

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject

from ..criteria.evaluate import INELIGIBLE, PatientResult
from ..trial import Trial

SUBJECT_SYSTEM = "https://fhir-matcher.org/fhir/research-subject"
REASON_URL = "https://fhir-matcher.org/fhir/StructureDefinition/screening-reason"
_NS = uuid.UUID("6f1c2a44-5a0e-4b8e-9a53-2f7f3c1d9e10")


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '|'.join(parts))}"


def study_identifier(trial: Trial) -> tuple[str, str]:
    return trial.identifier_system, trial.id


def subject_identifier(trial: Trial, patient: str) -> tuple[str, str]:
    return SUBJECT_SYSTEM, f"{trial.id}/{patient}"


def research_study(trial: Trial) -> ResearchStudy:
    system, value = study_identifier(trial)
    return ResearchStudy.model_validate(
        {
            "resourceType": "ResearchStudy",
            "identifier": [{"system": system, "value": value}],
            "title": trial.title,
            "status": "active",
            "description": trial.description or None,
            "condition": [{"coding": [c], "text": c.get("display")} for c in trial.conditions] or None,
        }
    )


def subject_json(trial: Trial, patient: str, status: str, study_ref: str, reason: str | None = None) -> dict[str, Any]:
    system, value = subject_identifier(trial, patient)
    data: dict[str, Any] = {
        "resourceType": "ResearchSubject",
        "identifier": [{"system": system, "value": value}],
        "status": status,
        "study": {"reference": study_ref},
        "individual": {"reference": patient},
    }
    if reason:
        data["extension"] = [{"url": REASON_URL, "valueString": reason}]
    return data


def research_subject(trial: Trial, result: PatientResult, study_ref: str, reason: str | None = None) -> ResearchSubject:
    """A validated R4 ResearchSubject for one patient."""
    return ResearchSubject.model_validate(subject_json(trial, result.patient, result.status, study_ref, reason))


def subjects_bundle(trial: Trial, results: Iterable[PatientResult]) -> Bundle:
    """Transaction Bundle: the ResearchStudy and a ResearchSubject per (potential) candidate."""
    study_urn = _urn("study", trial.id)
    s_system, s_value = study_identifier(trial)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": study_urn,
            "resource": research_study(trial).model_dump(mode="json", exclude_none=True),
            "request": {"method": "PUT", "url": f"ResearchStudy?identifier={s_system}|{s_value}"},
        }
    ]
    for r in results:
        if r.status == INELIGIBLE:
            continue
        system, value = subject_identifier(trial, r.patient)
        entries.append(
            {
                "fullUrl": _urn("subject", trial.id, r.patient),
                "resource": subject_json(trial, r.patient, r.status, study_urn),
                "request": {"method": "POST", "url": "ResearchSubject", "ifNoneExist": f"identifier={system}|{value}"},
            }
        )
    return Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": entries})  # validates every entry


# Streaming research-subjects.json (issue 15): the same bytes as subjects_bundle(...).model_dump_json(indent=2,
# exclude_none=True) + "\n", written entry by entry. Each entry is still validated by fhir.resources.
_ENTRIES_OPEN = '\n  "entry": [\n'
_ENTRIES_CLOSE = "\n  ]\n}"


def _entries_text(bundle: Bundle) -> str:
    text = bundle.model_dump_json(indent=2, exclude_none=True)
    start = text.index(_ENTRIES_OPEN) + len(_ENTRIES_OPEN)
    assert text.endswith(_ENTRIES_CLOSE), "unexpected Bundle layout"
    return text[start : -len(_ENTRIES_CLOSE)]


def subjects_head(trial: Trial) -> str:
    """research-subjects.json up to and including the ResearchStudy entry."""
    text = subjects_bundle(trial, ()).model_dump_json(indent=2, exclude_none=True)
    return text[: -len(_ENTRIES_CLOSE)]


SUBJECTS_TAIL = _ENTRIES_CLOSE + "\n"


def _validated_entry_text(trial: Trial, patient: str, status: str) -> str:
    system, value = subject_identifier(trial, patient)
    entry = {
        "fullUrl": _urn("subject", trial.id, patient),
        "resource": subject_json(trial, patient, status, _urn("study", trial.id)),
        "request": {"method": "POST", "url": "ResearchSubject", "ifNoneExist": f"identifier={system}|{value}"},
    }
    return _entries_text(Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": [entry]}))


# A patient reference made of these characters is written as it is in JSON and is a valid FHIR
# string: its entry is the validated entry of a stand-in patient with the reference put in.
_PLAIN = re.compile(r"[A-Za-z0-9._:/\-]{1,256}")
_STAND_IN = "Patient/fhir-matcher-stand-in"
_TEMPLATES: dict[tuple[str, str], str] = {}


def subject_entry_text(trial: Trial, patient: str, status: str) -> str:
    """One ResearchSubject entry as it appears in research-subjects.json (validated); the
    writer puts ",\\n" before each.

    Validating a Bundle per subject cost a tenth of a screen's time: the entry of a plain
    reference is validated once per trial and status, with a stand-in patient."""
    if not _PLAIN.fullmatch(patient) or _STAND_IN in patient:
        return _validated_entry_text(trial, patient, status)
    key = (trial.id, status)
    template = _TEMPLATES.get(key)
    if template is None:
        template = _TEMPLATES[key] = _validated_entry_text(trial, _STAND_IN, status)
    return template.replace(_urn("subject", trial.id, _STAND_IN), _urn("subject", trial.id, patient)).replace(_STAND_IN, patient)
