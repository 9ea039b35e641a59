"""The nightly job: re-evaluate what changed or what time changed, write back, report.

A night re-evaluates only:
- patients whose data changed since the last successful night (``_lastUpdated`` on every
  resource type the criteria read, plus deletions), when they are in the cohort or a changed
  Condition may bring them in;
- patients whose result can change with time alone: their ``recheck_on`` date has come.
Everything else keeps the result stored in the state, which by construction equals a full
screen at the same as-of date. The first night, a changed trial definition, a changed
server, an as-of date earlier than the last night's, or ``--full`` screen everyone.

Every night also reads the study's ResearchSubjects: a status a person set is never
written over (``decisions``), and a decision the data now contradicts is raised once for
review as a Task (``outputs.reviews``).
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
from typing import Any, Sequence

from ..criteria.cohort import cohort_valuesets, in_cohort, read_plan
from ..criteria.evaluate import INELIGIBLE, SHORTLIST, STATUSES, PatientResult, evaluate
from ..outputs.files import write_outputs, write_private, write_run_json
from ..outputs.portfolio import portfolio_html
from ..outputs.reviews import Reviews, ServerTask, review_identifier, review_search, review_tasks
from ..outputs.writeback import IF_MATCH, SubjectWrite, WriteBack, ensure_studies, subject_reason, subject_searches, subjects_of, version_check
from ..fhirjson import Json
from ..rest.client import FhirClient
from ..sources.patients import PatientList, PatientListSource
from ..sources.rest import RestSource
from ..record import PatientRecord
from ..screen import condition_codes
from ..trial import Trial
from .decisions import DECISION_ORDER, GOING_AHEAD, Contradiction, ServerSubject, contradiction, decision_of, ours_of
from .state import AuditEntry, Decision, LastRun, PatientState, Review, State, TrialRow

log = logging.getLogger("fhir_matcher")

OVERLAP = timedelta(minutes=5)  # re-read a little of the previous night: clocks and commits are not instant


@dataclass
class NightReport:
    summary: dict[str, Any]
    results: list[PatientResult]
    changes: dict[str, str] = field(default_factory=dict)
    trials: dict[str, "NightReport"] = field(default_factory=dict)  # a portfolio: each trial's own


@dataclass
class TrialNight:
    """One trial's part of a night: what the state and the server know, and whom to read."""

    trial: Trial
    digest: str
    why_full: str | None
    row: TrialRow | None
    known: dict[str, PatientState]
    listed: dict[str, PatientState]
    known_decisions: dict[str, Decision]
    wb: WriteBack
    study: str = ""
    on_server: dict[str, list[ServerSubject]] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    changed_count: int = 0


def trial_digest(trial: Trial, terminology: str = "") -> str:
    """Changes when the trial file, any value set, or the terminology server changes (then
    every result may change)."""
    h = hashlib.sha256(trial.path.read_bytes())
    for vs_id in sorted(trial.valuesets.valuesets):
        h.update(json.dumps(trial.valuesets.valuesets[vs_id], sort_keys=True).encode())
    if terminology:
        h.update(f"terminology server {terminology}".encode())
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


def _pid(key: str) -> str:
    return key.split("/", 1)[1]


