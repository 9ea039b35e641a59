"""Who owns a ResearchSubject's status, and when new data contradicts a person's decision.

The matcher owns ``candidate``, ``potential-candidate`` and ``ineligible`` on the subjects it
created (those carrying its identifier). Every other status, and any subject someone else
created for the study, is a person's decision: the matcher reads it, reports it, and never
changes it. A decision that moves a patient towards or onto the study (``eligible``,
``screening``, ``pending-on-study``, ``on-study``...) is contradicted when the matcher now
finds the patient ineligible; that is raised for review, never acted on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..criteria.evaluate import CANDIDATE, INELIGIBLE, POTENTIAL, PatientResult, deciding
from ..fhirjson import Json, as_dict, as_list, as_str, normalize_reference
from ..trial import Trial

MATCHER_OWNED = frozenset({CANDIDATE, POTENTIAL, INELIGIBLE})
# Statuses that say "this patient goes (or went) ahead": new exclusion data contradicts them.
GOING_AHEAD = ("eligible", "screening", "pending-on-study", "on-study", "on-study-intervention", "on-study-observation")
# A person's "no": never proposed again until a person moves the subject back.
HUMAN_NO = ("not-registered", "withdrawn")
# Every R4 ResearchSubject status a person sets, in the order of the enrolment path.
DECISION_ORDER = (*GOING_AHEAD, "follow-up", "off-study", *HUMAN_NO)


@dataclass
class ServerSubject:
    """A ResearchSubject of the trial's study as the server holds it now."""

    id: str
    patient: str
    status: str
    version: str | None
    last_updated: str | None
    ours: bool  # carries the matcher's identifier
    resource: Json = field(repr=False, default_factory=dict)

    @property
    def ref(self) -> str:
        return f"ResearchSubject/{self.id}"

    @property
    def is_decision(self) -> bool:
        return not self.ours or self.status not in MATCHER_OWNED


def parse_subject(resource: Json, our_system: str) -> ServerSubject | None:
    rid = as_str(resource.get("id"))
    patient = as_str(as_dict(resource.get("individual")).get("reference"))
    status = as_str(resource.get("status"))
    if not (rid and patient and status):
        return None
    meta = as_dict(resource.get("meta"))
    ours = any(as_dict(i).get("system") == our_system for i in as_list(resource.get("identifier")))
    return ServerSubject(rid, normalize_reference(patient), status, as_str(meta.get("versionId")), as_str(meta.get("lastUpdated")), ours, resource)


def decision_of(subjects: list[ServerSubject]) -> ServerSubject | None:
    """The person's decision among a patient's subjects for the study, if any.

    A subject someone else created counts as a decision whatever its status (the matcher
    never writes beside it); among several, the one furthest along the enrolment path wins.
    """
    decided = [s for s in subjects if s.is_decision]
    if not decided:
        return None
    rank = {s: i for i, s in enumerate(DECISION_ORDER)}
    return min(decided, key=lambda s: (rank.get(s.status, len(rank)), s.id))


def ours_of(subjects: list[ServerSubject]) -> ServerSubject | None:
    mine = [s for s in subjects if s.ours]
    return min(mine, key=lambda s: s.id) if mine else None


@dataclass
class Contradiction:
    """A going-ahead decision the data now contradicts (the matcher finds the patient ineligible)."""

    patient: str
    subject: ServerSubject
    criteria: list[str]
    reason: str
    evidence: list[str]

    @property
    def key(self) -> str:
        """Which criteria contradict: the same key is the same review, whatever the night."""
        return hashlib.sha256("|".join(self.criteria).encode()).hexdigest()[:10]

    def to_json(self, decided_on: str | None, task: str | None) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "subject": self.subject.ref,
            "decision": self.subject.status,
            "decided_on": decided_on,
            "matcher_status": INELIGIBLE,
            "criteria": self.criteria,
            "reason": self.reason,
            "evidence": self.evidence,
            "task": task,
        }


def contradiction(trial: Trial, result: PatientResult, decision: ServerSubject | None) -> Contradiction | None:
    if decision is None or decision.status not in GOING_AHEAD or result.status != INELIGIBLE:
        return None
    ids = deciding(trial, result.criteria)
    reason = "; ".join(f"{cid}: {result.criteria[cid].reason}" for cid in ids)
    evidence = sorted({e for cid in ids for e in result.criteria[cid].evidence})
    return Contradiction(result.patient, decision, ids, reason, evidence)
