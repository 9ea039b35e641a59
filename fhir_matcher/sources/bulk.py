"""Bulk Data source: ``$export`` the types the criteria read, download the NDJSON, screen it.

Kick-off (system level, or ``Group/<id>/$export``) with ``_type`` and, where it narrows
without changing any answer, ``_typeFilter``; poll the status URL honouring Retry-After
(exponential backoff otherwise); download each output file into a private temporary folder
(with the access token only when the manifest says ``requiresAccessToken``); then the file
source screens it, cohort first. The job is deleted on the server afterwards.

A Group export holds its members' compartments only, and Medication is in no patient's
compartment: the Medications that the exported medication resources reference by id are
then read with ``Medication?_id=`` searches (a FHIR batch where offered) into one more file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

import orjson

from ..fhirjson import as_dict, as_list, as_str, normalize_reference
from ..plan import MEDICATION_TYPES
from ..rest.capability import REFUSAL_STATUSES, export_refused
from ..rest.client import FhirClient, FhirError, outcome_text
from ..rest.query import Search
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
        medications: bool = True,
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
        self.medications = medications  # read the Medications a Group export references

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

    def referenced_medications(self, folder: Path, job: ExportJob) -> None:
        """Read the Medications the export's medication resources reference but it does not
        hold (a Group export) into ``Medication.referenced.ndjson``."""
        have: set[str] = set()
        wanted: set[str] = set()
        base = self.client.base.rstrip("/") + "/"
        for f in job.files:
            rtype = f.name.split(".", 1)[0]
            if rtype != "Medication" and rtype not in MEDICATION_TYPES:
                continue
            with open(f, "rb") as fh:
                for line in fh:
                    try:
                        r = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue  # the file source names the line when it reads the file
                    if not isinstance(r, dict):
                        continue
                    if rtype == "Medication":
                        if as_str(r.get("id")):
                            have.add(r["id"])
                        continue
                    ref = as_str(as_dict(r.get("medicationReference")).get("reference"))
                    if not ref or ref.startswith(("#", "urn:")) or ("://" in ref and not ref.startswith(base)):
                        continue  # contained, in a Bundle, or on another server
                    ref = normalize_reference(ref)
                    if ref.startswith("Medication/"):
                        wanted.add(ref.split("/", 1)[1])
        todo = sorted(wanted - have)
        if not todo:
            return
        searches = list(Search("Medication").chunked("_id", todo, base=self.client.base))
        searches = [s.count(len(todo)) for s in searches]
        try:
            found = [r for rs in self.client.search_all(searches) for r in rs if isinstance(r, dict) and r.get("resourceType") == "Medication"]
        except FhirError as e:
            self.problems.append(f"bulk export: the {len(todo)} Medication(s) its medication resources reference could not be read ({e})")
            return
        dest = folder / "Medication.referenced.ndjson"
        with open(dest, "wb") as out:
            for r in found:
                out.write(orjson.dumps(r) + b"\n")
        job.files.append(dest)
        missing = len(set(todo) - {as_str(r.get("id")) for r in found})
        if missing:
            self.problems.append(f"bulk export: {missing} Medication(s) that medication resources reference are not on the server")
        log.info("bulk export: read %d referenced Medications", len(found))

    def run(self, folder: Path) -> ExportJob:
        status_url = self.kick_off()
        job = ExportJob(status_url)
        try:
            manifest = self.wait(status_url, job)
            self.download(manifest, folder, job)
            if self.medications and self.group and "Medication" not in self.types:
                self.referenced_medications(folder, job)
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