def run_night(
    client: FhirClient,
    trials: Trial | Sequence[Trial],
    state: State,
    out: Path,
    as_of: date,
    *,
    workers: int = 4,
    tag: str | None = None,
    full: bool = False,
    overlap: timedelta = OVERLAP,
    patients: PatientList | None = None,
    terminology: str = "",
) -> NightReport:
    """One night for one trial or a portfolio, on one read of the server.

    Each trial decides on its own whether it needs a full screen (new in the portfolio, its
    definition changed) or only what changed; the patients every trial needs are read once,
    with the resource types of all of them. ``patients``: screen only this list (--group,
    --patients, --bulk-group), with patient-scoped searches; members who left the list are no
    longer screened (their ResearchSubjects stay as they are), new members are screened.
    ``terminology``: the terminology server codes are also checked on (``--tx``); using one,
    or another, can change results, so it is part of each trial's digest. With several trials, ``out/<trial id>/`` holds each trial's usual files, ``out/run.json``
    the totals and ``out/portfolio.html`` the overview."""
    portfolio = [trials] if isinstance(trials, Trial) else list(trials)
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    plan = read_plan(portfolio)
    source = RestSource(client, plan, workers=workers, tag=tag) if patients is None else PatientListSource(client, plan, patients, workers=workers, tag=tag)
    source.check_server()
    night_start = _server_instant(client)

    members = set(patients.ids) if patients else None
    previous = set(json.loads(state.meta("patient_list_members") or "[]"))
    last = state.last_success()
    why_all = _why_full_all(state, client, patients, last, as_of, full)
    rows = state.trials(active_only=False)
    check = version_check(client.capability or {})

    studies = ensure_studies(client, portfolio)  # one transaction for the portfolio
    # One batch for the first pages of what every night reads: the subjects, the review
    # Tasks, and (when the night can be incremental) what changed since the last one.
    ahead = subject_searches(list(studies.values())) + [review_search()]
    if why_all is None and type(source) is RestSource and last is not None and last.server_time:
        ahead += source.change_searches(_since(last, overlap))
    client.prefetch(ahead)
    # The studies' subjects as the server holds them now: what people decided since the last
    # night, and the versions every write is checked against (one search for all trials).
    on_server = subjects_of(client, list(studies.values()))
    nights: list[TrialNight] = []
    for trial in portfolio:
        digest = trial_digest(trial, terminology)
        row = rows.get(trial.id)
        known = state.patients(trial.id)
        why = why_all
        if why is None:
            if row is None:
                why = "the trial is new in the portfolio"
            elif not row.active:
                why = "the trial is back in the portfolio"
            elif row.digest != digest:
                why = "the trial definition, a value set or the terminology server changed"
        listed = known if members is None else {k: p for k, p in known.items() if _pid(k) in members}
        wb = WriteBack(client, trial)
        wb.check = check
        night = TrialNight(trial, digest, why, row, known, listed, state.decisions(trial.id), wb, studies[trial.id], on_server[studies[trial.id]])
        nights.append(night)

    full_nights = [n for n in nights if n.why_full]
    if full_nights:
        cohort = set(_cohort(source, [n.trial for n in full_nights], patients))
        for n in full_nights:
            n.ids = cohort | {_pid(k) for k in n.listed} | {_pid(k) for k in n.on_server}
            n.changed_count = len(n.ids)
    incremental = [n for n in nights if not n.why_full]
    if incremental:
        assert last is not None and last.server_time
        since = _since(last, overlap)
        if isinstance(source, PatientListSource):
            source.previous = previous  # new members are screened in full
            source.evidence = {}
            for n in incremental:
                for k, p in n.listed.items():
                    source.evidence.setdefault(_pid(k), []).extend(e for c in p.result["criteria"].values() for e in c.get("evidence", []))
        changed, entering = source.changes_since(since)
        for n in incremental:
            known_ids = {_pid(k) for k in n.listed}
            due = {_pid(k) for k, p in n.listed.items() if p.recheck_on is not None and p.recheck_on <= as_of}
            decided_unknown = {_pid(k) for k, subs in n.on_server.items() if k not in n.known and decision_of(subs)}
            if members is not None:
                decided_unknown &= members
            n.ids = (changed & known_ids) | entering | due | decided_unknown
            n.changed_count = len(changed & (known_ids | entering))
    for n in nights:
        if members is not None:
            n.ids &= members  # a patient who left the list is not read again
    source.fetch(sorted(set().union(*(n.ids for n in nights))))
    fresh = {r.key: r for r in source.builder.records()}
    source_problems = [str(p) for p in source.builder.problems] + source.notes

    many = len(nights) > 1
    tasks = review_tasks(client)  # every trial's review Tasks, one search
    reports: dict[str, NightReport] = {}
    state_rows: list[PatientState] = []
    decisions: dict[str, list[Decision]] = {}
    reviews: list[Review] = []
    audit: list[AuditEntry] = []
    trial_rows: list[TrialRow] = []
    for n in nights:
        records = {k: fresh[k] for k in sorted(f"Patient/{i}" for i in n.ids) if k in fresh}
        if many:  # another trial's cohort is not this one's: keep what this trial would read alone
            gates = cohort_valuesets(n.trial)
            if gates:
                records = {k: r for k, r in records.items()
                           if k in n.listed or k in n.on_server or in_cohort(n.trial, condition_codes(r), gates)}
        folder = out / n.trial.id if many else out
        report, part = _finish_trial(n, records, state, folder, as_of, client, source_problems, night_start, patients, members, previous,
                                     getattr(source, "limits", None), tasks)
        reports[n.trial.id] = report
        state_rows += part["patients"]
        decisions[n.trial.id] = part["decisions"]
        reviews += part["reviews"]
        audit += part["audit"]
        trial_rows.append(TrialRow(n.trial.id, n.trial.title, str(n.trial.path), n.digest, n.row.added_on if n.row and n.row.active else as_of, as_of))
    removed = sorted(t for t, r in rows.items() if r.active and t not in reports)

    duration = round(time.monotonic() - started, 3)
    if many:
        summary = _portfolio_summary(reports, client, as_of, removed, duration)
        if patients is not None:
            summary["patient_list"] = patients.origin
        write_run_json(out, summary)
        write_private(out / "portfolio.html", portfolio_html([_Screened(n.trial, reports[n.trial.id].results) for n in nights], as_of, client.base))
    else:
        summary = reports[portfolio[0].id].summary
        summary["duration_s"] = duration
        if removed:
            summary["trials_removed"] = removed
        write_run_json(out, summary)
    state.commit_run(
        trials=trial_rows,
        patients=state_rows,
        meta={"server": client.base, "trial": ",".join(t.id for t in portfolio),
              "patient_list": patients.origin if patients else "", "patient_list_members": json.dumps(sorted(members)) if patients else ""},
        started_at=started_at,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        as_of=as_of,
        server_time=night_start.isoformat(),
        summary={k: v for k, v in summary.items() if k != "problems"},
        decisions=decisions,
        reviews=reviews,
        audit=audit,
        removed=removed,
    )
    if many:
        return NightReport(summary, [], {}, reports)
    return reports[portfolio[0].id]


