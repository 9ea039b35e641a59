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
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

from ..engine.cohort import needed_types
from ..fhirjson import as_dict, as_list, as_str
from ..rest.capability import REFUSAL_STATUSES, export_refused
from ..rest.client import FhirClient, FhirError, outcome_text
from ..rest.transport import retry_after
from ..trial import Trial

log = logging.getLogger("fhir_matcher")

NDJSON = "application/fhir+ndjson"


@dataclass
class ExportJob:
    status_url: str
    files: list[Path] = field(default_factory=list)
    polls: int = 0


def export_types(trial: Trial, group: bool) -> list[str]:
    types = needed_types(trial) | {"Patient"}
    if not group:
        types.add("Medication")  # not in the patient compartment: only a system export has it
    return sorted(types)


def type_filters(trial: Trial, as_of: date, tag: str | None, types: list[str]) -> list[str]:
    """``_typeFilter`` queries that only drop what no criterion can use.

    Observations are limited to the longest window when every criterion reading them has
    one (the bundled trial's HIV and hepatitis tests look at any date, so it does not).
    A ``tag`` restricts every type to resources carrying it.
    """
    out = []
    windows = []
    all_windowed = True
    for c in trial.criteria:
        for rule in [c, *c.rules]:
            if rule.kind in ("lab", "lab-uln", "test-result"):
                if "window_days" in rule.params:
                    windows.append(int(rule.params["window_days"]))
                elif "window_months" in rule.params:
                    windows.append(31 * int(rule.params["window_months"]))
                else:
                    all_windowed = False
    tag_q = f"_tag={tag}" if tag else ""
    for t in types:
        parts = [tag_q] if tag_q else []
        if t == "Observation" and windows and all_windowed:
            parts.append(f"date=ge{(as_of - timedelta(days=max(windows) + 1)).isoformat()}")
        if parts:
            out.append(f"{t}?{'&'.join(parts)}")
    return out


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
        for n, item in enumerate(as_list(manifest.get("output")), 1):
            url, rtype = as_str(as_dict(item).get("url")), as_str(as_dict(item).get("type")) or "Resource"
            if not url:
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
