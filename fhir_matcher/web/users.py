"""Local accounts of the review web app, in the state file's ``users`` table.

Passwords are hashed with Argon2id (argon2-cffi, the maintained binding of the Password
Hashing Competition's winner, with its recommended parameters); the hash carries its own
salt and parameters, so a stronger default later rehashes at the next sign-in.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("viewer", "coordinator")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10

_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not a password anyone has")  # verified against when the name is unknown: same cost either way


class UserError(Exception):
    """A user command or sign-in cannot be done; the message says why."""


@dataclass
class User:
    name: str
    role: str
    created_at: str
    disabled: bool


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise UserError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    return password


def add(db: sqlite3.Connection, name: str, role: str, password: str) -> User:
    check_name(name)
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)} (not {role!r})")
    check_password(password)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        db.execute("INSERT INTO users (name, role, password_hash, created_at, disabled) VALUES (?, ?, ?, ?, 0)",
                   (name, role, _hasher.hash(password), created))
    except sqlite3.IntegrityError:
        raise UserError(f"user {name} exists already (remove it first, or --disable it)") from None
    return User(name, role, created, False)


def all_users(db: sqlite3.Connection) -> list[User]:
    return [User(r[0], r[1], r[2], bool(r[3])) for r in db.execute("SELECT name, role, created_at, disabled FROM users ORDER BY name")]


def get(db: sqlite3.Connection, name: str) -> User | None:
    r = db.execute("SELECT name, role, created_at, disabled FROM users WHERE name = ?", (name,)).fetchone()
    return User(r[0], r[1], r[2], bool(r[3])) if r else None


def remove(db: sqlite3.Connection, name: str) -> None:
    if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
        raise UserError(f"no user {name}")


def set_disabled(db: sqlite3.Connection, name: str, disabled: bool) -> None:
    if db.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name)).rowcount == 0:
        raise UserError(f"no user {name}")


def authenticate(db: sqlite3.Connection, name: str, password: str) -> User | None:
    """The user when the name and password match an enabled account, else None (never says which was wrong)."""
    row = db.execute("SELECT password_hash, disabled FROM users WHERE name = ?", (name,)).fetchone()
    try:
        _hasher.verify(row[0] if row and row[0] else _DUMMY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or row[1] or not row[0]:  # disabled, or an account that signs in through OIDC only
        return None
    if _hasher.check_needs_rehash(row[0]):
        db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (_hasher.hash(password), name))
    return get(db, name)