@dataclass
class _Screened:
    """What the portfolio page reads of a trial's night."""

    trial: Trial
    results: list[PatientResult]
    outside: int = 0

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for r in self.results if r.status == s) for s in STATUSES}


def _since(last: LastRun, overlap: timedelta) -> str:
    """Changes are read from the last night's start, less the overlap."""
    assert last.server_time
    return (datetime.fromisoformat(last.server_time) - overlap).strftime("%Y-%m-%dT%H:%M:%SZ")


def _why_full_all(state: State, client: FhirClient, patients: PatientList | None, last: LastRun | None, as_of: date, full: bool) -> str | None:
    """A reason every trial of the night is screened in full, or None."""
    if full:
        return "asked for (--full)"
    if last is None:
        return "first night"
    if state.meta("server") != client.base:
        return "the server changed"
    if (state.meta("patient_list") or "") != (patients.origin if patients else ""):
        return "the patient list changed (--group, --patients, --bulk-group)"
    if as_of < last.as_of:
        return f"as-of {as_of} is before the last night's {last.as_of}"
    if not last.server_time:
        return "the last night left no server time"
    return None


def _cohort(source: RestSource, trials: list[Trial], patients: PatientList | None) -> list[str]:
    """The cohort of the trials screened in full, found with their gates only (a trial added
    to the portfolio does not read the other trials' cohorts again)."""
    if patients is not None and patients.bulk:
        return source.cohort()  # a Group export reads every type the portfolio needs at once
    whole = source.plan
    source.plan = read_plan(trials)
    try:
        return source.cohort()
    finally:
        source.plan = whole


