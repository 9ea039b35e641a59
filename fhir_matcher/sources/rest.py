"""REST source: find the cohort on a FHIR server, then fetch only what the criteria read.

1. ``GET metadata``: the server must answer with an R4 CapabilityStatement; resource types
   it does not support are skipped with a note.
2. Cohort: one compact scan of every Condition's code and subject
   (``Condition?_elements=code,subject&_count=1000``), matched locally against the trial's
   diagnosis value sets. Unlike code searches, this finds diagnoses coded only with local
   codes, free text, or national ICD-10 extensions (M32.100x001), which no token search can
   reach; it costs one request per 1,000 Conditions, at ~150 bytes each. A trial with no
   diagnosis gate screens every Patient.
3. Records: for batches of cohort patients (as many ids as fit in one URL), one paged search
   per resource type the criteria read (``Observation?patient=a,b,c&_count=1000``), with
   Medications brought in by ``_include``; batches run with bounded concurrency.

A server that refuses the patient-less scan (Epic, Oracle Health) stops the run with one line
naming its message and the options that work there (``--group``, ``--patients``,
``--bulk-group``); ``sources/patients.py`` reads such servers patient by patient.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

from ..fhirjson import Json, as_dict, as_list, as_str, normalize_reference, subject_reference
from ..rest.capability import Capabilities, is_refusal, search_refused
from ..rest.client import FhirClient, FhirError
from ..rest.query import Search
from ..plan import MEDICATION_TYPES, ReadPlan
from ..record import PatientRecord, RecordBuilder

log = logging.getLogger("fhir_matcher")

PAGE = 1000
MAX_URL = 1900
SMALL_READ = 16  # up to this many searches go in one batch (their pages are small); more run in parallel


class RestSource:
    def __init__(
        self,
        client: FhirClient,
        plan: ReadPlan,
        *,
        workers: int = 4,
        page_size: int = PAGE,
        max_url: int = MAX_URL,
        tag: str | None = None,
    ):
        self.client = client
        self.tag = tag  # "system|code": screen only resources carrying this meta.tag
        self.plan = plan  # what to read: types and the cohort gate (engine.cohort.read_plan)
        self.workers = max(1, workers)
        self.page_size = page_size
        self.max_url = max_url
        self.builder = RecordBuilder()
        self.supported: set[str] | None = None
        self.caps = Capabilities()
        self.notes: list[str] = []
        self.cohort_size: int | None = None  # set by read_chunks

    # ------------------------------------------------------------ steps

    def check_server(self) -> None:
        self.caps = Capabilities.parse(self.client.capabilities())
        self.supported = set(self.caps.types) or None

    def _supports(self, rtype: str) -> bool:
        return self.supported is None or rtype in self.supported

    def _patientless(self, search: Search) -> list[Json]:
        """A search naming no patient; a server that refuses those is told apart (one line)."""
        if not self.caps.can_search(search.resource_type):
            raise search_refused(None)
        try:
            return list(self.client.search(search))
        except FhirError as e:
            if is_refusal(e):
                raise search_refused(e) from None
            raise

    def cohort(self) -> list[str]:
        """Ids of the patients who can possibly be eligible, sorted."""
        if not self.plan.gated:
            search = self._tagged(Search("Patient").elements("id").count(self.page_size))
            return sorted({r["id"] for r in self._patientless(search) if as_str(r.get("id"))})
        concepts: dict[str, list[Json]] = {}
        search = self._tagged(Search("Condition").elements("code", "subject").count(self.page_size))
        for r in self._patientless(search):
            ref = subject_reference(r)
            if ref and isinstance(r.get("code"), dict):
                key = normalize_reference(ref)
                if key.startswith("Patient/"):
                    concepts.setdefault(key.split("/", 1)[1], []).append(r["code"])
        return sorted(pid for pid, ccs in concepts.items() if self.plan.admits(ccs))

    def changes_since(self, since: str) -> tuple[set[str], set[str]]:
        """Patients whose data the criteria read changed after ``since`` (an instant), and those
        of them whose changed Conditions open the diagnosis gate (they may enter the cohort).

        Updates come from ``_lastUpdated`` searches returning only the patient reference;
        deletions from type history (``_history?_since``), where the server keeps it. The
        first page of every one of these searches comes in one ``batch`` when the server
        offers batch: a quiet night costs a handful of requests, not two per type.
        """
        changed: set[str] = set()
        conditions: dict[str, list[Json]] = {}
        updated, medication, history = self._change_searches(since)
        searches = [s for _, s in updated] + ([medication] if medication else []) + history
        self.client.prefetch(searches)  # first pages in one batch (unless read with others already)
        for rtype, search in updated:
            for r in self._patientless(search):
                pid = self._patient_id(r)
                if pid:
                    changed.add(pid)
                    if rtype == "Condition" and isinstance(r.get("code"), dict):
                        conditions.setdefault(pid, []).append(r["code"])
        meds = []
        if medication is not None:
            meds = [r["id"] for r in self.client.search(medication) if as_str(r.get("id"))]
        for rtype in sorted(self.plan.types & set(MEDICATION_TYPES)):
            for chunk in Search(rtype).elements("subject").count(self.page_size).chunked("medication", [f"Medication/{m}" for m in meds], self.max_url, self.client.base):
                changed.update(filter(None, (self._patient_id(r) for r in self.client.search(chunk))))
        changed |= self._deleted_since(history)
        entering = {pid for pid, ccs in conditions.items() if self.plan.admits(ccs)} if self.plan.gated else set(changed)
        return changed, entering

    def _change_searches(self, since: str) -> tuple[list[tuple[str, Search]], Search | None, list[Search]]:
        """The searches that find what changed after ``since``: ``_lastUpdated`` per type,
        Medications, and type history (deletions)."""
        types = sorted(self.plan.types | {"Patient"})
        updated: list[tuple[str, Search]] = []
        for rtype in types:
            if not self._supports(rtype):
                continue
            if not self.caps.can_search(rtype):
                raise search_refused(None)
            element = {"Patient": "id", "Condition": "code,subject", "Consent": "patient"}.get(rtype, "subject")
            updated.append((rtype, self._tagged(Search(rtype).where(_lastUpdated=f"ge{since}").param("_elements", element).count(self.page_size))))
        medication = self._tagged(Search("Medication").where(_lastUpdated=f"ge{since}").elements("id").count(self.page_size)) if self._supports("Medication") else None
        history = [Search(f"{rtype}/_history").where(_since=since).count(self.page_size) for rtype in types if rtype != "Patient" and self._supports(rtype)]
        return updated, medication, history

    def change_searches(self, since: str) -> list[Search]:
        """What ``changes_since`` will search first (to read them in one batch with others)."""
        updated, medication, history = self._change_searches(since)
        return [s for _, s in updated] + ([medication] if medication else []) + history

    def _deleted_since(self, searches: list[Search]) -> set[str]:
        """Patients of resources deleted after ``since`` (their previous version names them)."""
        out: set[str] = set()
        for search in searches:
            rtype = search.resource_type.split("/", 1)[0]
            try:
                deleted = []
                for page in self.client.pages(search):
                    for entry in as_list(page.get("entry")):
                        request = as_dict(as_dict(entry).get("request"))
                        if request.get("method") == "DELETE" and not as_dict(entry).get("resource"):
                            url = as_str(request.get("url")) or as_str(as_dict(entry).get("fullUrl")) or ""
                            rid = url.split("/_history")[0].rstrip("/").rsplit("/", 1)[-1]
                            if rid:
                                deleted.append(rid)
            except FhirError:
                note = "the server does not offer type history: deleted records are only noticed by a full screen (--full)"
                if note not in self.notes:
                    self.notes.append(note)
                return out
            for rid in deleted:
                for version in self.client.search(Search(f"{rtype}/{rid}/_history").count(10)):
                    pid = self._patient_id(version)
                    if pid:
                        out.add(pid)
                        break
        return out

    @staticmethod
    def _patient_id(resource: Json) -> str | None:
        if resource.get("resourceType") == "Patient":
            return as_str(resource.get("id"))
        ref = subject_reference(resource)
        if not ref:
            return None
        ref = normalize_reference(ref)
        return ref.split("/", 1)[1] if ref.startswith("Patient/") else None

    def _tagged(self, search: Search) -> Search:
        return search.where(_tag=self.tag) if self.tag else search

    def _batches(self, ids: list[str]) -> list[list[str]]:
        # The longest search URL is the medication one with _include; size batches for it.
        probe = self._tagged(Search("MedicationAdministration").count(self.page_size).include("MedicationAdministration:medication"))
        return [s.params[-1][1].split(",") for s in probe.chunked("patient", ids, self.max_url, self.client.base)]

    def _searches(self, batch: list[str], types: list[str]) -> list[Search]:
        out = [self._tagged(Search("Patient").where(_id=batch).count(self.page_size))]
        for rtype in types:
            s = self._tagged(Search(rtype).where(patient=batch).count(self.page_size))
            if rtype in MEDICATION_TYPES:
                s = s.include(f"{rtype}:medication")
            out.append(s)
        return out

    def _types(self) -> list[str]:
        """The types the criteria read that the server supports (the others are noted once)."""
        types = sorted(self.plan.types)
        for rtype in types:
            note = f"the server does not support {rtype}; criteria reading it will be unknown"
            if not self._supports(rtype) and note not in self.notes:
                self.notes.append(note)
        return [t for t in types if self._supports(t)]

    def fetch(self, ids: list[str], progress: Callable[[int, int], None] | None = None) -> None:
        types = self._types()
        self._run([s for batch in self._batches(ids) for s in self._searches(batch, types)], progress)

    def _run(self, tasks: list[Search], progress: Callable[[int, int], None] | None = None) -> None:
        """Every search's resources into the record builder, ``workers`` at a time; a few
        searches (a quiet night's re-read) go in one batch, their first pages in one request."""
        done = 0
        if 1 < len(tasks) <= SMALL_READ:
            firsts = self.client.first_pages(tasks)
            for search, first in zip(tasks, firsts):
                for r in self.client.search(search, first):
                    self.builder.add(r, self.client.base)
                done += 1
                if progress:
                    progress(done, len(tasks))
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for resources in pool.map(lambda s: list(self.client.search(s)), tasks):
                for r in resources:
                    self.builder.add(r, self.client.base)
                done += 1
                if progress:
                    progress(done, len(tasks))

    def patient_total(self) -> int | None:
        """How many Patients the server holds (one request), for the attrition funnel."""
        try:
            bundle = self.client.request("GET", self._tagged(Search("Patient").param("_summary", "count")).url(self.client.base))
        except Exception:  # a server that cannot count still screens
            return None
        total = bundle.get("total")
        return total if isinstance(total, int) else None

    def read(self, progress: Callable[[int, int], None] | None = None) -> list[PatientRecord]:
        """The whole cohort's records (one chunk)."""
        return [r for chunk in self.read_chunks(sys.maxsize, progress) for r in chunk]

    def read_chunks(self, patients: int, progress: Callable[[int, int], None] | None = None) -> Iterator[list[PatientRecord]]:
        """The cohort's records about ``patients`` at a time, each chunk dropped from the
        builder once handed over: memory follows the chunk, not the cohort. Chunks are whole
        search batches, so the searches are the ones of a single chunk. ``self.cohort_size``
        is set before the first chunk."""
        self.check_server()
        ids = self.cohort()
        self.cohort_size = len(ids)
        log.info("cohort: %d patients", len(ids))
        chunks: list[list[str]] = []
        for batch in self._batches(ids):
            if chunks and len(chunks[-1]) + len(batch) <= patients:
                chunks[-1].extend(batch)
            else:
                chunks.append(list(batch))
        done = 0
        for chunk in chunks:
            self.fetch(chunk, _shifted(progress, done, len(chunk), len(ids)))
            keys = {f"Patient/{i}" for i in chunk}
            yield list(self.builder.records(only=keys))
            self.builder.forget(keys)
            done += len(chunk)


def _shifted(progress: Callable[[int, int], None] | None, start: int, size: int, total: int) -> Callable[[int, int], None] | None:
    """A chunk's progress (searches done of its searches) as patients done of the cohort."""
    if progress is None:
        return None
    return lambda n, of: progress(start + round(size * n / max(of, 1)), total)
