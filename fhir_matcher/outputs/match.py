"""``fhir-matcher match``: one patient against every trial, as a FHIR R4 searchset Bundle.

One ResearchSubject per trial (``search.mode`` = match, candidates first), with the status,
the reason and the evidence as extensions, and each trial's ResearchStudy (``search.mode`` =
include, identified by the trial id). Built and validated with the R4B models.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Sequence

from fhir.resources.R4B.bundle import Bundle

from ..criteria.evaluate import CANDIDATE, INELIGIBLE, POTENTIAL, PatientResult, deciding, still_to_do
from ..trial import Trial
from .subjects import _urn, research_study, subject_json

EVIDENCE_URL = "https://fhir-matcher.org/fhir/StructureDefinition/screening-evidence"
CRITERION_URL = "https://fhir-matcher.org/fhir/StructureDefinition/screening-criterion"
_RANK = {CANDIDATE: 0, POTENTIAL: 1, INELIGIBLE: 2}
_SCORE = {CANDIDATE: 1.0, POTENTIAL: 0.5, INELIGIBLE: 0.0}


def match_reason(trial: Trial, result: PatientResult) -> str:
    """Why this status: the criteria that rule the patient out, or what is still to do."""
    if result.status == INELIGIBLE:
        return "; ".join(f"{cid}: {result.criteria[cid].reason}" for cid in deciding(trial, result.criteria))
    todo = still_to_do(trial, result.criteria)
    return "; ".join(todo) if todo else "every computable criterion is in the patient's favour; manual checks remain"


def match_bundle(patient: str, outcomes: Sequence[tuple[Trial, PatientResult | None, str]], as_of: date) -> dict[str, Any]:
    """``outcomes``: (trial, result or None when the patient is outside its cohort, note)."""
    rows = []
    for trial, result, note in outcomes:
        status = result.status if result is not None else INELIGIBLE
        rows.append((_RANK[status], trial.id, trial, result, status, note))
    rows.sort(key=lambda x: (x[0], x[1]))
    entries: list[dict[str, Any]] = []
    for _, _, trial, result, status, note in rows:
        reason = match_reason(trial, result) if result is not None else note
        subject = subject_json(trial, patient, status, _urn("study", trial.id), reason)
        subject["id"] = f"{trial.id}-{patient.split('/', 1)[-1]}"[:64]
        if result is not None:
            for cid, o in result.criteria.items():
                subject.setdefault("extension", []).append({
                    "url": CRITERION_URL,
                    "extension": [
                        {"url": "criterion", "valueString": cid},
                        {"url": "result", "valueCode": o.result},
                        {"url": "reason", "valueString": o.reason or "-"},
                        *[{"url": "evidence", "valueReference": {"reference": e}} for e in o.evidence],
                    ],
                })
        entries.append({"fullUrl": _urn("match", trial.id, patient), "resource": subject, "search": {"mode": "match", "score": _SCORE[status]}})
    for _, _, trial, _, _, _ in rows:
        study = research_study(trial).model_dump(mode="json", exclude_none=True)
        study["id"] = trial.id
        entries.append({"fullUrl": _urn("study", trial.id), "resource": study, "search": {"mode": "include"}})
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(rows),
        "meta": {"tag": [{"system": "https://fhir-matcher.org/fhir/as-of", "code": as_of.isoformat()}]},
        "entry": entries,
    }
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)
