"""A coordinator's decision, written to the server as a ResearchSubject update with a version check.

The page shows the subject at some version; the decision is written only onto that version
(``If-Match: W/"<version>"``, and the subject is read again first so a server without
versioned updates is checked too). Anything else is a ``Stale`` answer: "changed by someone
else", never a silent overwrite. Statuses are those of ``nightly.decisions``: anything but
the matcher's own three is a person's decision, which no night writes over.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone

from fhir.resources.R4B.researchsubject import ResearchSubject
from pydantic import ValidationError

from ..fhirjson import Json, as_dict, as_list, as_str
from ..nightly.decisions import MATCHER_OWNED, ServerSubject, decision_of, ours_of, parse_subject
from ..outputs.subjects import SUBJECT_SYSTEM, subject_json
from ..outputs.writeback import CONFLICT
from ..rest.client import FhirClient, FhirError
from ..rest.query import Search
from ..trial import Trial

# The statuses a coordinator sets here, in the order of the enrolment path (R4 codes).
CHOICES = ("eligible", "screening", "pending-on-study", "on-study", "not-registered")
LABELS = {
    "candidate": "Candidate",
    "potential-candidate": "Potential candidate",
    "ineligible": "Ineligible",
    "eligible": "Eligible",
    "screening": "Screening",
    "pending-on-study": "Pending on-study",
    "on-study": "On study",
    "not-registered": "Not registered",
    "withdrawn": "Withdrawn",
    "off-study": "Off study",
    "follow-up": "Follow-up",
}
NEEDS_REASON = ("not-registered",)
# The natural next step from each status (shown as the primary button).
NEXT = {None: "eligible", "candidate": "eligible", "potential-candidate": "eligible", "ineligible": "eligible",
        "eligible": "screening", "screening": "pending-on-study", "pending-on-study": "on-study"}
DECISION_REASON_URL = "https://fhir-matcher.org/fhir/StructureDefinition/decision-reason"


class Stale(Exception):
    """The subject changed on the server since the page was shown."""


class DecisionError(Exception):
    """The decision cannot be written (bad input or the server refused); the message says why."""


@dataclass
class Written:
    subject: str  # ResearchSubject/<id>
    before: str | None
    after: str
    version: str | None
    last_updated: str | None


def choices(current: str | None) -> list[str]:
    """The buttons: every coordinator status but the current one."""
    return [c for c in CHOICES if c != current]


def study_ref(client: FhirClient, trial: Trial) -> str | None:
    """``ResearchStudy/<id>`` of the trial on the server (the nightly created it), or None."""
    found = list(client.search(Search("ResearchStudy").where(identifier=f"{trial.identifier_system}|{trial.id}").elements("id")))
    return f"ResearchStudy/{found[0]['id']}" if found else None


def subjects_of(client: FhirClient, study: str, patient: str) -> list[ServerSubject]:
    search = Search("ResearchSubject").where(study=study, individual=patient).count(100)
    return [s for r in client.search(search) if (s := parse_subject(r, SUBJECT_SYSTEM))]


def shown_subject(subjects: list[ServerSubject]) -> ServerSubject | None:
    """The subject the page shows and decides on: a person's decision first, else the matcher's."""
    return decision_of(subjects) or ours_of(subjects)


def _version(resource: Json) -> str | None:
    return as_str(as_dict(resource.get("meta")).get("versionId"))


def _body(current: Json, status: str, reason: str | None, user: str, now: str) -> Json:
    """The subject as it is with only the status (and the decision's note) changed."""
    body = copy.deepcopy(current)
    meta = {k: v for k, v in as_dict(body.get("meta")).items() if k not in ("versionId", "lastUpdated", "source")}
    body.pop("meta", None)
    if meta:
        body["meta"] = meta
    body["status"] = status
    ext = [e for e in as_list(body.get("extension")) if as_dict(e).get("url") != DECISION_REASON_URL]
    note = f"{status} by {user} on {now[:10]}" + (f": {reason}" if reason else "")
    body["extension"] = [*ext, {"url": DECISION_REASON_URL, "valueString": note}]
    try:
        return ResearchSubject.model_validate(body).model_dump(mode="json", exclude_none=True)
    except ValidationError as e:
        raise DecisionError(f"the ResearchSubject would not be valid R4 ({e.error_count()} error(s)); nothing written") from None


def write_decision(
    client: FhirClient,
    trial: Trial,
    study: str | None,
    patient: str,
    subject_id: str | None,
    page_version: str | None,
    status: str,
    reason: str | None,
    user: str,
) -> Written:
    """Set ``status`` on the subject the page showed (``subject_id`` at ``page_version``), or
    create it when the page showed none. Raises ``Stale`` when the server holds anything else."""
    if status not in CHOICES:
        raise DecisionError(f"{status!r} is not a status a coordinator sets here")
    if status in NEEDS_REASON and not (reason or "").strip():
        raise DecisionError("a reason is needed for 'not registered'")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if subject_id:
        try:
            current = client.request("GET", f"ResearchSubject/{subject_id}")
        except FhirError as e:
            if e.status in (404, 410):
                raise Stale("the ResearchSubject was deleted on the server since this page was shown") from None
            raise
        before = as_str(current.get("status"))
        if _version(current) != page_version:
            raise Stale(f"the ResearchSubject was changed by someone else since this page was shown (now: {LABELS.get(before or '', before)})")
        headers = {"If-Match": f'W/"{page_version}"'} if page_version else {}
        try:
            saved = client.request("PUT", f"ResearchSubject/{subject_id}", _body(current, status, reason, user, now), headers=headers)
        except FhirError as e:
            if e.status in CONFLICT:
                raise Stale("the ResearchSubject was changed by someone else since this page was shown") from None
            raise
        return Written(f"ResearchSubject/{subject_id}", before, status, _version(saved), as_str(as_dict(saved.get("meta")).get("lastUpdated")))
    # The page showed no subject: create one, unless one appeared meanwhile.
    if study is None:
        raise DecisionError("the trial's ResearchStudy is not on the server yet (the nightly job creates it); nothing written")
    if subjects_of(client, study, patient):
        raise Stale("a ResearchSubject for this patient was created by someone else since this page was shown")
    system, value = SUBJECT_SYSTEM, f"{trial.id}/{patient}"
    body = _body(subject_json(trial, patient, status, study), status, reason, user, now)
    try:
        saved = client.request("POST", "ResearchSubject", body, headers={"If-None-Exist": f"identifier={system}|{value}"})
    except FhirError as e:
        if e.status in CONFLICT:
            raise Stale("a ResearchSubject for this patient was created by someone else since this page was shown") from None
        raise
    if as_str(saved.get("status")) != status:  # the conditional create found one: someone else's
        raise Stale("a ResearchSubject for this patient was created by someone else since this page was shown")
    return Written(f"ResearchSubject/{saved.get('id')}", None, status, _version(saved), as_str(as_dict(saved.get("meta")).get("lastUpdated")))


def is_decision_status(status: str | None) -> bool:
    return status is not None and status not in MATCHER_OWNED