def _portfolio_summary(reports: dict[str, NightReport], client: FhirClient, as_of: date, removed: list[str], duration: float) -> dict[str, Any]:
    per = {t: {k: r.summary[k] for k in ("mode", "full_because", "screened", "re_evaluated", "changed", "new_candidates", "dropped", "written", "statuses",
                                         "decisions", "reviews_opened", "reviews_closed", "conflicts")}
           | {"needs_review": len(r.summary["needs_review"])} for t, r in reports.items()}
    problems = list(dict.fromkeys(p for r in reports.values() for p in r.summary["problems"]))
    first = next(iter(reports.values())).summary
    return {
        "command": "nightly",
        "trials": per,
        "trials_removed": removed,
        "as_of": as_of.isoformat(),
        "server": client.base,
        "mode": "full" if all(r.summary["mode"] == "full" for r in reports.values()) else
                ("incremental" if all(r.summary["mode"] == "incremental" for r in reports.values()) else "mixed"),
        "re_evaluated": sum(r.summary["re_evaluated"] for r in reports.values()),
        "new_candidates": sum(r.summary["new_candidates"] for r in reports.values()),
        "written": sum(r.summary["written"] for r in reports.values()),
        "version_check": first["version_check"],
        "versioned_updates": first["versioned_updates"],
        "errors": len(problems),
        "problems": problems,
        "http": client.transport.cost.to_json(),
        "duration_s": duration,
    }


