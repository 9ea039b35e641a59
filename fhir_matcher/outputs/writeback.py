"""Write-back: the trial's ResearchStudy and one ResearchSubject per (former) candidate.

The study is created once (conditional create on its identifier). A new subject is a
conditional create on an identifier built from the study and the patient; an existing one
is updated by id, only when the matcher owns its status (see ``nightly.decisions``), with
``If-Match`` on the version just read, in batch Bundles. A 412 (HAPI answers 409) means a
person changed it meanwhile: it is read again and decided again, never overwritten. On a
server without versioned updates each batch's subjects are read again right before the
write. Re-sending the same subject changes nothing, so a run that died midway is simply
redone. Nothing is ever deleted: a former candidate keeps its record, as ``ineligible``,
with the reason.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pydantic import ValidationError

from ..criteria.evaluate import INELIGIBLE, PatientResult, deciding, still_to_do
from ..fhirjson import Json, as_dict, as_list, as_str, normalize_reference
from ..nightly.decisions import ServerSubject, parse_subject
from ..rest.client import FhirClient, FhirError
from ..rest.query import Search
from ..trial import Trial
from .subjects import REASON_URL, SUBJECT_SYSTEM, research_study, research_subject, study_identifier, subject_identifier

log = logging.getLogger("fhir_matcher")

IF_MATCH, RE_READ = "if-match", "re-read"
CONFLICT = (409, 412)  # FHIR says 412 for a stale If-Match; HAPI answers 409
ROUNDS = 3  # a subject still changing under us after this many re-reads is left for the next night


def version_check(capabilities: Json, resource_type: str = "ResearchSubject") -> str:
    """``if-match`` when the CapabilityStatement says the server honours versioned updates
    for the type (``versioning = versioned-update``), else ``re-read``."""
    for rest in as_list(capabilities.get("rest")):
        for res in as_list(as_dict(rest).get("resource")):
            res = as_dict(res)
            if res.get("type") == resource_type:
                return IF_MATCH if res.get("versioning") == "versioned-update" else RE_READ
    return RE_READ


def reason_of(resource: Json) -> str | None:
    for e in as_list(resource.get("extension")):
        if as_dict(e).get("url") == REASON_URL:
            return as_str(as_dict(e).get("valueString"))
    return None


def batch_status(entry: Any) -> int:
    try:
        return int(str(as_dict(as_dict(entry).get("response")).get("status", "200")).split()[0])
    except ValueError:
        return 500


@dataclass
class SubjectWrite:
    """One subject to write: the status and reason the matcher wants, over what the server had."""

    result: PatientResult
    status: str
    reason: str
    current: ServerSubject | None = None

    def unchanged(self) -> bool:
        return self.current is not None and self.current.status == self.status and reason_of(self.current.resource) == self.reason


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
        self.check = IF_MATCH  # set from the CapabilityStatement by the caller (version_check)
        self.conflicts = 0  # writes refused because the subject changed since it was read
        self.turned: dict[str, ServerSubject] = {}  # patient -> subject a person decided meanwhile
        self.problems: list[str] = []

    def ensure_study(self) -> str:
        """``ResearchStudy/<id>`` on the server, created if missing (conditional create)."""
        return ensure_studies(self.client, [self.trial])[self.trial.id]

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

    def subjects(self, study: str) -> dict[str, list[ServerSubject]]:
        """Patient reference -> the study's ResearchSubjects on the server now (whole resources)."""
        return subjects_of(self.client, [study])[study]

    def reread(self, ids: Sequence[str]) -> dict[str, ServerSubject]:
        """The current version of these subjects (by id), in as few searches as fit a URL."""
        out = {}
        for search in Search("ResearchSubject").count(1000).chunked("_id", list(ids), base=self.client.base):
            for r in self.client.search(search):
                s = parse_subject(r, SUBJECT_SYSTEM)
                if s:
                    out[s.id] = s
        return out

    def _body(self, item: SubjectWrite, study: str) -> Json:
        if item.current is None:
            written = PatientResult(item.result.patient, item.status, item.result.criteria)
            return research_subject(self.trial, written, study, item.reason).model_dump(mode="json", exclude_none=True)
        # Update only what the matcher owns: status and its reason; keep what anyone else added.
        body = copy.deepcopy(item.current.resource)
        meta = {k: v for k, v in as_dict(body.get("meta")).items() if k not in ("versionId", "lastUpdated", "source")}
        body.pop("meta", None)
        if meta:
            body["meta"] = meta
        body["status"] = item.status
        ext = [e for e in as_list(body.get("extension")) if as_dict(e).get("url") != REASON_URL]
        body["extension"] = [*ext, {"url": REASON_URL, "valueString": item.reason}] if item.reason else ext
        if not body["extension"]:
            del body["extension"]
        from fhir.resources.R4B.researchsubject import ResearchSubject

        return ResearchSubject.model_validate(body).model_dump(mode="json", exclude_none=True)

    def _entry(self, item: SubjectWrite, study: str) -> Json:
        body = self._body(item, study)
        if item.current is None:
            system, value = subject_identifier(self.trial, item.result.patient)
            return {"resource": body, "request": {"method": "POST", "url": "ResearchSubject", "ifNoneExist": f"identifier={system}|{value}"}}
        request = {"method": "PUT", "url": f"ResearchSubject/{item.current.id}"}
        if self.check == IF_MATCH and item.current.version:
            request["ifMatch"] = f'W/"{item.current.version}"'
        return {"resource": body, "request": request}

    def _refresh(self, item: SubjectWrite, now: ServerSubject | None) -> SubjectWrite | None:
        """Decide again on what the server holds now: None when there is nothing left to write."""
        if now is None:  # deleted meanwhile: a person's doing; never recreated behind their back
            self.turned[item.result.patient] = ServerSubject(item.current.id if item.current else "?", item.result.patient, "deleted", None, None, False)
            return None
        if now.is_decision:
            self.turned[item.result.patient] = now
            return None
        item = SubjectWrite(item.result, item.status, item.reason, now)
        return None if item.unchanged() else item

    def write(self, study: str, items: Iterable[SubjectWrite | tuple]) -> int:
        """Write subjects in batches of ``chunk``; returns how many the server took.

        Items are ``SubjectWrite`` (or ``(result, status, reason[, current])`` tuples).
        """
        todo = [i if isinstance(i, SubjectWrite) else SubjectWrite(*i) for i in items]
        done = 0
        for i in range(0, len(todo), self.chunk):
            part = todo[i : i + self.chunk]
            for _ in range(ROUNDS):
                if self.check == RE_READ:  # no version check on this server: read again right before writing
                    now = self.reread([w.current.id for w in part if w.current])
                    part = [r for w in part if (r := (w if w.current is None else self._refresh(w, now.get(w.current.id))))]
                if not part:
                    break
                entries, kept = [], []
                for w in part:
                    try:
                        entries.append(self._entry(w, study))
                        kept.append(w)
                    except ValidationError as e:
                        self.problems.append(f"{w.current.ref if w.current else w.result.patient}: ResearchSubject not updated, it would not be valid R4 ({e.error_count()} error(s))")
                if not entries:
                    break
                answer = self.client.transaction({"resourceType": "Bundle", "type": "batch", "entry": entries})
                answers = as_list(answer.get("entry"))
                if len(answers) != len(entries):
                    raise FhirError(f"write-back: the server answered {len(answers)} of {len(entries)} batch entries")
                again, refused = [], []
                for w, e in zip(kept, answers):
                    code = batch_status(e)
                    if 200 <= code < 300:
                        done += 1
                    elif code in CONFLICT and w.current is not None:
                        self.conflicts += 1
                        again.append(w)
                    elif code == 412:  # a conditional create that matches several subjects
                        self.problems.append(f"{w.result.patient}: several ResearchSubjects on the server carry its identifier; none written")
                    else:
                        refused.append(code)
                if refused:
                    raise FhirError(f"write-back: the server refused {len(refused)} ResearchSubject(s) (HTTP {', '.join(map(str, sorted(set(refused))))})")
                if not again:
                    break
                log.info("write-back: %d subject(s) changed on the server since they were read; reading them again", len(again))
                now = self.reread([w.current.id for w in again if w.current])
                part = [r for w in again if (r := self._refresh(w, now.get(w.current.id) if w.current else None))]
            else:
                if part:
                    self.problems.append(f"{len(part)} ResearchSubject(s) kept changing on the server while being written; left for the next night")
        self.written += done
        return done



