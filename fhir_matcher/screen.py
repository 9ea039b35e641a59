"""One screen: source -> records -> evaluation, for files or a FHIR server."""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterator

from .criteria.cohort import cohort_valuesets, in_cohort, needed_types, read_plan
from .criteria.evaluate import STATUSES, PatientResult, evaluate
from .rest.capability import Capabilities, export_refused
from .rest.client import FhirClient
from .rest.transport import Cost, Transport
from .sources.bulk import BulkExport
from .sources.files import FileSource
from .plan import MEDICATION_TYPES
from .rest.query import Search
from .sources.patients import PatientListSource, resolve_patient_list
from .record import PatientRecord, RecordBuilder
from .sources.rest import RestSource
from .trial import Trial

ProgressFn = Callable[[int, int], None]
log = logging.getLogger("fhir_matcher")


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


@dataclass
class Screening:
    source: str
    trial: Trial
    as_of: date
    results: list[PatientResult]
    problems: list[str]
    outside: int = 0  # patients on a server outside the cohort (not fetched)
    cost: Cost = field(default_factory=Cost)
    duration_s: float = 0.0

    @property
    def evaluated(self) -> int:
        return len(self.results)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for r in self.results if r.status == s) for s in STATUSES}

    def summary(self) -> dict[str, Any]:
        return {
            "trial": self.trial.id,
            "as_of": self.as_of.isoformat(),
            "source": self.source,
            "screened": len(self.results) + self.outside,
            "evaluated": len(self.results),
            "outside_cohort": self.outside,
            "statuses": self.counts(),
            "problems": self.problems,
            "http": self.cost.to_json(),
            "duration_s": round(self.duration_s, 3),
        }


def screen_files(
    path: str | Path,
    trial: Trial,
    as_of: date,
    progress: tuple[ProgressFn | None, ProgressFn | None] = (None, None),
    all_patients: bool = False,
) -> Screening:
    """Screen files. By default only the cohort (patients a diagnosis gate lets through) is
    read and evaluated, as on a server; ``all_patients`` evaluates everyone."""
    return screen_files_many(path, [trial], as_of, progress, all_patients)[0]


def screen_files_many(
    path: str | Path,
    trials: list[Trial],
    as_of: date,
    progress: tuple[ProgressFn | None, ProgressFn | None] = (None, None),
    all_patients: bool = False,
) -> list[Screening]:
    """Screen files for several trials on one read: the union of their cohorts is read once,
    then each trial evaluates the patients in its own cohort, exactly as alone."""
    started = time.monotonic()
    source = FileSource(path)
    gates = {t.id: cohort_valuesets(t) for t in trials}
    with paused_gc():
        if all_patients or not all(gates.values()):
            source.read(progress[0])
            records = list(source.builder.records())
        else:
            types = set().union(*(needed_types(t) for t in trials))
            cohort = source.read_cohort(lambda codes: any(in_cohort(t, codes, gates[t.id]) for t in trials), progress[0], types)
            records = list(source.builder.records(only=cohort))
        read_s = time.monotonic() - started
        problems = [str(p) for p in source.builder.problems]
        out = []
        for t in trials:
            t0 = time.monotonic()
            mine = records if all_patients or len(trials) == 1 or not gates[t.id] else [r for r in records if in_cohort(t, condition_codes(r), gates[t.id])]
            results = _evaluate_all(mine, t, as_of, progress[1])
            outside = max(0, source.population - len(results))
            out.append(Screening(str(path), t, as_of, results, problems, outside, duration_s=read_s + time.monotonic() - t0))
    return out


def condition_codes(record: Any) -> list[Any]:
    """A record's Condition codes, for a cohort gate."""
    return [c["code"] for c in record.of_type("Condition") if isinstance(c.get("code"), dict)]


RECORD_BYTES = 512 * 1024  # a patient's record as Python objects, generously (REST chunks)