def _finish_trial(
    n: TrialNight,
    records: dict[str, PatientRecord],
    state: State,
    out: Path,
    as_of: date,
    client: FhirClient,
    source_problems: list[str],
    night_start: datetime,
    patients: PatientList | None,
    members: set[str] | None,
    previous: set[str],
    limits: Any = None,
    tasks: list[Json] | None = None,
) -> tuple[NightReport, dict[str, list]]:
    """Evaluate one trial's patients, write back, follow decisions and reviews, write its files."""
    trial, known, listed, why_full, on_server, wb = n.trial, n.known, n.listed, n.why_full, n.on_server, n.wb
    evaluated = {key: evaluate(rec, trial, as_of) for key, rec in records.items()}
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

    # Write-back: every patient who is, or was, a (potential) candidate, compared with what the
    # server holds now; only what differs, and never a subject whose status a person set.
    to_write: list[SubjectWrite] = []
    deleted: list[str] = []  # subjects an earlier night wrote that are gone from the server
    new_state: list[PatientState] = []
    for key in sorted(results):
        r = results[key]
        before = known.get(key)
        subs = on_server.get(key, [])
        ours = ours_of(subs)
        status: str | None = None
        reason = ""
        if decision_of(subs) is None:
            gone = ours is None and before is not None and before.written_status and not why_full_server_changed(why_full)
            if gone:  # written by an earlier night, deleted on the server since: a person's doing
                deleted.append(key)
            elif r.status in SHORTLIST or ours is not None:
                status = r.status if r.status in SHORTLIST else INELIGIBLE
                reason = subject_reason(trial, r)
                item = SubjectWrite(r, status, reason, ours)
                if not item.unchanged():
                    to_write.append(item)
        if key in evaluated or status:
            w_digest = hashlib.sha256(f"{status}|{reason}".encode()).hexdigest()[:16] if status else None
            first_seen = before.first_seen_on if before and before.first_seen_on else as_of
            changed_on = as_of if before is None or before.status != r.status else before.changed_on
            new_state.append(PatientState(key, r.status, result_digest(r), r.recheck_on, as_of if key in evaluated else before.evaluated_as_of,
                                          {"criteria": r.criteria_json()},
                                          status or (before.written_status if before else None), w_digest or (before.written_digest if before else None),
                                          first_seen, changed_on, trial.id))
    written = wb.write(n.study, to_write)
    now_iso = datetime.now(timezone.utc).isoformat(timespec="seconds")
    audit: list[AuditEntry] = []
    written_status = {}
    for item in to_write:
        key = item.result.patient
        if key in wb.turned:
            continue
        written_status[key] = item.status
        if item.current is None or item.current.status != item.status:
            audit.append(AuditEntry(now_iso, key, item.current.ref if item.current else None, "fhir-matcher", "nightly",
                                    item.current.status if item.current else None, item.status, item.reason, trial=trial.id))
    for key, subject in wb.turned.items():  # decided by a person between our read and our write
        on_server[key] = [s for s in on_server.get(key, []) if s.id != subject.id] + ([subject] if subject.status != "deleted" else [])

    # People's decisions: remembered with the day they were first seen.
    decisions: dict[str, Decision] = {}
    decided: dict[str, ServerSubject] = {}
    for key in sorted(results):
        d = decision_of(on_server.get(key, []))
        if d is None:
            continue
        decided[key] = d
        prev = n.known_decisions.get(key)
        if prev and prev.status == d.status and prev.subject == d.ref:
            decisions[key] = Decision(key, d.ref, d.status, prev.changed_at, prev.first_seen_on, prev.first_seen_at, as_of, d.version, trial.id)
            continue
        decisions[key] = Decision(key, d.ref, d.status, d.last_updated, as_of, now_iso, as_of, d.version, trial.id)
        was = prev.status if prev else (known[key].written_status if key in known else None)
        audit.append(AuditEntry(d.last_updated or now_iso, key, d.ref, "seen on server", "server", was, d.status,
                                "set on the server by a person (seen by the nightly job)", trial=trial.id))
        if key not in changes:
            changes[key] = f"{d.status} (set by a person)"
    for key, prev in n.known_decisions.items():  # a person moved a subject back to the matcher
        if key in results and key not in decisions:
            audit.append(AuditEntry(now_iso, key, prev.subject, "seen on server", "server", prev.status,
                                    written_status.get(key) or _matcher_status(on_server.get(key, [])), "the decision was taken back on the server", trial=trial.id))

    # Reviews: a going-ahead decision the data now contradicts, raised once as a Task.
    reviews = Reviews(client, trial, wb.check)
    needs_review, reviewed, review_rows = _reviews(trial, reviews, state, results, decided, decisions, as_of, night_start, tasks)

    server_view = {}
    for key in results:
        if key in decided:
            d = decisions[key]
            server_view[key] = {"status": d.status, "by_person": True, "decided_on": d.decided_on}
        else:
            st = written_status.get(key) or _matcher_status(on_server.get(key, []))
            if st:
                server_view[key] = {"status": st, "by_person": False, "decided_on": None}
    for key in deleted:
        server_view[key] = {"status": "deleted", "by_person": True, "decided_on": None}
    for item in needs_review:
        server_view[item["patient"]]["review"] = item["task"]

    ordered = [results[k] for k in sorted(results)]
    problems = source_problems + wb.problems
    summary = {
        "command": "nightly",
        "trial": trial.id,
        "as_of": as_of.isoformat(),
        "server": client.base,
        "mode": "full" if why_full else "incremental",
        "full_because": why_full,
        "screened": len(ordered),
        "re_evaluated": len(evaluated),
        "changed": n.changed_count,
        "new_candidates": new_candidates,
        "dropped": dropped,
        "written": written,
        "statuses": {s: sum(1 for r in ordered if r.status == s) for s in STATUSES},
        "decisions": _decision_counts(decisions),
        "needs_review": needs_review,
        "reviewed": reviewed,
        "reviews_opened": reviews.opened,
        "reviews_closed": reviews.closed,
        "version_check": wb.check,
        "versioned_updates": wb.check == IF_MATCH,
        "conflicts": wb.conflicts,
        "subjects_deleted_on_server": deleted,
        "errors": len(problems),
        "problems": problems,
        "http": client.transport.cost.to_json(),
    }
    if patients is not None and members is not None:
        summary.update({"patient_list": patients.origin, "members": len(members), "joined_list": len(members - previous) if previous else len(members),
                        "left_list": len(previous - members), "limits": limits})
    write_outputs(out, trial, ordered, as_of, client.base, problems, changes, subjects=server_view, needs_review=needs_review, reviewed=reviewed)
    write_run_json(out, summary)
    part: dict[str, list] = {"patients": new_state, "decisions": list(decisions.values()), "reviews": review_rows, "audit": audit}
    return NightReport(summary, ordered, changes), part


