"""One screen: source -> records -> evaluation, for files or a FHIR server."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

from .engine.evaluate import STATUSES, PatientResult, evaluate
from .rest.client import FhirClient
from .rest.transport import Cost, Transport
from .sources.files import FileSource
from .sources.rest import RestSource
from .trial import Trial

ProgressFn = Callable[[int, int], None]


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


def screen_files(path: str | Path, trial: Trial, as_of: date, progress: tuple[ProgressFn | None, ProgressFn | None] = (None, None)) -> Screening:
    started = time.monotonic()
    source = FileSource(path)
    source.read(progress[0])
    records = list(source.builder.records())
    results = _evaluate_all(records, trial, as_of, progress[1])
    problems = [str(p) for p in source.builder.problems]
    return Screening(str(path), trial, as_of, results, problems, duration_s=time.monotonic() - started)


def screen_server(
    url: str,
    trial: Trial,
    as_of: date,
    transport: Transport | None = None,
    workers: int = 4,
    progress: tuple[ProgressFn | None, ProgressFn | None] = (None, None),
    tag: str | None = None,
) -> Screening:
    started = time.monotonic()
    client = FhirClient(url, transport or Transport())
    source = RestSource(client, trial, workers=workers, tag=tag)
    records = source.read(progress[0])
    total = source.patient_total()
    results = _evaluate_all(records, trial, as_of, progress[1])
    problems = [str(p) for p in source.builder.problems] + source.notes
    outside = max(0, total - len(results)) if total is not None else 0
    return Screening(url, trial, as_of, results, problems, outside, client.transport.cost, time.monotonic() - started)


def _evaluate_all(records: list, trial: Trial, as_of: date, progress: ProgressFn | None) -> list[PatientResult]:
    results = []
    for n, record in enumerate(records, 1):
        results.append(evaluate(record, trial, as_of))
        if progress:
            progress(n, len(records))
    return results
