"""The nightly job's memory: an embedded SQLite file, plus a lock so only one run writes it.

A run reads the state at its start and writes everything it learned in one transaction at
its very end, after the server write-back succeeded. A run that fails midway leaves the
state as it was, and the next night redoes the work (the write-back is idempotent).

Schema versions live in ``PRAGMA user_version``; ``open`` migrates an older file in place
(version 0: meta, runs, patients; version 2 adds decisions, reviews and the audit log).
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
from datetime import date
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
CREATE TABLE IF NOT EXISTS patients (
    patient TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    digest TEXT NOT NULL,
    recheck_on TEXT,
    evaluated_as_of TEXT NOT NULL,
    result TEXT NOT NULL,
    written_status TEXT,
    written_digest TEXT
);
"""

# Version 2: what people decided on the server, the reviews raised, and an audit log.
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS decisions (
    patient TEXT PRIMARY KEY,          -- Patient/<id>
    subject TEXT NOT NULL,             -- ResearchSubject/<id> on the server
    status TEXT NOT NULL,              -- the person's status (eligible, on-study, not-registered, ...)
    changed_at TEXT,                   -- the subject's meta.lastUpdated when first seen with this status
    first_seen_on TEXT NOT NULL,       -- as-of date of the night that first saw it
    first_seen_at TEXT NOT NULL,       -- UTC time of that night
    last_seen_on TEXT NOT NULL,
    version TEXT                       -- the subject's meta.versionId last seen
);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
CREATE INDEX IF NOT EXISTS reviews_patient ON reviews (patient);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,                  -- UTC time of the change (or when it was seen)
    patient TEXT NOT NULL,
    subject TEXT,
    actor TEXT NOT NULL,               -- 'fhir-matcher', 'seen on server', or a user name (web app)
    source TEXT NOT NULL,              -- 'nightly', 'server', 'web', ...
    field TEXT NOT NULL DEFAULT 'status',
    before TEXT,
    after TEXT,
    why TEXT
);
CREATE INDEX IF NOT EXISTS audit_patient ON audit (patient, at);
"""

SCHEMA_VERSION = 2


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


@dataclass
class LastRun:
    as_of: date
    server_time: str | None


class State:
    def __init__(self, path: str | Path):
        self.path = Path(path)
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
        if not self.path.exists():
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # patient data: owner only
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.close()
            raise StateError(f"{self.path}: not a usable state file ({e})") from None

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
            for statement in (SCHEMA + SCHEMA_V2).split(";"):
                if statement.strip():
                    db.execute(statement)
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

    def patients(self) -> dict[str, PatientState]:
        out = {}
        for row in self._db.execute("SELECT patient, status, digest, recheck_on, evaluated_as_of, result, written_status, written_digest FROM patients"):
            out[row[0]] = PatientState(
                row[0], row[1], row[2], date.fromisoformat(row[3]) if row[3] else None, date.fromisoformat(row[4]),
                json.loads(row[5]), row[6], row[7],
            )
        return out

    def decisions(self) -> dict[str, Decision]:
        out = {}
        for row in self._db.execute("SELECT patient, subject, status, changed_at, first_seen_on, first_seen_at, last_seen_on, version FROM decisions"):
            out[row[0]] = Decision(row[0], row[1], row[2], row[3], date.fromisoformat(row[4]), row[5], date.fromisoformat(row[6]), row[7])
        return out

    def reviews(self, open_only: bool = False) -> list[Review]:
        sql = "SELECT id, patient, subject, task, identifier, key, decision, criteria, reason, opened_on, opened_at, closed_on, closed_why FROM reviews"
        if open_only:
            sql += " WHERE closed_on IS NULL"
        out = []
        for row in self._db.execute(sql + " ORDER BY id"):
            out.append(Review(row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]), row[8], date.fromisoformat(row[9]), row[10],
                              date.fromisoformat(row[11]) if row[11] else None, row[12], row[0]))
        return out

    def audit(self, patient: str | None = None) -> list[AuditEntry]:
        sql = "SELECT at, patient, subject, actor, source, before, after, why, field FROM audit"
        rows = self._db.execute(sql + (" WHERE patient = ? ORDER BY id" if patient else " ORDER BY id"), (patient,) if patient else ())
        return [AuditEntry(*row) for row in rows]

    # ------------------------------------------------------------ writing

    def commit_run(
        self,
        *,
        patients: Iterable[PatientState],
        meta: dict[str, str],
        started_at: str,
        finished_at: str,
        as_of: date,
        server_time: str | None,
        summary: dict[str, Any],
        decisions: Iterable[Decision] | None = None,
        reviews: Iterable[Review] = (),
        audit: Iterable[AuditEntry] = (),
    ) -> None:
        """Everything a successful run learned, in one transaction.

        ``decisions`` (when given) replaces the table: it is every decision seen on the server
        this night. ``reviews`` with an id update that row, others are added.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if decisions is not None:
                db.execute("DELETE FROM decisions")
                db.executemany(
                    "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(d.patient, d.subject, d.status, d.changed_at, d.first_seen_on.isoformat(), d.first_seen_at, d.last_seen_on.isoformat(), d.version) for d in decisions],
                )
            for r in reviews:
                values = (r.patient, r.subject, r.task, r.identifier, r.key, r.decision, json.dumps(r.criteria), r.reason, r.opened_on.isoformat(), r.opened_at,
                          r.closed_on.isoformat() if r.closed_on else None, r.closed_why)
                if r.id is None:
                    db.execute("INSERT INTO reviews (patient, subject, task, identifier, key, decision, criteria, reason, opened_on, opened_at, closed_on, closed_why) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
                else:
                    db.execute("UPDATE reviews SET patient = ?, subject = ?, task = ?, identifier = ?, key = ?, decision = ?, criteria = ?, reason = ?, "
                               "opened_on = ?, opened_at = ?, closed_on = ?, closed_why = ? WHERE id = ?", (*values, r.id))
            db.executemany(
                "INSERT INTO audit (at, patient, subject, actor, source, field, before, after, why) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(a.at, a.patient, a.subject, a.actor, a.source, a.field, a.before, a.after, a.why) for a in audit],
            )
            db.executemany(
                "INSERT OR REPLACE INTO patients VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (p.patient, p.status, p.digest, p.recheck_on.isoformat() if p.recheck_on else None, p.evaluated_as_of.isoformat(),
                     json.dumps(p.result, ensure_ascii=False), p.written_status, p.written_digest)
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