def why_full_server_changed(why_full: str | None) -> bool:
    return why_full == "the server changed"


def _matcher_status(subjects: list[ServerSubject]) -> str | None:
    ours = ours_of(subjects)
    return ours.status if ours else None


def _decision_counts(decisions: dict[str, Decision]) -> dict[str, int]:
    counts = {s: 0 for s in DECISION_ORDER}
    for d in decisions.values():
        counts[d.status] = counts.get(d.status, 0) + 1
    return {s: n for s, n in counts.items() if n}


def _reviews(
    trial: Trial,
    api: Reviews,
    state: State,
    results: dict[str, PatientResult],
    decided: dict[str, ServerSubject],
    decisions: dict[str, Decision],
    as_of: date,
    night_start: datetime,
    tasks: list[Json] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Review]]:
    """Open, keep or close review Tasks; returns (needs review, reviewed by a person, state rows).

    One episode per (patient, contradicting criteria): the state remembers it from the night
    it is raised until the night it no longer holds, so a Task a person closed is not raised
    again while the same contradiction lasts. Without a state row (a lost state file) the
    server's Tasks are adopted instead of raising a second one.
    """
    contradictions: dict[str, Contradiction] = {}
    for key, d in decided.items():
        c = contradiction(trial, results[key], d)
        if c:
            contradictions[key] = c
    server_tasks = api.tasks(tasks)
    rows = state.reviews(trial.id)
    open_rows = {r.patient: r for r in rows if r.closed_on is None}
    ever = {(r.patient, r.key) for r in rows}
    by_ident: dict[str, ServerTask] = {t.identifier: t for ts in server_tasks.values() for t in ts}
    updates: list[Review] = []
    needs: list[dict[str, Any]] = []
    reviewed: list[dict[str, Any]] = []
    to_create: list[tuple[Contradiction, str, str | None]] = []
    authored = night_start.isoformat(timespec="seconds")
    stamp = night_start.strftime("%Y%m%dT%H%M%SZ")

    def why_closed(key: str, c: Contradiction | None) -> tuple[str, str]:
        d = decided.get(key)
        if d is None or d.status not in GOING_AHEAD:
            return "completed", f"the decision changed on the server (now {d.status if d else 'none'})"
        if c is not None:
            return "cancelled", "superseded: other criteria now contradict the decision (see the newer review)"
        return "cancelled", "the data no longer contradicts the decision"

    for key in sorted(results):
        c = contradictions.get(key)
        for t in server_tasks.get(key, []):
            if t.active and (c is None or t.key != c.key):
                status, why = why_closed(key, c)
                api.close(t, status, why)
        row = open_rows.get(key)
        if row and (c is None or row.key != c.key):
            row.closed_on, row.closed_why = as_of, why_closed(key, c)[1]
            updates.append(row)
            row = None
        if c is None:
            continue
        decided_on = decisions[key].decided_on
        if row:  # the same episode: raised before; is its Task still waiting?
            t = by_ident.get(row.identifier)
            (needs if t is not None and t.active else reviewed).append(c.to_json(decided_on, row.task))
            continue
        adopt = [t for t in server_tasks.get(key, []) if t.key == c.key and (t.active or not t.closed_by_matcher)]
        if (key, c.key) not in ever and adopt:
            t = adopt[0]
            updates.append(Review(key, c.subject.ref, t.ref, t.identifier, c.key, c.subject.status, c.criteria, c.reason, as_of, authored, trial=trial.id))
            (needs if t.active else reviewed).append(c.to_json(decided_on, t.ref))
            continue
        to_create.append((c, review_identifier(trial, c, stamp), decided_on))
    created = api.create(to_create, authored)
    for c, ident, decided_on in to_create:
        updates.append(Review(c.patient, c.subject.ref, created[ident], ident, c.key, c.subject.status, c.criteria, c.reason, as_of, authored, trial=trial.id))
        needs.append(c.to_json(decided_on, created[ident]))
    needs.sort(key=lambda n: n["patient"])
    return needs, reviewed, updates
