"""Patient lists: screen only given patients, with patient-scoped searches only.

Hospital EHR endpoints (Epic, Oracle Health) refuse clinical searches that do not name a
patient; population access there is a Group (a research registry, a clinic's panel). This
module reads such a list and produces one record per patient:

- ``read_patient_file``: one ``Patient/<id>`` per line (``--patients FILE``);
- ``group_members``: ``Group.member.entity`` of a Group on the server (``--group ID``), whether
  the Group comes whole, as Bundle pages, or with its members contained;
- ``PatientListSource``: given a client and patient ids, the per-patient records. The cohort
  gate runs on each patient's Conditions (``Condition?patient=X``), then only cohort patients'
  other types are read. Searches carry as many patients as the server takes: it is asked once
  with two (``Condition?patient=a,b``) and, when it refuses, every search names one patient.
  With a Group and Bulk export, records come from ``Group/[id]/$export`` instead, and a night's
  changes from ``Group/[id]/$export?_since=``; otherwise changes come from per-patient
  ``_lastUpdated`` searches.

``PatientListSource`` is the reusable entry point: ``PatientListSource(client, plan,
PatientList(ids, "..."))`` then ``read()`` (the list's cohort, gated on Conditions), or
``records_for(ids)`` (every listed patient, no gate; ``types=`` the union several trials read,
as ``match`` needs).
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import unquote

from ..fhirjson import Json, as_dict, as_list, as_str, normalize_reference
from ..rest.capability import is_refusal
from ..rest.client import FhirClient, FhirError
from ..rest.query import Search
from ..plan import ReadPlan
from ..record import PatientRecord
from .rest import RestSource

log = logging.getLogger("fhir_matcher")


class PatientListError(ValueError):
    """A patient list that cannot be used (unreadable file, malformed line, empty Group)."""


@dataclass
class PatientList:
    """The patients to screen and where the list came from."""

    ids: list[str]  # patient ids (without "Patient/"), in the list's order, no duplicates
    origin: str  # "Group/<id>" or "--patients"
    group: str | None = None  # the Group id, when the list is a Group (Bulk export is then possible)
    bulk: bool = False  # read records with Group/[id]/$export (--bulk-group)
    poll_max: float = 60.0  # longest wait between export status polls
    notes: list[str] = field(default_factory=list)


def _patient_id(ref: str) -> str | None:
    """``Patient/<id>`` (relative, absolute URL, or with ``_history``) -> ``<id>``."""
    ref = normalize_reference(ref.strip())
    if not ref.startswith("Patient/"):
        return None
    pid = unquote(ref.split("/", 2)[1])
    return pid or None


def read_patient_file(path: str | Path) -> PatientList:
    """One ``Patient/<id>`` per line (absolute URLs too); blank lines and ``#`` comments ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PatientListError(f"{path}: no such patient list file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PatientListError(f"{path}: cannot read the patient list ({getattr(e, 'strerror', None) or e})") from None
    ids: dict[str, None] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pid = _patient_id(line)
        if pid is None or any(c.isspace() for c in line):
            raise PatientListError(f"{path}:{n}: not a Patient reference (expected one Patient/<id> per line)")
        ids[pid] = None
    if not ids:
        raise PatientListError(f"{path}: the patient list is empty")
    return PatientList(list(ids), "--patients")


