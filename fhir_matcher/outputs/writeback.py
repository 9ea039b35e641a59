"""Write-back: the trial's ResearchStudy and one ResearchSubject per (former) candidate.

The study is created once (conditional create on its identifier); each subject is a
conditional update on an identifier built from the study and the patient, in transaction
Bundles. Re-sending the same subject changes nothing, so a run that died midway is simply
redone. Nothing is ever deleted: a former candidate keeps its record, as ``ineligible``,
with the reason.
"""

from __future__ import annotations

from typing import Iterable

from ..engine.evaluate import INELIGIBLE, PatientResult, deciding, still_to_do
from ..fhirjson import as_dict, as_list, as_str, normalize_reference
from ..rest.client import FhirClient, FhirError
from ..rest.query import Search
from ..trial import Trial
from .subjects import research_study, research_subject, study_identifier, subject_identifier


def subject_reason(trial: Trial, result: PatientResult) -> str:
    """One line for ResearchSubject: why ineligible, or what is left to do."""
    if result.status == INELIGIBLE:
        return "; ".join(f"{cid}: {result.criteria[cid].reason}" for cid in deciding(trial, result.criteria))
    return "; ".join([*still_to_do(trial, result.criteria), "manual checks remain"])


class WriteBack:
    def __init__(self, client: FhirClient, trial: Trial, *, chunk: int = 100):
        self.client = client
        self.trial = trial
        self.chunk = chunk
        self.written = 0

    def ensure_study(self) -> str:
        """``ResearchStudy/<id>`` on the server, created if missing (conditional create)."""
        system, value = study_identifier(self.trial)
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{
                "resource": research_study(self.trial).model_dump(mode="json", exclude_none=True),
                "request": {"method": "POST", "url": "ResearchStudy", "ifNoneExist": f"identifier={system}|{value}"},
            }],
        }
        answer = self.client.transaction(bundle)
        location = as_str(as_dict(as_dict((answer.get("entry") or [{}])[0]).get("response")).get("location")) or ""
        parts = location.split("/")
        if "ResearchStudy" in parts and parts.index("ResearchStudy") + 1 < len(parts):
            return f"ResearchStudy/{parts[parts.index('ResearchStudy') + 1]}"
        found = list(self.client.search(Search("ResearchStudy").where(identifier=f"{system}|{value}")))
        if not found:
            raise FhirError("the server did not return the ResearchStudy it was asked to create")
        return f"ResearchStudy/{found[0]['id']}"

    def existing(self, study: str) -> dict[str, str]:
        """Patient reference -> status of the subjects already on the server for this study."""
        out = {}
        search = Search("ResearchSubject").where(study=study).elements("status", "individual", "identifier").count(1000)
        for r in self.client.search(search):
            patient = as_str(as_dict(r.get("individual")).get("reference"))
            status = as_str(r.get("status"))
            if patient and status:
                out[normalize_reference(patient)] = status
        return out

    def write(self, study: str, items: Iterable[tuple[PatientResult, str, str]]) -> int:
        """Conditional updates for (result, status to write, reason), in transactions."""
        entries = []
        for result, status, reason in items:
            written = PatientResult(result.patient, status, result.criteria)
            subject = research_subject(self.trial, written, study, reason)
            system, value = subject_identifier(self.trial, result.patient)
            entries.append({
                "resource": subject.model_dump(mode="json", exclude_none=True),
                "request": {"method": "PUT", "url": f"ResearchSubject?identifier={system}|{value}"},
            })
        for i in range(0, len(entries), self.chunk):
            part = entries[i : i + self.chunk]
            answer = self.client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": part})
            bad = [as_dict(e.get("response")) for e in as_list(answer.get("entry")) if not str(as_dict(e.get("response")).get("status", "2")).startswith("2")]
            if bad:
                raise FhirError(f"write-back: the server refused {len(bad)} ResearchSubject(s)")
            self.written += len(part)
        return len(entries)

