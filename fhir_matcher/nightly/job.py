"""The nightly job: re-evaluate what changed or what time changed, write back, report.

A night re-evaluates only:
- patients whose data changed since the last successful night (``_lastUpdated`` on every
  resource type the criteria read, plus deletions), when they are in the cohort or a changed
  Condition may bring them in;
- patients whose result can change with time alone: their ``recheck_on`` date has come.
Everything else keeps the result stored in the state, which by construction equals a full
screen at the same as-of date. The first night, a changed trial definition, a changed
server, an as-of date earlier than the last night's, or ``--full`` screen everyone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from ..engine.cohort import read_plan
from ..engine.evaluate import INELIGIBLE, SHORTLIST, STATUSES, PatientResult, evaluate
from ..outputs.files import write_outputs, write_run_json
from ..outputs.writeback import WriteBack, subject_reason
from ..rest.client import FhirClient
from ..sources.patients import PatientList, PatientListSource
from ..sources.rest import RestSource
from ..trial import Trial
from .state import PatientState, State

log = logging.getLogger("fhir_matcher")

OVERLAP = timedelta(minutes=5)  # re-read a little of the previous night: clocks and commits are not instant


@dataclass
class NightReport:
    summary: dict[str, Any]
    results: list[PatientResult]
    changes: dict[str, str] = field(default_factory=dict)


def trial_digest(trial: Trial) -> str:
    """Changes when the trial file or any value set changes (then every result may change)."""
    h = hashlib.sha256(trial.path.read_bytes())
    for vs_id in sorted(trial.valuesets.valuesets):
        h.update(json.dumps(trial.valuesets.valuesets[vs_id], sort_keys=True).encode())
    return h.hexdigest()[:16]


def result_digest(result: PatientResult) -> str:
    data = {"status": result.status, "criteria": result.criteria_json()}
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _from_state(p: PatientState) -> PatientResult:
    return PatientResult(p.patient, p.status, PatientResult.criteria_from_json(p.result["criteria"]), p.recheck_on)


def _server_instant(client: FhirClient) -> datetime:
    if client.server_date:
        try:
            return parsedate_to_datetime(client.server_date).astimezone(timezone.utc)
        except (TypeError, ValueError):
            pass
    return datetime.now(timezone.utc)


def run_night(
    client: FhirClient,
    trial: Trial,
    state: State,
    out: Path,
    as_of: date,
    *,
    workers: int = 4,
    tag: str | None = None,
    full: bool = False,
    overlap: timedelta = OVERLAP,
    patients: PatientList | None = None,
) -> NightReport:
    """One night. ``patients``: screen only this list (--group, --patients, --bulk-group), with
    patient-scoped searches; members who left the list are no longer screened (their
    ResearchSubjects stay as they are), new members are screened."""
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    plan = read_plan(trial)
    source = RestSource(client, plan, workers=workers, tag=tag) if patients is None else PatientListSource(client, plan, patients, workers=workers, tag=tag)
    source.check_server()
    night_start = _server_instant(client)

    known = state.patients()
    members = set(patients.ids) if patients else None
    listed = known if members is None else {k: p for k, p in known.items() if k.split("/", 1)[1] in members}
    previous = set(json.loads(state.meta("patient_list_members") or "[]"))
    last = state.last_success()
    digest = trial_digest(trial)
    why_full = None
    if full:
        why_full = "asked for (--full)"
    elif last is None:
        why_full = "first night"
    elif state.meta("trial_digest") != digest:
        why_full = "the trial definition or a value set changed"
    elif state.meta("server") != client.base:
        why_full = "the server changed"
    elif (state.meta("patient_list") or "") != (patients.origin if patients else ""):
        why_full = "the patient list changed (--group, --patients, --bulk-group)"
    elif as_of < last.as_of:
        why_full = f"as-of {as_of} is before the last night's {last.as_of}"
    elif not last.server_time:
        why_full = "the last night left no server time"

    wb = WriteBack(client, trial)
    study = wb.ensure_study()
    # After a full screen the server's subjects are reconciled too (a lost state file, a
    # subject written by an earlier version): nobody keeps a stale candidate status.
    on_server = wb.existing(study) if why_full else {}
    if why_full:
        ids = set(source.cohort()) | {k.split("/", 1)[1] for k in listed} | {k.split("/", 1)[1] for k in on_server}
        changed_count = len(ids)
    else:
        since = (datetime.fromisoformat(last.server_time) - overlap).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(source, PatientListSource):
            source.previous = previous  # new members are screened in full
            source.evidence = {k.split("/", 1)[1]: [e for c in p.result["criteria"].values() for e in c.get("evidence", [])] for k, p in listed.items()}
        changed, entering = source.changes_since(since)
        known_ids = {k.split("/", 1)[1] for k in listed}
        due = {k.split("/", 1)[1] for k, p in listed.items() if p.recheck_on is not None and p.recheck_on <= as_of}
        ids = (changed & known_ids) | entering | due
        changed_count = len(changed & (known_ids | entering))
    if members is not None:
        ids &= members  # a patient who left the list is not read again
    source.fetch(sorted(ids))
    fresh = {r.key: r for r in source.builder.records()}
    evaluated = {key: evaluate(rec, trial, as_of) for key, rec in fresh.items()}
    # A known patient the server no longer returns (deleted) keeps its last result.

    results: dict[str, PatientResult] = {k: _from_state(p) for k, p in listed.items()}
    results.update(evaluated)

    changes: dict[str, str] = {}
    new_candidates = dropped = 0
    for key, r in evaluated.items():
        before = known.get(key)
        if before is None:
            if r.status in SHORTLIST:
                changes[key] = "new"
                new_candidates += 1
        elif before.status != r.status:
            changes[key] = f"{before.status} → {r.status}"
            if r.status in SHORTLIST and before.status not in SHORTLIST:
                new_candidates += 1
            if before.status in SHORTLIST and r.status == INELIGIBLE:
                dropped += 1
        elif before.digest != result_digest(r) and r.status in SHORTLIST:
            changes[key] = "updated"

    # Write-back: every patient who is, or was, a (potential) candidate; only what changed.
    to_write = []
    new_state: list[PatientState] = []
    for key, r in evaluated.items():
        before = known.get(key)
        was_written = (before and before.written_status) or on_server.get(key)
        status = r.status if r.status in SHORTLIST else (INELIGIBLE if was_written else None)
        reason = subject_reason(trial, r)
        w_digest = hashlib.sha256(f"{status}|{reason}".encode()).hexdigest()[:16] if status else None
        already = before.written_digest if before else None
        if status and (w_digest != already or (why_full and on_server.get(key) != status)):
            to_write.append((r, status, reason))
        new_state.append(PatientState(key, r.status, result_digest(r), r.recheck_on, as_of,
                                      {"criteria": r.criteria_json()},
                                      status or (before.written_status if before else None), w_digest or (before.written_digest if before else None)))
    written = wb.write(study, to_write)

    ordered = [results[k] for k in sorted(results)]
    problems = [str(p) for p in source.builder.problems] + source.notes
    summary = {
        "command": "nightly",
        "trial": trial.id,
        "as_of": as_of.isoformat(),
        "server": client.base,
        "mode": "full" if why_full else "incremental",
        "full_because": why_full,
        "screened": len(ordered),
        "re_evaluated": len(evaluated),
        "changed": changed_count,
        "new_candidates": new_candidates,
        "dropped": dropped,
        "written": written,
        "statuses": {s: sum(1 for r in ordered if r.status == s) for s in STATUSES},
        "errors": len(problems),
        "problems": problems,
        "http": client.transport.cost.to_json(),
        "duration_s": round(time.monotonic() - started, 3),
    }
    if patients is not None:
        summary.update({"patient_list": patients.origin, "members": len(members), "joined_list": len(members - previous) if previous else len(members),
                        "left_list": len(previous - members), "limits": source.limits})
    write_outputs(out, trial, ordered, as_of, client.base, problems, changes)
    write_run_json(out, summary)
    state.commit_run(
        patients=new_state,
        meta={"trial_digest": digest, "server": client.base, "trial": trial.id,
              "patient_list": patients.origin if patients else "", "patient_list_members": json.dumps(sorted(members)) if patients else ""},
        started_at=started_at,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        as_of=as_of,
        server_time=night_start.isoformat(),
        summary={k: v for k, v in summary.items() if k != "problems"},
    )
    return NightReport(summary, ordered, changes)
