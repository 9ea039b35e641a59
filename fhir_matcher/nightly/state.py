"""The nightly job's memory: an embedded SQLite file, plus a lock so only one run writes it.

A run reads the state at its start and writes everything it learned in one transaction at
its very end, after the server write-back succeeded. A run that fails midway leaves the
state as it was, and the next night redoes the work (the write-back is idempotent).

Schema versions live in ``PRAGMA user_version``; ``open`` migrates an older file in place
(version 0: meta, runs, patients; version 2 adds decisions, reviews and the audit log;
version 3 keeps a portfolio of trials in one file: every per-patient row names its trial,
and adds the web app's users and access log).
The ``audit`` table is shared: the nightly job records what it saw change on the server
and what it wrote; a later tool (a web app, say) adds the decisions people make through it
with their author and reason, in the same shape.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    as_of TEXT NOT NULL,
    server_time TEXT,
    ok INTEGER NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY,               -- the trial definition's id
    title TEXT NOT NULL,
    path TEXT NOT NULL,                -- where the definition was read from (last night)
    digest TEXT NOT NULL,              -- the definition and its value sets (a change re-screens it)
    added_on TEXT NOT NULL,            -- as-of date of its first night
    last_as_of TEXT NOT NULL,          -- as-of date of its last night
    active INTEGER NOT NULL            -- 0: taken out of the portfolio (its audit stays)
);
CREATE TABLE IF NOT EXISTS patients (
    trial TEXT NOT NULL,
    patient TEXT NOT NULL,             -- Patient/<id>
    status TEXT NOT NULL,
    digest TEXT NOT NULL,
    recheck_on TEXT,
    evaluated_as_of TEXT NOT NULL,
    result TEXT NOT NULL,
    written_status TEXT,
    written_digest TEXT,
    first_seen_on TEXT,                -- as-of date of the night that first screened the patient for the trial
    changed_on TEXT,                   -- as-of date of the night the status last changed
    PRIMARY KEY (trial, patient)
);
CREATE TABLE IF NOT EXISTS decisions (
    trial TEXT NOT NULL,
    patient TEXT NOT NULL,             -- Patient/<id>
    subject TEXT NOT NULL,             -- ResearchSubject/<id> on the server
    status TEXT NOT NULL,              -- the person's status (eligible, on-study, not-registered, ...)
    changed_at TEXT,                   -- the subject's meta.lastUpdated when first seen with this status
    first_seen_on TEXT NOT NULL,       -- as-of date of the night that first saw it
    first_seen_at TEXT NOT NULL,       -- UTC time of that night
    last_seen_on TEXT NOT NULL,
    version TEXT,                      -- the subject's meta.versionId last seen
    PRIMARY KEY (trial, patient)
);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trial TEXT NOT NULL,
    patient TEXT NOT NULL,
    subject TEXT NOT NULL,
    task TEXT,                         -- Task/<id> on the server
    identifier TEXT NOT NULL,          -- the Task's identifier value (created once on it)
    key TEXT NOT NULL,                 -- which criteria contradict the decision
    decision TEXT NOT NULL,
    criteria TEXT NOT NULL,            -- JSON list of criterion ids
    reason TEXT NOT NULL,
    opened_on TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    closed_on TEXT,
    closed_why TEXT
);
CREATE INDEX IF NOT EXISTS reviews_patient ON reviews (trial, patient);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,                  -- UTC time of the change (or when it was seen)
    trial TEXT NOT NULL,
    patient TEXT NOT NULL,
    subject TEXT,
    actor TEXT NOT NULL,               -- 'fhir-matcher', 'seen on server', or a user name (web app)
    source TEXT NOT NULL,              -- 'nightly', 'server', 'web', ...
    field TEXT NOT NULL DEFAULT 'status',  -- 'status', or 'manual:<criterion id>' for a checklist item
    before TEXT,
    after TEXT,
    why TEXT
);
CREATE INDEX IF NOT EXISTS audit_patient ON audit (trial, patient, at);
CREATE TABLE IF NOT EXISTS access (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,                  -- UTC time
    user TEXT NOT NULL,
    patient TEXT,                      -- Patient/<id> opened (NULL: a page without one patient)
    trial TEXT,
    what TEXT NOT NULL                 -- the page or action
);
CREATE INDEX IF NOT EXISTS access_user ON access (user, at);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,                -- viewer | coordinator
    password_hash TEXT,                -- NULL for accounts that only sign in through OIDC
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
"""