def group_members(client: FhirClient, group_id: str, *, bulk: bool = False) -> PatientList:
    """The active Patient members of ``Group/<group_id>``: member.entity references, contained
    members (``#id``), nested Groups, and members spread over Bundle pages."""
    ids: dict[str, None] = {}
    notes: list[str] = []
    skipped = 0
    seen_groups: set[str] = set()

    def groups(gid: str) -> Iterable[Json]:
        answer = client.request("GET", f"Group/{gid}")
        if answer.get("resourceType") == "Group":
            yield answer
            return
        if answer.get("resourceType") != "Bundle":
            raise FhirError(f"Group/{gid}: the answer is neither a Group nor a Bundle")
        page: Json | None = answer
        seen_pages: set[str] = set()
        while page is not None:  # a server may page a large Group's members
            for entry in as_list(page.get("entry")):
                res = as_dict(as_dict(entry).get("resource"))
                if res.get("resourceType") == "Group":
                    yield res
            nxt = next((as_str(as_dict(l).get("url")) for l in as_list(page.get("link")) if as_dict(l).get("relation") == "next"), None)
            if not nxt or nxt in seen_pages:
                break
            seen_pages.add(nxt)
            page = client.request("GET", client._same_origin(nxt))

    def walk(gid: str) -> None:
        nonlocal skipped
        if gid in seen_groups:
            return
        seen_groups.add(gid)
        for group in groups(gid):
            contained = {as_str(c.get("id")): c for c in map(as_dict, as_list(group.get("contained"))) if as_str(c.get("id"))}
            for member in map(as_dict, as_list(group.get("member"))):
                if member.get("inactive") is True or as_str(as_dict(member.get("period")).get("end")):
                    continue  # no longer a member
                entity = as_dict(member.get("entity"))
                ref = as_str(entity.get("reference")) or ""
                if ref.startswith("#"):
                    res = as_dict(contained.get(ref[1:]))
                    pid = _contained_patient(client, res, notes)
                    if pid:
                        ids[pid] = None
                    else:
                        skipped += 1
                    continue
                norm = normalize_reference(ref) if ref else ""
                if norm.startswith("Group/"):
                    walk(norm.split("/", 2)[1])
                    continue
                pid = _patient_id(ref) if ref else _by_identifier(client, as_dict(entity.get("identifier")), notes)
                if pid:
                    ids[pid] = None
                else:
                    skipped += 1

    walk(group_id)
    if skipped:
        notes.append(f"Group/{group_id}: {skipped} member(s) are not Patients or could not be resolved (skipped)")
    if not ids:
        raise PatientListError(f"Group/{group_id} has no Patient members to screen")
    return PatientList(list(ids), f"Group/{group_id}", group=group_id, bulk=bulk, notes=notes)


def _contained_patient(client: FhirClient, res: Json, notes: list[str]) -> str | None:
    """A contained member: a Patient found on the server by its identifier (its local id means nothing there)."""
    if res.get("resourceType") == "Group":
        return None
    if res.get("resourceType") != "Patient":
        return None
    for ident in map(as_dict, as_list(res.get("identifier"))):
        pid = _by_identifier(client, ident, notes)
        if pid:
            return pid
    return None


def _by_identifier(client: FhirClient, ident: Json, notes: list[str]) -> str | None:
    system, value = as_str(ident.get("system")), as_str(ident.get("value"))
    if not value:
        return None
    found = [as_str(r.get("id")) for r in client.search(Search("Patient").where(identifier=f"{system}|{value}" if system else value).elements("id"))]
    found = [f for f in found if f]
    if len(found) > 1:
        notes.append("a Group member's identifier names more than one Patient (skipped)")
        return None
    return found[0] if found else None


def resolve_patient_list(client: FhirClient, *, group: str | None = None, patients_file: str | Path | None = None,
                         bulk_group: str | None = None) -> PatientList | None:
    """The list ``--group``, ``--bulk-group`` or ``--patients`` names (None: no list, screen everyone)."""
    given = [name for name, v in (("--group", group), ("--bulk-group", bulk_group), ("--patients", patients_file)) if v]
    if len(given) > 1:
        raise PatientListError(f"give one of {', '.join(given)}, not several")
    if patients_file:
        return read_patient_file(patients_file)
    if group or bulk_group:
        gid = (group or bulk_group).strip()
        if not gid or "/" in gid.removeprefix("Group/"):
            raise PatientListError(f"not a Group id: {gid!r}")
        return group_members(client, gid.removeprefix("Group/"), bulk=bool(bulk_group))
    return None


