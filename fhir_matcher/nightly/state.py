"""The nightly job's memory: an embedded SQLite file, plus a lock so only one run writes it.

A run reads the state at its start and writes everything it learned in one transaction at
its very end, after the server write-back succeeded. A run that fails midway leaves the
state as it was, and the next night redoes the work (the write-back is idempotent).
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
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            self.close()
            raise StateError(f"{self.path}: not a usable state file ({e})") from None

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
    ) -> None:
        """Everything a successful run learned, in one transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
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