# Version 2 -> 3: every per-patient table gains the trial it belongs to (one state file for a
# portfolio of trials). Rows of a version-2 file belong to the trial its meta names.
MIGRATE_V2 = [
    "ALTER TABLE patients RENAME TO patients_v2",
    "ALTER TABLE decisions RENAME TO decisions_v2",
    "ALTER TABLE reviews RENAME TO reviews_v2",
    "ALTER TABLE audit RENAME TO audit_v2",
    "DROP INDEX IF EXISTS reviews_patient",
    "DROP INDEX IF EXISTS audit_patient",
    "@SCHEMA",
    "INSERT INTO patients (trial, patient, status, digest, recheck_on, evaluated_as_of, result, written_status, written_digest, first_seen_on, changed_on) "
    "SELECT :trial, patient, status, digest, recheck_on, evaluated_as_of, result, written_status, written_digest, evaluated_as_of, NULL FROM patients_v2",
    "INSERT INTO decisions SELECT :trial, * FROM decisions_v2",
    "INSERT INTO reviews (id, trial, patient, subject, task, identifier, key, decision, criteria, reason, opened_on, opened_at, closed_on, closed_why) "
    "SELECT id, :trial, patient, subject, task, identifier, key, decision, criteria, reason, opened_on, opened_at, closed_on, closed_why FROM reviews_v2",
    "INSERT INTO audit (id, at, trial, patient, subject, actor, source, field, before, after, why) "
    "SELECT id, at, :trial, patient, subject, actor, source, field, before, after, why FROM audit_v2",
    "DROP TABLE patients_v2",
    "DROP TABLE decisions_v2",
    "DROP TABLE reviews_v2",
    "DROP TABLE audit_v2",
]

# Version 0 (meta, runs, patients) gains the version-2 tables before the move to 3.
SCHEMA_V2_TABLES = """
CREATE TABLE IF NOT EXISTS decisions (patient TEXT PRIMARY KEY, subject TEXT NOT NULL, status TEXT NOT NULL, changed_at TEXT,
    first_seen_on TEXT NOT NULL, first_seen_at TEXT NOT NULL, last_seen_on TEXT NOT NULL, version TEXT);
CREATE TABLE IF NOT EXISTS reviews (id INTEGER PRIMARY KEY AUTOINCREMENT, patient TEXT NOT NULL, subject TEXT NOT NULL, task TEXT,
    identifier TEXT NOT NULL, key TEXT NOT NULL, decision TEXT NOT NULL, criteria TEXT NOT NULL, reason TEXT NOT NULL,
    opened_on TEXT NOT NULL, opened_at TEXT NOT NULL, closed_on TEXT, closed_why TEXT);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, patient TEXT NOT NULL, subject TEXT,
    actor TEXT NOT NULL, source TEXT NOT NULL, field TEXT NOT NULL DEFAULT 'status', before TEXT, after TEXT, why TEXT)
"""

SCHEMA_VERSION = 3


class StateLocked(Exception):
    """Another run holds the state."""


class StateError(Exception):
    """The state file cannot be used; the message says why."""


@dataclass
class PatientState:
    patient: str
    status: str
    digest: str
    recheck_on: date | None
    evaluated_as_of: date
    result: dict[str, Any]
    written_status: str | None
    written_digest: str | None
    first_seen_on: date | None = None
    changed_on: date | None = None
    trial: str = ""


@dataclass
class Decision:
    """A person's status on a ResearchSubject, as first seen by a night."""

    patient: str
    subject: str
    status: str
    changed_at: str | None
    first_seen_on: date
    first_seen_at: str
    last_seen_on: date
    version: str | None
    trial: str = ""

    @property
    def decided_on(self) -> str:
        """The day the person set it: the server's lastUpdated when known, else the night that saw it."""
        return (self.changed_at or "")[:10] or self.first_seen_on.isoformat()


