"""A FHIR R4 REST client over the transport: capabilities, paged searches, transactions."""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator
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

    def pages(self, search: Search) -> Iterator[Json]:
        """Every Bundle page of a search, following Bundle.link next."""
        url: str | None = search.url(self.base)
        seen: set[str] = set()
        while url:
            if url in seen:
                raise FhirError(f"{search.resource_type} search: the server's next link repeats a page")
            seen.add(url)
            page = self.request("GET", url)
            if page.get("resourceType") != "Bundle":
                raise FhirError(f"{search.resource_type} search: the answer is not a Bundle")
            yield page
            nxt = next((as_str(as_dict(l).get("url")) for l in as_list(page.get("link")) if as_dict(l).get("relation") == "next"), None)
            url = self._same_origin(nxt) if nxt else None

    def search(self, search: Search) -> Iterator[Json]:
        """Every resource of a search (matches and includes), across all pages.

        A malformed entry is skipped and named in ``problems`` (page and entry index).
        """
        for n, page in enumerate(self.pages(search), 1):
            entries, problems = bundle_entries(page)
            for at, reason in problems:
                where = f"{search.resource_type} search page {n}" + (f" {at}" if at else "")
                self.problems.append((where, reason))
                log.warning("%s: %s", where, reason)
            for entry in entries:
                resource = entry.resource
                if resource is not None and resource.get("resourceType") != "OperationOutcome":
                    yield resource

    def transaction(self, bundle: Json) -> Json:
        return self.request("POST", "", bundle)

    def close(self) -> None:
        self.transport.close()


__all__ = ["FhirClient", "FhirError", "TransportError", "outcome_text"]