def screen_server(
    url: str,
    trial: Trial,
    as_of: date,
    transport: Transport | None = None,
    workers: int = 4,
    progress: tuple[ProgressFn | None, ProgressFn | None] = (None, None),
    tag: str | None = None,
    group: str | None = None,
    patients_file: str | Path | None = None,
    memory: int = 512 * 2**20,
) -> Screening:
    """Screen a server: everyone (a Condition scan finds the cohort), or only the patients of
    ``group`` (a Group on the server) or ``patients_file``, with patient-scoped searches."""
    return screen_server_many(url, [trial], as_of, transport, workers, progress, tag, group, patients_file, memory)[0]


def screen_server_many(
    url: str,
    trials: list[Trial],
    as_of: date,
    transport: Transport | None = None,
    workers: int = 4,
    progress: tuple[ProgressFn | None, ProgressFn | None] = (None, None),
    tag: str | None = None,
    group: str | None = None,
    patients_file: str | Path | None = None,
    memory: int = 512 * 2**20,
) -> list[Screening]:
    """Several trials on one read of a server: the union of the cohorts, each type fetched once
    for it; then each trial evaluates its own cohort, exactly as alone. ``memory`` sizes the
    chunks of patients whose records are held at once (RECORD_BYTES each, a generous figure
    for a record's Python objects)."""
    started = time.monotonic()
    client = FhirClient(url, transport or Transport())
    patients = resolve_patient_list(client, group=group, patients_file=patients_file)
    plan = read_plan(trials)
    if patients is None:
        source: RestSource = RestSource(client, plan, workers=workers, tag=tag)
    else:
        source = PatientListSource(client, plan, patients, workers=workers, tag=tag)
    # The cohort is read and evaluated a chunk of patients at a time: only the results stay.
    results: dict[str, list[PatientResult]] = {t.id: [] for t in trials}
    gates = {t.id: cohort_valuesets(t) for t in trials}
    evaluated = 0
    for records in source.read_chunks(max(1, memory // RECORD_BYTES), progress[0]):
        for t in trials:
            mine = records if len(trials) == 1 or not gates[t.id] else [r for r in records if in_cohort(t, condition_codes(r), gates[t.id])]
            for record in mine:
                results[t.id].append(evaluate(record, t, as_of))
        evaluated += len(records)
        if progress[1]:
            progress[1](evaluated, source.cohort_size or evaluated)
    total = source.patient_total() if patients is None else len(patients.ids)
    problems = [str(p) for p in source.builder.problems] + [f"{w}: {r}" for w, r in client.problems] + source.notes
    out = []
    for t in trials:
        outside = max(0, total - len(results[t.id])) if total is not None else 0
        out.append(Screening(url, t, as_of, results[t.id], problems, outside, client.transport.cost, time.monotonic() - started))
    return out


def screen_bulk(
    url: str,
    trial: Trial,
    as_of: date,
    transport: Transport | None = None,
    progress: tuple[ProgressFn | None, ProgressFn | None] = (None, None),
    tag: str | None = None,
    group: str | None = None,
    poll_max: float = 60.0,
) -> Screening:
    """``$export`` from the server, then screen the export (cohort first)."""
    return screen_bulk_many(url, [trial], as_of, transport, progress, tag, group, poll_max)[0]


def screen_bulk_many(
    url: str,
    trials: list[Trial],
    as_of: date,
    transport: Transport | None = None,
    progress: tuple[ProgressFn | None, ProgressFn | None] = (None, None),
    tag: str | None = None,
    group: str | None = None,
    poll_max: float = 60.0,
) -> list[Screening]:
    """One ``$export`` for every trial (the union of the types they read), then one screen."""
    started = time.monotonic()
    with bulk_download(url, trials, as_of, transport, tag, group, poll_max) as (folder, export, client):
        results = screen_files_many(folder, trials, as_of, progress)
    for result in results:
        result.source = url
        result.cost = client.transport.cost
        result.problems = export.problems + [p.replace(str(folder), "$export") for p in result.problems]
        result.duration_s = time.monotonic() - started
    return results


@contextmanager
def bulk_download(url: str, trials: list[Trial], as_of: date, transport: Transport | None = None, tag: str | None = None,
                  group: str | None = None, poll_max: float = 60.0) -> Iterator[tuple[Path, BulkExport, FhirClient]]:
    """``$export`` of the types the trials read into a private temporary folder (0700: patient
    data), removed when the block ends."""
    client = FhirClient(url, transport or Transport())
    caps = Capabilities.parse(client.capabilities())
    if group is None and caps.system_export() is False and caps.group_export():
        raise export_refused(None)  # the statement offers only Group export: say so before asking
    plan = read_plan(trials)
    types = plan.export_types(group is not None)
    filters = plan.type_filters(as_of, tag, types)
    export = BulkExport(client, types=types, filters=filters, group=group, poll_max=poll_max, group_export=caps.group_export())
    with tempfile.TemporaryDirectory(prefix="fhir-matcher-bulk-") as folder:
        job = export.run(Path(folder))
        log.info("bulk export: %d files after %d polls", len(job.files), job.polls)
        yield Path(folder), export, client


def match_record_files(path: str | Path, patient: str) -> tuple[PatientRecord | None, list[str]]:
    """One patient's record from files (every file is read; only that patient is kept)."""
    source = FileSource(path)
    with paused_gc():
        source.read()
    records = list(source.builder.records(only={patient}))
    return (records[0] if records else None), [str(p) for p in source.builder.problems]


def match_record_server(url: str, patient: str, types: set[str], transport: Transport | None = None) -> tuple[PatientRecord | None, list[str]]:
    """One patient's record from a server: the Patient and one patient-scoped search per type
    the trials read (medications with their Medication included): a handful of requests."""
    client = FhirClient(url, transport or Transport())
    pid = patient.split("/", 1)[1]
    builder = RecordBuilder()
    searches = [Search("Patient").where(_id=pid)]
    for rtype in sorted(types - {"Patient"}):
        search = Search(rtype).where(patient=pid).count(1000)
        if rtype in MEDICATION_TYPES:
            search = search.include(f"{rtype}:medication")
        searches.append(search)
    for search in searches:
        for r in client.search(search):
            builder.add(r, client.base)
    records = list(builder.records(only={patient}))
    return (records[0] if records else None), [str(p) for p in builder.problems]


def match_patient(record: PatientRecord, trials: list[Trial], as_of: date) -> list[tuple[Trial, PatientResult | None, str]]:
    """Every trial's full evaluation of one patient (outside a trial's cohort means its
    diagnosis criterion is not met, and the result says so)."""
    return [(t, evaluate(record, t, as_of), "") for t in trials]


def screen_with_spark(source: str, trial: Trial, as_of: date, master: str | None = None, spark: Any = None) -> Screening:
    """The Spark engine (``--engine spark``): same rules, same outputs."""
    try:
        from .runners.spark import screen_spark
    except ImportError as e:
        raise ValueError("the spark engine needs PySpark: pip install 'fhir-matcher[spark]'") from e
    if is_url(source) and source.split("://", 1)[0] in ("http", "https"):
        raise ValueError("--engine spark reads exports (paths or Hadoop URIs), not a FHIR server URL; use --bulk to export first")
    results, problems, population, seconds = screen_spark(source, trial, as_of, master, spark)
    return Screening(source, trial, as_of, results, problems, max(0, population - len(results)), duration_s=seconds)


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while records load: the loader makes hundreds of thousands
    of small dicts and no cycles, and each full collection would walk them all again
    (measured: reading a 20,000-patient export took 5.1 s with it, 1.8 s without). Afterwards
    the loaded objects are frozen out of later collections (writing the outputs)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()  # what was loaded stays: later collections need not walk it
        if was:
            gc.enable()


def _evaluate_all(records: list, trial: Trial, as_of: date, progress: ProgressFn | None) -> list[PatientResult]:
    results = []
    for n, record in enumerate(records, 1):
        results.append(evaluate(record, trial, as_of))
        if progress:
            progress(n, len(records))
    return results
