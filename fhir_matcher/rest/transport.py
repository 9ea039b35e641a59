"""HTTP transport: one pooled requests.Session, timeouts, retries with backoff, cost counters.

Retries 429, 5xx (except 501) and connection errors with exponential backoff, honouring
Retry-After. Every request and the bytes it read are counted, for run.json. TLS verification
is always on; a custom CA bundle can be given.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger("fhir_matcher")

RETRY_STATUSES = {429, 500, 502, 503, 504}


class TransportError(Exception):
    """The server could not be reached or kept failing; the message says what happened."""


@dataclass
class Cost:
    requests: int = 0
    bytes: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n_bytes: int, retry: bool = False) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += n_bytes
            self.retries += retry

    def add_bytes(self, n_bytes: int) -> None:
        with self._lock:
            self.bytes += n_bytes

    def to_json(self) -> dict[str, int]:
        return {"requests": self.requests, "bytes": self.bytes, "retries": self.retries}


def retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    if parsed is None:
        return None
    return max(0.0, parsed.timestamp() - time.time())


class Transport:
    def __init__(
        self,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        ca_bundle: str | None = None,
        auth: requests.auth.AuthBase | None = None,
        cert: tuple[str, str] | None = None,
        pool: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ):
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # Passed on every request too: requests lets REQUESTS_CA_BUNDLE override session.verify.
        self.verify: str | bool = ca_bundle if ca_bundle else True
        self.session.verify = self.verify
        if cert:
            self.session.cert = cert  # mutual TLS
        self.session.headers["User-Agent"] = "fhir-matcher"
        self.auth = auth
        if hasattr(auth, "bind"):
            auth.bind(self.session)  # token requests share TLS settings and the pool
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.cost = Cost()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self.verify)
        if self.auth is not None:
            kwargs.setdefault("auth", self.auth)
        attempt = 0
        renewed = False
        while True:
            retry = attempt > 0
            try:
                resp = self.session.request(method, url, **kwargs)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as e:
                self.cost.add(0, retry)
                if attempt >= self.retries:
                    raise TransportError(f"{method} {_path(url)}: {_short(e)} (after {attempt + 1} attempts)") from None
                delay = self._delay(attempt, None)
                log.warning("%s %s: %s; retrying in %.1fs", method, _path(url), type(e).__name__, delay)
            else:
                self.cost.add(0 if kwargs.get("stream") else len(resp.content or b""), retry)  # streamed: the caller counts
                if resp.status_code == 401 and not renewed and hasattr(self.auth, "invalidate"):
                    self.auth.invalidate()  # an expired or revoked token: fetch a new one, once
                    renewed = True
                    continue
                if resp.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    return resp
                delay = self._delay(attempt, retry_after(resp))
                log.warning("%s %s: HTTP %s; retrying in %.1fs", method, _path(url), resp.status_code, delay)
            self.sleep(delay)
            attempt += 1

    def download(self, url: str, dest: Path, *, headers: dict[str, str], with_auth: bool) -> int:
        """Stream ``url`` into ``dest`` (created owner-only), with the same retries; returns bytes.

        ``request`` retries the connection and 429/5xx answers; a body cut off while
        streaming is fetched again here.
        """
        for attempt in range(self.retries + 1):
            resp = self.request("GET", url, headers=headers, auth=self.auth if with_auth else None, stream=True)
            with resp:
                if resp.status_code != 200:
                    raise TransportError(f"GET {_path(url)}: HTTP {resp.status_code}")
                written = 0
                try:
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        for chunk in resp.iter_content(chunk_size=1 << 20):
                            fh.write(chunk)
                            written += len(chunk)
                except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                    self.cost.add_bytes(written)
                    if attempt >= self.retries:
                        raise TransportError(f"GET {_path(url)}: {_short(e)} (after {attempt + 1} attempts)") from None
                    self.sleep(self._delay(attempt, None))
                    continue
            self.cost.add_bytes(written)
            return written
        raise TransportError(f"GET {_path(url)}: gave up")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff * 4)
        return min(self.max_backoff, self.backoff * (2**attempt)) * (0.5 + random.random() / 2)

    def close(self) -> None:
        self.session.close()


def _path(url: str) -> str:
    """A URL without its query (queries can carry patient ids), for messages and logs."""
    return url.split("?", 1)[0]


def _short(e: Exception) -> str:
    text = str(e)
    if "Connection refused" in text or "Failed to establish" in text:
        return "connection refused"
    if isinstance(e, requests.Timeout):
        return "timed out"
    return type(e).__name__