class PatientListSource(RestSource):
    """Records for a list of patients, read with patient-scoped searches only.

    ``read()`` gives the records of the list's cohort patients; ``outside`` is then how many
    list patients the diagnosis gate left out. For the nightly job: ``cohort()``, ``fetch(ids)``
    and ``changes_since(since)`` (with ``previous``: the members of the last night; new members
    are screened as entering, removed ones are not read).
    """

    def __init__(self, client: FhirClient, plan: ReadPlan, patients: PatientList, *, per_search: int | None = None,
                 types: set[str] | None = None, **kwargs):
        super().__init__(client, plan, **kwargs)
        self.types = types  # the types to read (default: what the plan's criteria read)
        self.patients = patients
        self.notes.extend(patients.notes)  # members that could not be used
        self.members = set(patients.ids)
        self.per_search = per_search  # patients per search: None = ask the server once
        self.previous: set[str] | None = None  # the last night's members (nightly)
        # Nightly: patient id -> references its stored result rests on; the keys are the
        # patients with a stored result (the others are outside the cohort).
        self.evidence: dict[str, list[str]] | None = None
        self.complete: set[str] = set()  # ids whose whole record is in the builder
        self.conditions_read: set[str] = set()  # ids whose Conditions are in the builder
        self.limits: list[str] = []  # what this way of reading cannot see (run.json "limits")
        self.outside = 0

    # ------------------------------------------------------------ batching

    def _batching(self, ids: list[str]) -> None:
        """Ask once whether the server takes several patients per search."""
        if self.per_search is not None or len(ids) < 2:
            return
        probe = self._tagged(Search("Condition").where(patient=ids[:2]).elements("id").count(1))
        try:
            self.client.request("GET", probe.url(self.client.base))
            self.per_search = 0  # as many as fit in a URL
        except FhirError as e:
            if not is_refusal(e):
                raise
            self.per_search = 1
            log.info("the server takes one patient per search: %s", e)

    def _batches(self, ids: list[str]) -> list[list[str]]:
        if not ids:
            return []
        self._batching(ids)
        if self.per_search == 1:
            return [[i] for i in ids]
        batches = super()._batches(ids)
        if self.per_search and self.per_search > 1:
            batches = [b[i:i + self.per_search] for b in batches for i in range(0, len(b), self.per_search)]
        return batches

    def _types(self) -> list[str]:
        if self.types is None:
            return super()._types()
        return sorted(t for t in self.types - {"Patient"} if self._supports(t))

    def _search_all(self, tasks: list[Search]) -> list[list[Json]]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda s: list(self.client.search(s)), tasks))

    # ------------------------------------------------------------ reading

    def cohort(self, ids: Iterable[str] | None = None) -> list[str]:
        """The list patients (or ``ids``) whose Conditions pass the diagnosis gate, sorted; their
        Conditions are kept for their records. With ``bulk``, their whole records come from a
        Group export."""
        ids = [i for i in (self.patients.ids if ids is None else ids)]
        if self.patients.bulk and self.patients.group and ids == self.patients.ids:
            return self._cohort_from_export()
        if not self.plan.gated:
            return sorted(ids)
        held: dict[str, list[Json]] = {}
        tasks = [self._tagged(Search("Condition").where(patient=b).count(self.page_size)) for b in self._batches(ids)]
        for resources in self._search_all(tasks):
            for r in resources:
                pid = self._patient_id(r)
                if pid:
                    held.setdefault(pid, []).append(r)
        cohort = sorted(pid for pid in ids if self.plan.admits([c["code"] for c in held.get(pid, []) if isinstance(c.get("code"), dict)]))
        for pid in cohort:
            for r in held.get(pid, []):
                self.builder.add(r, self.client.base)
            self.conditions_read.add(pid)
        self.outside = len(ids) - len(cohort)
        return cohort

    def fetch(self, ids: list[str], progress: Callable[[int, int], None] | None = None) -> None:
        """The records of ``ids`` (what cohort() or an export already read is not read again)."""
        types = self._types()
        todo = [i for i in ids if i not in self.complete]
        with_conditions = [i for i in todo if i in self.conditions_read]
        others = [i for i in todo if i not in self.conditions_read]
        tasks = [s for b in self._batches(with_conditions) for s in self._searches(b, [t for t in types if t != "Condition"])]
        tasks += [s for b in self._batches(others) for s in self._searches(b, types)]
        self._run(tasks, progress)
        self.complete.update(todo)
        self.conditions_read.update(todo)

    def records_for(self, ids: list[str] | None = None) -> list[PatientRecord]:
        """The records of ``ids`` (default: the whole list), no cohort gate: patient-scoped
        searches, batched where the server allows."""
        if self.supported is None and not self.caps.types:
            self.check_server()
        ids = list(self.patients.ids if ids is None else ids)
        self.fetch(ids)
        return list(self.builder.records(only={f"Patient/{i}" for i in ids}))

    # ------------------------------------------------------------ Bulk (Group export)

    def _export(self, since: str | None, folder: Path, medications: bool) -> None:
        """Group export into ``folder``; ``medications``: with the Medications it references."""
        from .bulk import BulkExport

        types = self.plan.export_types(True)
        filters = [f"{t}?_tag={self.tag}" for t in types] if self.tag else []
        export = BulkExport(self.client, types=types, filters=filters, group=self.patients.group, since=since,
                            poll_max=self.patients.poll_max, medications=medications)
        export.run(folder)
        for p in export.problems:
            self.builder.problem(f"Group/{self.patients.group}/$export", p)

    def _cohort_from_export(self) -> list[str]:
        from .files import FileSource

        with tempfile.TemporaryDirectory(prefix="fhir-matcher-bulk-") as folder:  # 0700: patient data
            self._export(None, Path(folder), medications=True)
            files = FileSource(folder, self.builder)
            if self.plan.gated:
                keys = files.read_cohort(self.plan.admits, None, set(self.plan.types))
            else:
                files.read()
                keys = set(self.builder.patients)
        ids = sorted(k.split("/", 1)[1] for k in keys if k.split("/", 1)[1] in self.members)
        self._drop_others(set(ids))
        self.complete.update(ids)
        self.conditions_read.update(ids)
        self.outside = len(self.patients.ids) - len(ids)
        return ids

    def _drop_others(self, keep: set[str]) -> None:
        """Only the cohort's resources stay in the builder (an export may hold more)."""
        b = self.builder
        for key in [k for k in b.patients if k.split("/", 1)[1] not in keep]:
            del b.patients[key]
        for key in [k for k, subj in b.pending_subject.items() if b.aliases.get(subj, subj).split("/", 1)[-1] not in keep]:
            b.pending.pop(key, None)
            b.pending_subject.pop(key, None)

    # ------------------------------------------------------------ changes (nightly)

    def changes_since(self, since: str) -> tuple[set[str], set[str]]:
        """Members whose data changed after ``since``, and those of them (plus new members)
        whose Conditions open the diagnosis gate. New members are screened in full; removed
        members are not read."""
        previous = self.members if self.previous is None else self.previous & self.members
        added = sorted(self.members - previous)
        changed: set[str] = set()
        conditions: dict[str, list[Json]] = {}
        if previous:
            if self.patients.group and self._bulk_incremental():
                changed, conditions = self._changes_from_export(since)
            else:
                changed, conditions = self._changes_by_search(since, sorted(previous))
        changed |= self._evidence_gone(previous)
        changed &= self.members
        entering = {pid for pid, ccs in conditions.items() if pid in self.members and self.plan.admits(ccs)} if self.plan.gated else set(changed)
        if added:
            entering |= set(self.cohort(added))
            changed |= set(added)
        return changed, entering

    def _evidence_gone(self, ids: set[str]) -> set[str]:
        """Patients whose last result rests on a resource that is no longer on the server.

        Patient-scoped servers offer no history, so deletions are found this way: every
        reference a stored result cites as evidence is looked up by ``_id`` (many per search).
        A deleted record that no result cited cannot have changed one."""
        by_type: dict[str, dict[str, set[str]]] = {}
        for pid in ids:
            for ref in (self.evidence or {}).get(pid, ()):
                rtype, _, rid = ref.partition("/")
                if rid and rtype != "Patient" and not any(c in rid for c in "/#:") and self._supports(rtype):
                    by_type.setdefault(rtype, {}).setdefault(rid, set()).add(pid)
        gone: set[str] = set()
        for rtype, owners in sorted(by_type.items()):
            tasks = list(self._tagged(Search(rtype).elements("id").count(self.page_size)).chunked("_id", sorted(owners), self.max_url, self.client.base))
            try:
                found = {as_str(r.get("id")) for rs in self._search_all(tasks) for r in rs}
            except FhirError as e:
                if not is_refusal(e):
                    raise
                note = f"the server refuses {rtype} searches by _id: records deleted on it are noticed by a full screen (--full)"
                if note not in self.limits:
                    self.limits.append(note)
                continue
            for rid, pids in owners.items():
                if rid not in found:
                    gone |= pids
        return gone

    def _bulk_incremental(self) -> bool:
        """Use Group export for changes when the list is a Group and the server offers it."""
        if self.patients.bulk:
            return True
        return bool(self.caps.group_export())

    def _changes_from_export(self, since: str) -> tuple[set[str], dict[str, list[Json]]]:
        from .files import parse_file, input_files

        changed: set[str] = set()
        conditions: dict[str, list[Json]] = {}
        with tempfile.TemporaryDirectory(prefix="fhir-matcher-bulk-") as folder:
            try:
                self._export(since, Path(folder), medications=False)
            except FhirError as e:
                if self.patients.bulk or not is_refusal(e):
                    raise
                log.info("Group export refused (%s); reading changes patient by patient", e)
                return self._changes_by_search(since, sorted(self.members))
            for file in input_files(Path(folder)):
                self._note_changes((r for _where, r in parse_file(file, lambda where, reason: None) if isinstance(r, dict)), changed, conditions)
        return changed, conditions

    def _note_changes(self, resources: Iterable[Json], changed: set[str], conditions: dict[str, list[Json]]) -> None:
        """The patients these changed resources belong to, and their changed Condition codes."""
        for r in resources:
            pid = self._patient_id(r)
            if pid:
                changed.add(pid)
                if r.get("resourceType") == "Condition" and isinstance(r.get("code"), dict):
                    conditions.setdefault(pid, []).append(r["code"])

    def _changes_by_search(self, since: str, ids: list[str]) -> tuple[set[str], dict[str, list[Json]]]:
        changed: set[str] = set()
        conditions: dict[str, list[Json]] = {}
        tasks: list[Search] = []
        # A patient with no stored result is outside the cohort: only a new or changed
        # Condition can bring them in, so only their Conditions are asked about.
        known = [i for i in ids if self.evidence is None or i in self.evidence]
        outside = [i for i in ids if self.evidence is not None and i not in self.evidence]

        def search(rtype: str, batch: list[str]) -> Search:
            if rtype == "Patient":
                return self._tagged(Search("Patient").where(_id=batch, _lastUpdated=f"ge{since}").elements("id").count(self.page_size))
            element = {"Condition": "code,subject", "Consent": "patient"}.get(rtype, "subject")
            return self._tagged(Search(rtype).where(patient=batch, _lastUpdated=f"ge{since}").param("_elements", element).count(self.page_size))

        for batch in self._batches(known):
            tasks += [search(rtype, batch) for rtype in ["Patient", *self._types()]]
        if self._supports("Condition"):
            tasks += [search("Condition", batch) for batch in self._batches(outside)]
        for resources in self._search_all(tasks):
            self._note_changes(resources, changed, conditions)
        return changed, conditions

