"""Server-side memory of sign-in flows and SMART access tokens.

The session cookie is signed, not encrypted: anything in it can be read by whoever holds the
browser. So the PKCE verifier, the nonce and the SMART access token stay in this process's
memory, keyed by random values; the cookie carries only those keys:

- a sign-in in progress: ``state`` -> the flow (PKCE verifier, nonce, fhirclient state...),
  for at most ``FLOW_TTL`` seconds and used once; the cookie holds the ``state`` too, so a
  callback is accepted only in the browser that started it;
- a SMART launch that succeeded: a random session key -> the access token, until it expires.

Consequence, said in the README: tokens live in one ``serve`` process. A restart (or a second
worker without sticky sessions) means launching again from the EHR.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

FLOW_TTL = 600  # seconds between leaving for the provider and coming back
MAX_ENTRIES = 10_000  # a bound on memory whatever happens (oldest dropped first)


@dataclass
class Entry:
    value: Any
    expires: float


class ExpiringStore:
    """A dict whose entries vanish after their expiry; thread-safe (endpoints run in a thread pool)."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._items: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def put(self, key: str, value: Any, ttl: float) -> None:
        with self._lock:
            now = self.clock()
            for k in [k for k, e in self._items.items() if e.expires <= now]:
                del self._items[k]
            while len(self._items) >= MAX_ENTRIES:
                del self._items[next(iter(self._items))]
            self._items[key] = Entry(value, now + ttl)

    def get(self, key: str | None) -> Any:
        with self._lock:
            entry = self._items.get(key or "")
            if entry is None:
                return None
            if entry.expires <= self.clock():
                del self._items[key or ""]
                return None
            return entry.value

    def pop(self, key: str | None) -> Any:
        with self._lock:
            entry = self._items.pop(key or "", None)
        if entry is None or entry.expires <= self.clock():
            return None
        return entry.value

    def __len__(self) -> int:
        return len(self._items)


def new_key() -> str:
    return secrets.token_urlsafe(32)


FLOWS = ExpiringStore()  # sign-ins in progress (OIDC and SMART)
TOKENS = ExpiringStore()  # SMART access tokens by session key


def claim_flow(session: dict[str, Any], state: str, kind: str) -> dict[str, Any] | None:
    """The sign-in flow a callback answers, used once: its ``state`` must be the one this
    browser's session started (``session["<kind>_flow"]``), and the flow of that kind."""
    mine = session.pop(f"{kind}_flow", None)
    flow = FLOWS.pop(state) if mine and hmac.compare_digest(state.encode(), str(mine).encode()) else None
    return flow if flow is not None and flow.get("kind") == kind else None
