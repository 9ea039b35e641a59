"""A FHIR R4 REST client over the transport: capabilities, paged searches, transactions."""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..fhirjson import Json, as_dict, as_list, as_str, bundle_entries
from .query import Search
from .transport import Transport, TransportError

log = logging.getLogger("fhir_matcher")

FHIR_JSON = "application/fhir+json"


class FhirError(Exception):
    """The server answered with an error; the message carries its OperationOutcome text."""

    def __init__(self, message: str, status: int | None = None, outcome: Json | None = None):
        super().__init__(message)
        self.status = status
        self.outcome = outcome


def outcome_text(outcome: Any) -> str:
    """The diagnostics of an OperationOutcome, joined (what a server says went wrong)."""
    issues = []
    for issue in as_list(as_dict(outcome).get("issue")):
        issue = as_dict(issue)
        text = as_str(issue.get("diagnostics")) or as_str(as_dict(issue.get("details")).get("text")) or as_str(issue.get("code"))
        if text:
            issues.append(text)
    return "; ".join(issues)


class FhirClient:
    def __init__(self, base_url: str, transport: Transport | None = None):
        self.base = base_url.rstrip("/")
        self.transport = transport or Transport()
        self._origin = urlsplit(self.base)
        self._warned_rewrite = False
        self.server_date: str | None = None  # the Date header of the latest answer (server clock)
        self.problems: list[tuple[str, str]] = []  # malformed search entries: (where, reason)
        self.capability: Json | None = None  # the latest CapabilityStatement read
        self._batch_refused = False  # the server refused a batch of searches: no more batches
        self._prefetched: dict[str, Json] = {}  # search URL -> its first page, read in a batch

    # ------------------------------------------------------------ plumbing

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base}/{path.lstrip('/')}" if path else self.base

    def _same_origin(self, url: str) -> str:
        """Page links that name another host (an internal name behind a proxy) go to our base."""
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) == (self._origin.scheme, self._origin.netloc):
            return url
        if not self._warned_rewrite:
            log.warning("server returned page links for another host; following them on %s", self._origin.netloc)
            self._warned_rewrite = True
        return urlunsplit((self._origin.scheme, self._origin.netloc, parts.path, parts.query, parts.fragment))

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, expect_json: bool = True) -> Json:
        hdrs = {"Accept": FHIR_JSON}
        if body is not None:
            hdrs["Content-Type"] = FHIR_JSON
        hdrs.update(headers or {})
        url = self._url(path)
        data = json.dumps(body).encode("utf-8") if body is not None else None
        where = f"{method} {url.split('?', 1)[0]}"
        for attempt in range(self.transport.retries + 1):
            resp = self.transport.request(method, url, data=data, headers=hdrs)
            self.server_date = resp.headers.get("Date") or self.server_date
            try:
                payload = resp.json() if resp.content else {}
                break
            except ValueError:
                payload = None
                # A truncated page: reading is safe to repeat, writing is not.
                if method != "GET" or resp.status_code >= 400 or "json" not in resp.headers.get("Content-Type", ""):
                    break
                log.warning("%s: the answer was cut short; reading it again", where)
        if resp.status_code >= 400:
            text = outcome_text(payload) if isinstance(payload, dict) else ""
            if resp.status_code in (401, 403):
                text = text or "not authorized (check the credentials and scopes)"
            raise FhirError(f"{where}: HTTP {resp.status_code}" + (f": {text}" if text else ""), resp.status_code, payload if isinstance(payload, dict) else None)
        if expect_json and not isinstance(payload, dict):
            raise FhirError(f"{where}: the answer is not FHIR JSON (content type {resp.headers.get('Content-Type', '?')})", resp.status_code)
        return payload if isinstance(payload, dict) else {}

    # ------------------------------------------------------------ operations

    def capabilities(self) -> Json:
        cs = self.request("GET", "metadata")
        if cs.get("resourceType") != "CapabilityStatement":
            raise FhirError(f"{self.base}/metadata is not a CapabilityStatement")
        version = as_str(cs.get("fhirVersion")) or ""
        if version and not version.startswith("4.0"):
            log.warning("server reports FHIR %s; fhir-matcher reads FHIR R4 (4.0.x)", version)
        self.capability = cs
        return cs

    def pages(self, search: Search, first: Json | None = None) -> Iterator[Json]:
        """Every Bundle page of a search, following Bundle.link next; ``first``: its first page,
        already read (in a batch)."""
        url: str | None = search.url(self.base)
        if first is None and url in self._prefetched:
            first = self._prefetched.pop(url)
        seen: set[str] = set()
        while url:
            if url in seen:
                raise FhirError(f"{search.resource_type} search: the server's next link repeats a page")
            seen.add(url)
            page = first if first is not None else self.request("GET", url)
            first = None
            if page.get("resourceType") != "Bundle":
                raise FhirError(f"{search.resource_type} search: the answer is not a Bundle")
            yield page
            nxt = next((as_str(as_dict(l).get("url")) for l in as_list(page.get("link")) if as_dict(l).get("relation") == "next"), None)
            url = self._same_origin(nxt) if nxt else None

    def search(self, search: Search, first: Json | None = None) -> Iterator[Json]:
        """Every resource of a search (matches and includes), across all pages.

        A malformed entry is skipped and named in ``problems`` (page and entry index).
        """
        for n, page in enumerate(self.pages(search, first), 1):
            entries, problems = bundle_entries(page)
            for at, reason in problems:
                where = f"{search.resource_type} search page {n}" + (f" {at}" if at else "")
                self.problems.append((where, reason))
                log.warning("%s: %s", where, reason)
            for entry in entries:
                resource = entry.resource
                if resource is not None and resource.get("resourceType") != "OperationOutcome":
                    yield resource

    def offers_batch(self) -> bool:
        """Does the server's CapabilityStatement (read by ``capabilities``) list ``batch`` or
        ``transaction``? HAPI FHIR, for one, answers batches but lists only transaction; a
        server that then refuses a batch is not asked again (searches go one by one)."""
        if self._batch_refused:
            return False
        for rest in as_list(as_dict(self.capability).get("rest")):
            if any(as_dict(i).get("code") in ("batch", "transaction") for i in as_list(as_dict(rest).get("interaction"))):
                return True
        return False

    def first_pages(self, searches: Sequence[Search]) -> list[Json | None]:
        """The first page of each search, all in one ``batch`` of GETs when the server offers
        batch (one request instead of many; later pages are read as usual). None for a search
        the batch did not answer with a Bundle: read it alone, where its own error shows."""
        if len(searches) < 2 or not self.offers_batch():
            return [None] * len(searches)
        bundle = {"resourceType": "Bundle", "type": "batch",
                  "entry": [{"request": {"method": "GET", "url": s.url("").lstrip("/")}} for s in searches]}
        try:
            answer = self.request("POST", "", bundle)
        except FhirError as e:
            log.info("batch of %d searches refused (%s); searching one by one", len(searches), e)
            self._batch_refused = True
            return [None] * len(searches)
        entries = as_list(answer.get("entry")) if answer.get("resourceType") == "Bundle" else []
        out: list[Json | None] = []
        for n in range(len(searches)):
            entry = as_dict(entries[n]) if n < len(entries) else {}
            status = as_str(as_dict(entry.get("response")).get("status")) or ""
            page = as_dict(entry.get("resource"))
            out.append(page if status.startswith("200") and page.get("resourceType") == "Bundle" else None)
        return out

    def prefetch(self, searches: Sequence[Search]) -> None:
        """Read the first pages of searches to come in one batch; each is used once, by the
        first ``pages``/``search`` of the same URL."""
        todo = [s for s in searches if s.url(self.base) not in self._prefetched]
        for search, page in zip(todo, self.first_pages(todo)):
            if page is not None:
                self._prefetched[search.url(self.base)] = page

    def search_all(self, searches: Sequence[Search]) -> list[list[Json]]:
        """Every resource of each search, first pages in one batch when the server offers it."""
        firsts = self.first_pages(searches)
        return [list(self.search(s, first)) for s, first in zip(searches, firsts)]

    def transaction(self, bundle: Json) -> Json:
        return self.request("POST", "", bundle)

    def close(self) -> None:
        self.transport.close()


__all__ = ["FhirClient", "FhirError", "TransportError", "outcome_text"]
