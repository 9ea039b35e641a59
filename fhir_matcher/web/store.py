"""What the pages read from and write to the nightly state (schema 3: a portfolio of trials).

The web app opens the state without the nightly job's run lock (``State(path, lock=False)``),
one short connection per request, so pages keep working while a night runs. Trial
definitions are loaded once from the paths the nightly recorded, for criterion titles,
manual criteria and the trial's text.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..criteria.evaluate import CANDIDATE, INELIGIBLE, POTENTIAL
from ..nightly.state import AuditEntry, Decision, State, StateError
from ..trial import Trial, TrialError, default_trial_path, load_trial

log = logging.getLogger("fhir_matcher")

UNKNOWN, MANUAL = "unknown", "manual"


@contextmanager
def open_state(path: Path) -> Iterator[State]:
    if not Path(path).exists():
        raise StateError(f"{path}: no state file (run the nightly job first)")
    with State(path, lock=False) as state:
        yield state


def manual_key(cid: str) -> str:
    return f"manual:{cid}"


@dataclass
class Check:
    """The latest confirmation of a manual criterion."""

    verdict: str  # confirmed | rejected
    by: str
    at: str
    note: str | None


def manual_checks(entries: list[AuditEntry]) -> dict[str, dict[str, Check]]:
    """patient -> criterion id -> the latest check (audit rows with field ``manual:<id>``)."""
    out: dict[str, dict[str, Check]] = {}
    for a in entries:  # in id order: the last one wins
        if a.field.startswith("manual:") and a.after in ("confirmed", "rejected"):
            out.setdefault(a.patient, {})[a.field.split(":", 1)[1]] = Check(a.after, a.actor, a.at, a.why)
    return out


@dataclass
class Row:
    """One patient in a trial's worklist."""

    patient: str  # Patient/<id>
    id: str
    status: str  # the matcher's
    decision: str | None  # a person's status on the ResearchSubject
    decided_on: str | None
    review: bool  # new data contradicts the decision (an open review)
    new: bool  # first seen, or its result changed, on the last night
    changed_on: str | None
    needs: list[str] = field(default_factory=list)  # data to obtain: computable criteria still unknown
    manual_open: list[str] = field(default_factory=list)  # manual criteria nobody confirmed or rejected yet
    rejected: list[str] = field(default_factory=list)  # manual criteria a person rejected

    @property
    def open_items(self) -> int:
        return len(self.needs) + len(self.manual_open)

    @property
    def shown_status(self) -> str:
        return self.decision or self.status


@dataclass
class TrialInfo:
    id: str
    title: str
    last_as_of: str | None
    trial: Trial | None  # None when its definition can no longer be read (then ids only)
    problem: str | None = None


def _bundled(trial_id: str) -> Trial | None:
    """The bundled trial with this id, if there is one."""
    for path in sorted(default_trial_path().parent.glob("*.toml")):
        try:
            trial = load_trial(path)
        except TrialError:
            continue
        if trial.id == trial_id:
            return trial
    return None


class Trials:
    """Trial definitions by id, loaded once per path and digest (a changed file is reloaded)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], tuple[Trial | None, str | None]] = {}
        self._lock = threading.Lock()

    def info(self, row: Any) -> TrialInfo:
        key = (str(row.path), str(row.digest))
        with self._lock:
            if key not in self._loaded:
                try:
                    self._loaded[key] = (load_trial(Path(row.path)), None)
                except (TrialError, OSError) as e:
                    bundled = _bundled(row.id)  # a relative path from the nightly's folder, or a moved file
                    if bundled is not None:
                        self._loaded[key] = (bundled, None)
                    else:
                        log.warning("trial %s: definition not readable (%s); pages show criterion ids only", row.id, e)
                        self._loaded[key] = (None, f"the trial definition {row.path} cannot be read: criteria are shown by id")
            trial, problem = self._loaded[key]
        last = row.last_as_of.isoformat() if isinstance(row.last_as_of, date) else row.last_as_of
        return TrialInfo(row.id, row.title or (trial.title if trial else row.id), last, trial, problem)


def _iso(d: Any) -> str | None:
    if d is None:
        return None
    return d.isoformat() if isinstance(d, date) else str(d)


def _manual_audit(state: State, trial: str) -> list[AuditEntry]:
    """The trial's checklist answers only (the audit log also holds every status change)."""
    rows = state.db.execute("SELECT at, patient, subject, actor, source, before, after, why, field, trial FROM audit "
                            "WHERE trial = ? AND field LIKE 'manual:%' ORDER BY id", (trial,))
    return [AuditEntry(*r) for r in rows]


_cache: dict[tuple[str, str], tuple[int, Any]] = {}  # (state file, trial) -> (last run id, results)
_cache_lock = threading.Lock()