@dataclass
class Review:
    """One review episode: a decision contradicted by the data, raised once as a Task."""

    patient: str
    subject: str
    task: str | None
    identifier: str
    key: str
    decision: str
    criteria: list[str]
    reason: str
    opened_on: date
    opened_at: str
    closed_on: date | None = None
    closed_why: str | None = None
    id: int | None = None
    trial: str = ""


@dataclass
class AuditEntry:
    at: str
    patient: str
    subject: str | None
    actor: str
    source: str
    before: str | None
    after: str | None
    why: str | None
    field: str = "status"
    trial: str = ""


@dataclass
class TrialRow:
    """A trial of the portfolio, as its last night saw it."""

    id: str
    title: str
    path: str
    digest: str
    added_on: date
    last_as_of: date
    active: bool = True


@dataclass
class LastRun:
    as_of: date
    server_time: str | None


class State:
    """The state file. ``lock=True`` (the nightly job) takes the exclusive run lock: one run
    writes at a time. ``lock=False`` (the web app, reports) shares the file with a running
    night: SQLite's WAL journal lets readers read while the night writes, and every write of
    theirs is a short transaction of its own."""

    def __init__(self, path: str | Path, lock: bool = True):
        self.path = Path(path)
        self.lock = lock
        self._lock_fh: Any = None
        self.db: sqlite3.Connection | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "State":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.lock:
            self._take_lock()
        if not self.path.exists():
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # patient data: owner only
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.close()
            raise StateError(f"{self.path}: not a usable state file ({e})") from None

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock_fh = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._lock_fh.read().strip()
            self._lock_fh.close()
            self._lock_fh = None
            raise StateLocked(f"another nightly run is using {self.path} ({holder or 'pid unknown'}); this run exits without doing anything") from None
        self._lock_fh.seek(0)
        self._lock_fh.truncate()
        self._lock_fh.write(f"pid {os.getpid()}")
        self._lock_fh.flush()

    def _migrate(self) -> None:
        """Create or bring an existing file up to ``SCHEMA_VERSION``, in one transaction."""
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer fhir-matcher (schema {version}, this one reads up to {SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "patients" not in tables:  # a new file
                _script(db, SCHEMA)
            else:  # version 0 or 2: bring it to 2's tables, then move every row to its trial
                _script(db, SCHEMA_V2_TABLES)
                row = db.execute("SELECT value FROM meta WHERE key = 'trial'").fetchone()
                trial = row[0] if row else ""
                for statement in MIGRATE_V2:
                    if statement == "@SCHEMA":
                        _script(db, SCHEMA)
                    else:
                        db.execute(statement, {"trial": trial} if ":trial" in statement else {})
                digest = db.execute("SELECT value FROM meta WHERE key = 'trial_digest'").fetchone()
                last = db.execute("SELECT as_of FROM runs WHERE ok = 1 ORDER BY id DESC LIMIT 1").fetchone()
                first = db.execute("SELECT as_of FROM runs WHERE ok = 1 ORDER BY id LIMIT 1").fetchone()
                if trial and digest and last:
                    db.execute("INSERT OR REPLACE INTO trials VALUES (?, ?, '', ?, ?, ?, 1)", (trial, trial, digest[0], first[0], last[0]))
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # ------------------------------------------------------------ reading

    @property
    def _db(self) -> sqlite3.Connection:
        assert self.db is not None, "state not open"
        return self.db

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def last_success(self) -> LastRun | None:
        row = self._db.execute("SELECT as_of, server_time FROM runs WHERE ok = 1 ORDER BY id DESC LIMIT 1").fetchone()
        return LastRun(date.fromisoformat(row[0]), row[1]) if row else None

    def last_summary(self) -> dict[str, Any] | None:
        """The last successful night's run.json summary (without its problems)."""
        row = self._db.execute("SELECT summary FROM runs WHERE ok = 1 ORDER BY id DESC LIMIT 1").fetchone()
        return json.loads(row[0]) if row else None

    def trials(self, active_only: bool = True) -> dict[str, TrialRow]:
        sql = "SELECT id, title, path, digest, added_on, last_as_of, active FROM trials" + (" WHERE active = 1" if active_only else "") + " ORDER BY id"
        return {r[0]: TrialRow(r[0], r[1], r[2], r[3], date.fromisoformat(r[4]), date.fromisoformat(r[5]), bool(r[6])) for r in self._db.execute(sql)}

    def patients(self, trial: str) -> dict[str, PatientState]:
        rows = self._db.execute(f"SELECT {_PATIENT_COLUMNS} FROM patients p WHERE p.trial = ?", (trial,))
        return {p.patient: p for p in map(_patient_state, rows)}

    def patient_everywhere(self, patient: str) -> dict[str, PatientState]:
        """One patient's state in every active trial, by trial id."""
        rows = self._db.execute(f"SELECT {_PATIENT_COLUMNS} FROM patients p JOIN trials t ON t.id = p.trial AND t.active = 1 WHERE p.patient = ?", (patient,))
        return {p.trial: p for p in map(_patient_state, rows)}

    def decisions(self, trial: str) -> dict[str, Decision]:
        out = {}
        rows = self._db.execute("SELECT patient, subject, status, changed_at, first_seen_on, first_seen_at, last_seen_on, version FROM decisions WHERE trial = ?", (trial,))
        for row in rows:
            out[row[0]] = Decision(row[0], row[1], row[2], row[3], date.fromisoformat(row[4]), row[5], date.fromisoformat(row[6]), row[7], trial)
        return out

    def reviews(self, trial: str, open_only: bool = False) -> list[Review]:
        sql = "SELECT id, patient, subject, task, identifier, key, decision, criteria, reason, opened_on, opened_at, closed_on, closed_why FROM reviews WHERE trial = ?"
        if open_only:
            sql += " AND closed_on IS NULL"
        out = []
        for row in self._db.execute(sql + " ORDER BY id", (trial,)):
            out.append(Review(row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]), row[8], date.fromisoformat(row[9]), row[10],
                              _day(row[11]), row[12], row[0], trial))
        return out

    def audit(self, trial: str | None = None, patient: str | None = None) -> list[AuditEntry]:
        where, args = _where(trial=trial, patient=patient)
        rows = self._db.execute("SELECT at, patient, subject, actor, source, before, after, why, field, trial FROM audit" + where + " ORDER BY id", args)
        return [AuditEntry(*row) for row in rows]

    # ------------------------------------------------------------ writing (nightly)

    def commit_run(
        self,
        *,
        trials: Iterable[TrialRow],
        patients: Iterable[PatientState],
        meta: dict[str, str],
        started_at: str,
        finished_at: str,
        as_of: date,
        server_time: str | None,
        summary: dict[str, Any],
        decisions: dict[str, Iterable[Decision]] | None = None,
        reviews: Iterable[Review] = (),
        audit: Iterable[AuditEntry] = (),
        removed: Iterable[str] = (),
    ) -> None:
        """Everything a successful run learned, in one transaction.

        ``decisions`` (when given) replaces each named trial's rows: every decision seen on the
        server this night. ``reviews`` with an id update that row, others are added.
        ``removed``: trials taken out of the portfolio; their results are dropped (a trial put
        back is screened in full), their decisions, reviews and audit stay.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for trial in removed:
                db.execute("UPDATE trials SET active = 0 WHERE id = ?", (trial,))
                db.execute("DELETE FROM patients WHERE trial = ?", (trial,))
            db.executemany("INSERT OR REPLACE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(t.id, t.title, t.path, t.digest, t.added_on.isoformat(), t.last_as_of.isoformat(), int(t.active)) for t in trials])
            for trial, rows in (decisions or {}).items():
                db.execute("DELETE FROM decisions WHERE trial = ?", (trial,))
                db.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [_decision_row(trial, d) for d in rows])
            for r in reviews:
                values = (r.trial, r.patient, r.subject, r.task, r.identifier, r.key, r.decision, json.dumps(r.criteria), r.reason, r.opened_on.isoformat(), r.opened_at,
                          r.closed_on.isoformat() if r.closed_on else None, r.closed_why)
                if r.id is None:
                    db.execute("INSERT INTO reviews (trial, patient, subject, task, identifier, key, decision, criteria, reason, opened_on, opened_at, closed_on, closed_why) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
                else:
                    db.execute("UPDATE reviews SET trial = ?, patient = ?, subject = ?, task = ?, identifier = ?, key = ?, decision = ?, criteria = ?, reason = ?, "
                               "opened_on = ?, opened_at = ?, closed_on = ?, closed_why = ? WHERE id = ?", (*values, r.id))
            _insert_audit(db, audit)
            db.executemany(
                "INSERT OR REPLACE INTO patients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (p.trial, p.patient, p.status, p.digest, _iso(p.recheck_on), p.evaluated_as_of.isoformat(),
                     json.dumps(p.result, ensure_ascii=False), p.written_status, p.written_digest, _iso(p.first_seen_on), _iso(p.changed_on))
                    for p in patients
                ],
            )
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(meta.items()))
            db.execute(
                "INSERT INTO runs (started_at, finished_at, as_of, server_time, ok, summary) VALUES (?, ?, ?, ?, 1, ?)",
                (started_at, finished_at, as_of.isoformat(), server_time, json.dumps(summary, ensure_ascii=False)),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def record_failure(self, *, started_at: str, finished_at: str, as_of: date, error: str) -> None:
        """A failed run is logged for operators; it changes nothing else."""
        self._db.execute(
            "INSERT INTO runs (started_at, finished_at, as_of, server_time, ok, summary) VALUES (?, ?, ?, NULL, 0, ?)",
            (started_at, finished_at, as_of.isoformat(), json.dumps({"error": error})),
        )

    # ------------------------------------------------------------ writing (people, through the web app)

    def add_audit(self, trial: str, entries: Iterable[AuditEntry]) -> None:
        """Decisions and checklist answers people make outside the nightly job."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            _insert_audit(db, [AuditEntry(a.at, a.patient, a.subject, a.actor, a.source, a.before, a.after, a.why, a.field, trial) for a in entries])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def record_decision(self, trial: str, decision: Decision) -> None:
        """A decision made through the web app, shown before the next night sees it on the server."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _decision_row(trial, decision))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def record_access(self, user: str, patient: str | None, trial: str | None, what: str, at: str | None = None) -> None:
        """Which user opened which patient (or did what): the access audit."""
        when = at or datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._db.execute("INSERT INTO access (at, user, patient, trial, what) VALUES (?, ?, ?, ?, ?)", (when, user, patient, trial, what))

    def access_log(self, user: str | None = None, patient: str | None = None) -> list[tuple[str, str, str | None, str | None, str]]:
        where, args = _where(user=user, patient=patient)
        return [tuple(r) for r in self._db.execute("SELECT at, user, patient, trial, what FROM access" + where + " ORDER BY id", args)]


def _script(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


_PATIENT_COLUMNS = "p.trial, p.patient, p.status, p.digest, p.recheck_on, p.evaluated_as_of, p.result, p.written_status, p.written_digest, p.first_seen_on, p.changed_on"


def _patient_state(r: tuple) -> PatientState:
    return PatientState(r[1], r[2], r[3], _day(r[4]), date.fromisoformat(r[5]), json.loads(r[6]), r[7], r[8], _day(r[9]), _day(r[10]), r[0])


def _where(**equal: str | None) -> tuple[str, list[str]]:
    """A WHERE clause for the columns given a value (None: any)."""
    given = {k: v for k, v in equal.items() if v is not None}
    return (" WHERE " + " AND ".join(f"{k} = ?" for k in given) if given else ""), list(given.values())


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _decision_row(trial: str, d: Decision) -> tuple:
    return (trial, d.patient, d.subject, d.status, d.changed_at, d.first_seen_on.isoformat(), d.first_seen_at, d.last_seen_on.isoformat(), d.version)


def _insert_audit(db: sqlite3.Connection, audit: Iterable[AuditEntry]) -> None:
    db.executemany(
        "INSERT INTO audit (at, trial, patient, subject, actor, source, field, before, after, why) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(a.at, a.trial, a.patient, a.subject, a.actor, a.source, a.field, a.before, a.after, a.why) for a in audit],
    )
