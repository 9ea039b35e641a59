"""Reviews on the server: a FHIR ``Task`` when new data contradicts a person's decision.

Why a Task: it is the R4 resource for "someone should do something about this resource"
(``focus`` = the ResearchSubject, ``for`` = the patient), EHR worklists already list Tasks
by status, owner and priority, and a person closes it in any FHIR client by setting its
status. ``intent = proposal``: the matcher suggests, it does not order. A Flag would only
decorate the chart with no owner or state to close; a DetectedIssue is about orders and
medications; a Communication is a message with no lifecycle.

Idempotent like the subjects: each Task is a conditional create on its identifier
(``https://fhir-matcher.org/fhir/review|<trial>/<patient>/<key>/<opened>``), so a resent
night creates nothing twice, and the nightly state remembers the episode so a review is
raised once, not every night. When the data no longer contradicts (or a person changed the
decision), the matcher closes the Task it opened, with ``If-Match``; a Task a person already
closed is left alone.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Iterable

from fhir.resources.R4B.task import Task

from ..fhirjson import Json, as_dict, as_list, as_str, normalize_reference
from ..nightly.decisions import Contradiction
from ..rest.client import FhirClient, FhirError
from ..rest.query import Search
from ..trial import Trial
from .writeback import CONFLICT, IF_MATCH, batch_status

log = logging.getLogger("fhir_matcher")

REVIEW_SYSTEM = "https://fhir-matcher.org/fhir/review"
REVIEW_CODES = "https://fhir-matcher.org/fhir/CodeSystem/review"
REVIEW_CODE = "decision-contradicted"
CLOSED_BY_MATCHER = "closed-by-matcher"  # statusReason code on the Tasks the matcher closes
ACTIVE = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")


@dataclass
class ServerTask:
    id: str
    patient: str
    identifier: str
    key: str
    status: str
    version: str | None
    resource: Json

    @property
    def ref(self) -> str:
        return f"Task/{self.id}"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def closed_by_matcher(self) -> bool:
        return any(as_dict(c).get("code") == CLOSED_BY_MATCHER for c in as_list(as_dict(self.resource.get("statusReason")).get("coding")))


def parse_task(resource: Json, trial: Trial) -> ServerTask | None:
    ident = next((as_str(as_dict(i).get("value")) for i in as_list(resource.get("identifier")) if as_dict(i).get("system") == REVIEW_SYSTEM), None)
    patient = as_str(as_dict(resource.get("for")).get("reference"))
    rid, status = as_str(resource.get("id")), as_str(resource.get("status"))
    if not (ident and patient and rid and status) or not ident.startswith(f"{trial.id}/"):
        return None
    parts = ident.rsplit("/", 2)
    if len(parts) != 3:
        return None
    return ServerTask(rid, normalize_reference(patient), ident, parts[1], status, as_str(as_dict(resource.get("meta")).get("versionId")), resource)


def review_identifier(trial: Trial, c: Contradiction, opened: str) -> str:
    return f"{trial.id}/{c.patient}/{c.key}/{opened}"


def review_task(trial: Trial, c: Contradiction, identifier: str, decided_on: str | None, authored: str, references: bool = True) -> Json:
    """A validated R4 Task asking a person to look at a decision the data now contradicts.

    The evidence goes in ``input`` as references (``references``), or as text for a server
    that refuses a reference to something it no longer holds."""
    when = f" on {decided_on}" if decided_on else ""
    data = {
        "resourceType": "Task",
        "identifier": [{"system": REVIEW_SYSTEM, "value": identifier}],
        "status": "requested",
        "intent": "proposal",
        "priority": "urgent" if c.subject.status.startswith("on-study") else "asap",
        "code": {"coding": [{"system": REVIEW_CODES, "code": REVIEW_CODE, "display": "Review a screening decision against new data"}],
                 "text": "Review a screening decision against new data"},
        "description": (f"{c.subject.status} was set by a person{when} for {trial.id}; the latest screen finds the patient "
                        f"ineligible: {c.reason}. The matcher has not changed the ResearchSubject."),
        "focus": {"reference": c.subject.ref},
        "for": {"reference": c.patient},
        "authoredOn": authored,
        "requester": {"display": "fhir-matcher nightly screen"},
        "reasonCode": {"text": c.reason},
        "input": [{"type": {"text": "criterion"}, "valueString": cid} for cid in c.criteria]
        + [{"type": {"text": "evidence"}, **({"valueReference": {"reference": ref}} if references else {"valueString": ref})} for ref in c.evidence],
    }
    return Task.model_validate(data).model_dump(mode="json", exclude_none=True)


class Reviews:
    def __init__(self, client: FhirClient, trial: Trial, check: str = IF_MATCH):
        self.client = client
        self.trial = trial
        self.check = check
        self.opened = 0
        self.closed = 0

    def tasks(self, resources: Iterable[Json] | None = None) -> dict[str, list[ServerTask]]:
        """Patient -> the matcher's review Tasks for this trial on the server (any status).
        ``resources``: the review Tasks already read for every trial of a portfolio."""
        out: dict[str, list[ServerTask]] = {}
        for r in review_tasks(self.client) if resources is None else resources:
            t = parse_task(r, self.trial)
            if t:
                out.setdefault(t.patient, []).append(t)
        return out

    def create(self, items: Iterable[tuple[Contradiction, str, str | None]], authored: str) -> dict[str, str]:
        """Conditional creates for (contradiction, identifier, decided on); identifier -> Task/<id>."""
        items = list(items)
        if not items:
            return {}
        idents = [ident for _, ident, _ in items]

        def bundle(references: bool) -> Json:
            return {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": review_task(self.trial, c, ident, decided_on, authored, references),
                 "request": {"method": "POST", "url": "Task", "ifNoneExist": f"identifier={REVIEW_SYSTEM}|{ident}"}}
                for c, ident, decided_on in items]}

        try:
            answer = self.client.transaction(bundle(True))
        except FhirError as e:
            if e.status not in (400, 404, 409, 412, 422):
                raise
            # An evidence resource deleted since it was read: name it as text instead.
            log.warning("review Tasks refused with evidence references (%s); sending the evidence as text", e.status)
            answer = self.client.transaction(bundle(False))
        out = {}
        self.opened += sum(1 for e in as_list(answer.get("entry")) if batch_status(e) == 201)  # 200: it was there already
        for ident, e in zip(idents, as_list(answer.get("entry"))):
            location = as_str(as_dict(as_dict(e).get("response")).get("location")) or ""
            parts = location.split("/")
            if "Task" in parts and parts.index("Task") + 1 < len(parts):
                out[ident] = f"Task/{parts[parts.index('Task') + 1]}"
        for ident in set(idents) - set(out):
            found = list(self.client.search(Search("Task").where(identifier=f"{REVIEW_SYSTEM}|{ident}")))
            if not found:
                raise FhirError("the server did not return the review Task it was asked to create")
            out[ident] = f"Task/{found[0]['id']}"
        return out

    def close(self, task: ServerTask, status: str, why: str) -> bool:
        """Close a Task the matcher opened, unless a person already did; True when closed now."""
        for _ in range(3):
            if self.check != IF_MATCH:  # no version check on this server: read it again right before the write
                fresh = self._read(task)
                if fresh is None:
                    return False
                task = fresh
            if not task.active:
                return False
            body = copy.deepcopy(task.resource)
            body.pop("meta", None)
            body["status"] = status
            body["statusReason"] = {"coding": [{"system": REVIEW_CODES, "code": CLOSED_BY_MATCHER, "display": "Closed by fhir-matcher"}], "text": why}
            body = Task.model_validate(body).model_dump(mode="json", exclude_none=True)
            request = {"method": "PUT", "url": f"Task/{task.id}"}
            if self.check == IF_MATCH and task.version:
                request["ifMatch"] = f'W/"{task.version}"'
            answer = self.client.transaction({"resourceType": "Bundle", "type": "batch", "entry": [{"resource": body, "request": request}]})
            code = batch_status((as_list(answer.get("entry")) or [{}])[0])
            if 200 <= code < 300:
                self.closed += 1
                return True
            if code not in CONFLICT:
                raise FhirError(f"closing review {task.ref}: HTTP {code}")
            fresh = self._read(task)  # a person changed it meanwhile: look again
            if fresh is None:
                return False
            task = fresh
        return False

    def _read(self, task: ServerTask) -> ServerTask | None:
        try:
            return parse_task(self.client.request("GET", f"Task/{task.id}"), self.trial)
        except FhirError as e:
            if e.status in (404, 410):
                return None
            raise


def review_search() -> Search:
    return Search("Task").where(code=f"{REVIEW_CODES}|{REVIEW_CODE}").count(1000)


def review_tasks(client: FhirClient) -> list[Json]:
    """Every review Task the matcher raised on the server, for any trial (one search)."""
    return list(client.search(review_search()))