def _results(state: State, tid: str) -> tuple[list[tuple[str, str, str | None, str | None]], dict[str, list[tuple[str, str]]]]:
    """(patient, status, first seen, changed) rows and each patient's open criteria.

    Only a night changes these rows (every night adds a row to ``runs``), so they are read
    once per night and trial, not per page.
    """
    db = state.db
    run = db.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()[0]
    key = (str(state.path), tid)
    with _cache_lock:
        hit = _cache.get(key)
    if hit and hit[0] == run:
        return hit[1]
    open_items: dict[str, list[tuple[str, str]]] = {}
    for patient, cid, result in db.execute(
        "SELECT p.patient, j.key, json_extract(j.value, '$.result') FROM patients p, json_each(p.result, '$.criteria') j "
        "WHERE p.trial = ? AND json_extract(j.value, '$.result') IN (?, ?)", (tid, UNKNOWN, MANUAL)):
        open_items.setdefault(patient, []).append((cid, result))
    base = db.execute("SELECT patient, status, first_seen_on, changed_on FROM patients WHERE trial = ?", (tid,)).fetchall()
    with _cache_lock:
        _cache[key] = (run, (base, open_items))
    return base, open_items


def worklist(state: State, info: TrialInfo) -> list[Row]:
    """Every patient of the trial with what a coordinator needs to sort and pick them.

    Reads only what the list shows: SQLite's JSON functions pick the criteria still open
    (unknown or manual) out of each stored result, so a trial of thousands of patients does
    not decode every result in Python.
    """
    tid = info.id
    decisions = state.decisions(tid)
    open_reviews = {r.patient for r in state.reviews(tid, open_only=True)}
    checks = manual_checks(_manual_audit(state, tid))
    trial = info.trial
    manual_ids = {c.id for c in trial.criteria if c.manual} if trial else set()
    washout_ids = {c.id for c in trial.criteria if c.washout} if trial else set()
    order = {c.id: i for i, c in enumerate(trial.criteria)} if trial else {}
    base, open_items = _results(state, tid)
    last = info.last_as_of
    rows = []
    for key, status, first, changed in base:
        d = decisions.get(key)
        mine = checks.get(key, {})
        needs, manual_open, rejected = [], [], []
        items = open_items.get(key, [])
        manual_here = {cid for cid, result in items if result == MANUAL} | manual_ids
        for cid in sorted(manual_here, key=lambda c: (order.get(c, len(order)), c)):
            check = mine.get(cid)
            if check is None:
                manual_open.append(cid)
            elif check.verdict == "rejected":
                rejected.append(cid)
        needs = sorted((cid for cid, result in items if result == UNKNOWN and cid not in manual_here and cid not in washout_ids),
                       key=lambda c: (order.get(c, len(order)), c))
        rows.append(Row(key, key.split("/", 1)[1], status, d.status if d else None, d.decided_on if d else None, key in open_reviews,
                        bool(last and (first == last or changed == last)), changed or first, needs, manual_open, rejected))
    return rows


FILTERS = {
    "shortlist": ("Candidates and potential", lambda r: r.status in (CANDIDATE, POTENTIAL) and not r.decision or r.review),
    "candidate": ("Candidates", lambda r: r.status == CANDIDATE and not r.decision),
    "potential-candidate": ("Potential candidates", lambda r: r.status == POTENTIAL and not r.decision),
    "review": ("Needs review", lambda r: r.review),
    "new": ("New since last night", lambda r: r.new and (r.status != INELIGIBLE or r.decision)),
    "decided": ("Decided", lambda r: bool(r.decision)),
    "ineligible": ("Ineligible", lambda r: r.status == INELIGIBLE and not r.decision),
    "all": ("All", lambda r: True),
}
SORTS = {
    "priority": lambda r: (not r.review, {CANDIDATE: 0, POTENTIAL: 1}.get(r.status, 2) if not r.decision else 3, r.open_items, r.id),
    "patient": lambda r: r.id,
    "needs": lambda r: (r.open_items, r.id),
    "changed": lambda r: (r.changed_on or "", r.id),
}


def counts(rows: list[Row]) -> dict[str, int]:
    return {name: sum(1 for r in rows if test(r)) for name, (_, test) in FILTERS.items()}


def decision_counts(rows: list[Row]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        if r.decision:
            out[r.decision] = out.get(r.decision, 0) + 1
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_check(state: State, trial_id: str, patient: str, cid: str, verdict: str, user: str, note: str | None, before: str | None) -> None:
    state.add_audit(trial_id, [AuditEntry(at=now_iso(), patient=patient, subject=None, actor=user, source="web", before=before, after=verdict,
                                          why=note or None, field=manual_key(cid), trial=trial_id)])


def record_status(state: State, trial_id: str, patient: str, subject: str, before: str | None, after: str, user: str, why: str | None,
                  version: str | None, changed_at: str | None) -> None:
    """The decision in the audit log and in the decisions table (the worklist shows it before the next night)."""
    now = now_iso()
    today = datetime.now(timezone.utc).date()
    state.add_audit(trial_id, [AuditEntry(at=now, patient=patient, subject=subject, actor=user, source="web", before=before, after=after,
                                          why=why or None, field="status", trial=trial_id)])
    state.record_decision(trial_id, Decision(patient, subject, after, changed_at or now, today, now, today, version))
