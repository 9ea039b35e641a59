"""Bulk Data source: ``$export`` the types the criteria read, download the NDJSON, screen it.

Kick-off (system level, or ``Group/<id>/$export``) with ``_type`` and, where it narrows
without changing any answer, ``_typeFilter``; poll the status URL honouring Retry-After
(exponential backoff otherwise); download each output file into a private temporary folder
(with the access token only when the manifest says ``requiresAccessToken``); then the file
source screens it, cohort first. The job is deleted on the server afterwards.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

from ..fhirjson import as_dict, as_list, as_str
from ..rest.capability import REFUSAL_STATUSES, export_refused
from ..rest.client import FhirClient, FhirError, outcome_text
from ..rest.transport import retry_after
from ..plan import ReadPlan

log = logging.getLogger("fhir_matcher")

NDJSON = "application/fhir+ndjson"


@dataclass
class ExportJob:
    status_url: str
    files: list[Path] = field(default_factory=list)
    polls: int = 0


def export_types(plan: ReadPlan, group: bool) -> list[str]:
    """Types to ``$export`` for a read plan (see ReadPlan.export_types)."""
    return plan.export_types(group)


def type_filters(plan: ReadPlan, as_of: date, tag: str | None, types: list[str]) -> list[str]:
    """``_typeFilter`` queries for a read plan (see ReadPlan.type_filters)."""
    return plan.type_filters(as_of, tag, types)


class BulkExport:
    def __init__(
        self,
        client: FhirClient,
        *,
        types: list[str],
        filters: list[str] = (),
        group: str | None = None,
        since: str | None = None,
        group_export: bool | None = None,
        poll_max: float = 60.0,
        timeout: float = 3600.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.types = types
        self.filters = list(filters)
        self.group = group
        self.since = since  # only what changed after this instant (_since)
        self.group_export = group_export  # whether the CapabilityStatement offers Group export (None: unknown)
        self.poll_max = poll_max
        self.timeout = timeout
        self.sleep = sleep
        self.problems: list[str] = []  # malformed parts of the manifest, named

    def kick_off(self) -> str:
        path = f"Group/{self.group}/$export" if self.group else "$export"
        params = [("_type", ",".join(self.types)), ("_outputFormat", NDJSON)] + [("_typeFilter", f) for f in self.filters]
        if self.since:
            params.append(("_since", self.since))
        resp = self.client.transport.request(
            "GET", f"{self.client.base}/{path}", params=params,
            headers={"Accept": "application/fhir+json", "Prefer": "respond-async"},
        )
        if resp.status_code != 202:
            if not self.group and resp.status_code in REFUSAL_STATUSES | {403} and self.group_export is not False:
                # Epic, Oracle Health: Group export only; say so and what to use.
                raise export_refused(FhirError(f"GET {self.client.base}/$export: HTTP {resp.status_code}{_outcome(resp)}", resp.status_code))
            raise FhirError(f"bulk export kick-off: HTTP {resp.status_code}{_outcome(resp)} (does the server support $export?)", resp.status_code)
        location = resp.headers.get("Content-Location")
        if not location:
            raise FhirError("bulk export kick-off: the server gave no Content-Location to poll")
        return location

    def wait(self, status_url: str, job: ExportJob) -> dict:
        """Poll until the manifest is ready."""
        deadline = time.monotonic() + self.timeout
        delay = 1.0
        while True:
            resp = self.client.transport.request("GET", status_url, headers={"Accept": "application/json"})
            job.polls += 1
            if resp.status_code == 200:
                try:
                    return resp.json()
                except ValueError:
                    raise FhirError("bulk export: the completed status is not a JSON manifest") from None
            if resp.status_code != 202:
                raise FhirError(f"bulk export failed: HTTP {resp.status_code}{_outcome(resp)}", resp.status_code)
            if time.monotonic() > deadline:
                raise FhirError(f"bulk export not finished after {self.timeout:.0f} s")
            wait = retry_after(resp)
            self.sleep(min(wait if wait is not None else delay, self.poll_max))
            delay = min(delay * 2, self.poll_max)

    def download(self, manifest: dict, folder: Path, job: ExportJob) -> None:
        with_token = bool(manifest.get("requiresAccessToken"))
        if "output" in manifest and not isinstance(manifest["output"], list):
            self.problems.append("bulk export manifest: output is not a list (read as one item)")
        for n, item in enumerate(as_list(manifest.get("output")), 1):
            url, rtype = as_str(as_dict(item).get("url")), as_str(as_dict(item).get("type")) or "Resource"
            if not url:
                self.problems.append(f"bulk export manifest: output {n - 1} has no url (skipped)")
                continue
            dest = folder / f"{rtype}.{n:04d}.ndjson"
            self.client.transport.download(url, dest, headers={"Accept": NDJSON}, with_auth=with_token)
            job.files.append(dest)
        for err in as_list(manifest.get("error")):
            log.warning("bulk export reported an error file for %s", as_str(as_dict(err).get("type")) or "a type")

    def run(self, folder: Path) -> ExportJob:
        status_url = self.kick_off()
        job = ExportJob(status_url)
        try:
            manifest = self.wait(status_url, job)
            self.download(manifest, folder, job)
        finally:
            try:  # tell the server it may delete the files
                self.client.transport.request("DELETE", status_url)
            except Exception:  # best effort
                log.debug("could not delete the export job", exc_info=True)
        return job


def _outcome(resp) -> str:
    try:
        text = outcome_text(resp.json())
    except ValueError:
        text = ""
    return f": {text}" if text else ""
