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

from .engine.cohort import cohort_valuesets, in_cohort, needed_types
from .engine.evaluate import STATUSES, PatientResult, evaluate
from .rest.capability import Capabilities, export_refused
from .rest.client import FhirClient
from .rest.transport import Cost, Transport
from .sources.bulk import BulkExport, export_types, type_filters
from .sources.files import FileSource
from .sources.patients import PatientListSource, resolve_patient_list
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
    started = time.monotonic()
    source = FileSource(path)
    gates = cohort_valuesets(trial)
    with paused_gc():
        if all_patients or not gates:
            source.read(progress[0])
            records = list(source.builder.records())
        else:
            cohort = source.read_cohort(lambda codes: in_cohort(trial, codes, gates), progress[0], needed_types(trial))
            records = list(source.builder.records(only=cohort))
        results = _evaluate_all(records, trial, as_of, progress[1])
    problems = [str(p) for p in source.builder.problems]
    outside = max(0, source.population - len(results))
    return Screening(str(path), trial, as_of, results, problems, outside, duration_s=time.monotonic() - started)


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
) -> Screening:
    """Screen a server: everyone (a Condition scan finds the cohort), or only the patients of
    ``group`` (a Group on the server) or ``patients_file``, with patient-scoped searches."""
    started = time.monotonic()
    client = FhirClient(url, transport or Transport())
    patients = resolve_patient_list(client, group=group, patients_file=patients_file)
    if patients is None:
        source = RestSource(client, trial, workers=workers, tag=tag)
        records = source.read(progress[0])
        total = source.patient_total()
    else:
        source = PatientListSource(client, trial, patients, workers=workers, tag=tag)
        records = source.read(progress[0])
        total = len(patients.ids)
    results = _evaluate_all(records, trial, as_of, progress[1])
    problems = [str(p) for p in source.builder.problems] + source.notes
    outside = max(0, total - len(results)) if total is not None else 0
    return Screening(url, trial, as_of, results, problems, outside, client.transport.cost, time.monotonic() - started)


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
    started = time.monotonic()
    client = FhirClient(url, transport or Transport())
    caps = Capabilities.parse(client.capabilities())
    if group is None and caps.system_export() is False and caps.group_export():
        raise export_refused(None)  # the statement offers only Group export: say so before asking
    types = export_types(trial, group is not None)
    export = BulkExport(client, types=types, filters=type_filters(trial, as_of, tag, types), group=group, poll_max=poll_max,
                        group_export=caps.group_export())
    with tempfile.TemporaryDirectory(prefix="fhir-matcher-bulk-") as folder:  # 0700: patient data
        job = export.run(Path(folder))
        result = screen_files(folder, trial, as_of, progress)
    result.source = url
    result.cost = client.transport.cost
    result.problems = [p.replace(folder, "$export") for p in result.problems]
    result.duration_s = time.monotonic() - started
    log.info("bulk export: %d files after %d polls", len(job.files), job.polls)
    return result


def screen_with_spark(source: str, trial: Trial, as_of: date, master: str | None = None, spark: Any = None) -> Screening:
    """The Spark engine (``--engine spark``): same rules, same outputs."""
    try:
        from .engines.spark import screen_spark
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