def ensure_studies(client: FhirClient, trials: Sequence[Trial]) -> dict[str, str]:
    """Trial id -> ``ResearchStudy/<id>`` on the server, each created if missing (conditional
    creates), for a whole portfolio in one transaction."""
    entries = []
    for trial in trials:
        system, value = study_identifier(trial)
        entries.append({
            "resource": research_study(trial).model_dump(mode="json", exclude_none=True),
            "request": {"method": "POST", "url": "ResearchStudy", "ifNoneExist": f"identifier={system}|{value}"},
        })
    answer = client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    answers = as_list(answer.get("entry"))
    out = {}
    for n, trial in enumerate(trials):
        location = as_str(as_dict(as_dict(answers[n] if n < len(answers) else {}).get("response")).get("location")) or ""
        parts = location.split("/")
        if "ResearchStudy" in parts and parts.index("ResearchStudy") + 1 < len(parts):
            out[trial.id] = f"ResearchStudy/{parts[parts.index('ResearchStudy') + 1]}"
            continue
        system, value = study_identifier(trial)
        found = list(client.search(Search("ResearchStudy").where(identifier=f"{system}|{value}")))
        if not found:
            raise FhirError("the server did not return the ResearchStudy it was asked to create")
        out[trial.id] = f"ResearchStudy/{found[0]['id']}"
    return out


def subjects_of(client: FhirClient, studies: Sequence[str]) -> dict[str, dict[str, list[ServerSubject]]]:
    """Study -> patient reference -> its ResearchSubjects on the server now (whole resources),
    for several studies in one search."""
    out: dict[str, dict[str, list[ServerSubject]]] = {study: {} for study in studies}
    for search in subject_searches(studies):
        for r in client.search(search):
            study = normalize_reference(as_str(as_dict(r.get("study")).get("reference")) or "")
            subject = parse_subject(r, SUBJECT_SYSTEM)
            if subject and study in out:
                out[study].setdefault(subject.patient, []).append(subject)
    return out


def subject_searches(studies: Sequence[str]) -> list[Search]:
    """The searches ``subjects_of`` reads (40 study references keep each URL short)."""
    ordered = list(studies)
    return [Search("ResearchSubject").where(study=ordered[start:start + 40]).count(1000) for start in range(0, len(ordered), 40)]
