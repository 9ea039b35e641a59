"""Pass 2, in a worker process: one partition at a time, one patient at a time.

A partition's spill lines are grouped per patient key; each patient's resources are added
to a fresh RecordBuilder in the order the in-memory reader added them (band, then position),
the cohort gate is asked, the record is built and every trial evaluated. What the outputs
need is rendered here, in parallel, into one results file per trial, sorted by patient:
the parent only merges and copies bytes (outputs/stream.py).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from .. import gcmode
from .. import record as record_module
from ..criteria.cohort import cohort_valuesets, in_cohort
from ..criteria.evaluate import CANDIDATE, INELIGIBLE, POTENTIAL, deciding, evaluate, still_to_do
from ..outputs.report import detail_lines, glance_row, ineligible_row, write_csv_rows
from ..outputs.subjects import subject_entry_text
from ..record import Problem, RecordBuilder
from ..sources.files import NOT_AN_OBJECT, _json_error
from ..trial import Trial
from .spill import BAND, BUNDLES, FLAGS, FORCED, FULL_URL, GATE, HELD, KEY, LOCAL, ORPHANS, POP, POS, SEEN, SUFFIX, FIDX, K, open_private, where_of

log = logging.getLogger("fhir_matcher")


@dataclass
class Setup:
    """Sent once to each worker process."""

    trials: list[Trial]
    as_of: date
    cohort: bool  # the gate decides who is read (else every patient)
    all_patients: bool
    files: list[str]
    spill: Path
    salt: bytes  # the parent's, so a patient's hash is the same in every process
    log_level: int = logging.WARNING


@dataclass
class TrialTotals:
    evaluated: int = 0
    counts: Counter = field(default_factory=Counter)
    first: Counter = field(default_factory=Counter)  # criterion that ruled a patient out first
    reasons: Counter = field(default_factory=Counter)  # every criterion that rules a patient out

    def add(self, other: "TrialTotals") -> None:
        self.evaluated += other.evaluated
        self.counts.update(other.counts)
        self.first.update(other.first)
        self.reasons.update(other.reasons)


@dataclass
class PartResult:
    part: int
    totals: dict[str, TrialTotals]
    problems: list[tuple]
    population: int = 0
    evaluated_any: int = 0
    shortlist: list[tuple[str, dict[str, tuple[str, str]]]] = field(default_factory=list)  # portfolio rows


_setup: Setup | None = None
_meds: dict[str, Any] | None = None


def init(setup: Setup) -> None:
    """Worker initializer (also called in-process with one process)."""
    global _setup, _meds
    _setup, _meds = setup, None
    gcmode.use_batch()
    record_module._SALT = setup.salt
    if not logging.getLogger().handlers:
        logging.basicConfig(level=setup.log_level, format="%(levelname)s: %(message)s")
    logging.getLogger("fhir_matcher").setLevel(setup.log_level)


class _Builder(RecordBuilder):
    """A builder that keeps each problem's place (band, position) instead of logging it: the
    parent logs them, in the in-memory reader's order, once every partition is done."""

    def __init__(self, medications: dict[str, Any]):
        super().__init__()
        self.medications = medications
        self.at: tuple = (BUNDLES, 0, 0, "")
        self.placed: list[tuple] = []

    def problem(self, where: str, reason: str, resource: str | None = None) -> None:
        band, pos, k, subject = self.at
        self.placed.append((band, pos, k, len(self.placed), subject, where, reason, resource))


def _medications(setup: Setup) -> dict[str, Any]:
    """Shared Medication resources (any file, any patient): read once per worker."""
    global _meds
    if _meds is None:
        rows = []
        for f in sorted(setup.spill.glob("meds-j*.spill")):
            with open(f, "rb") as fh:
                for line in fh:
                    head, raw = line.split(b"\t", 1)
                    h = orjson.loads(head)
                    rows.append((h[BAND], h[POS], h[K], h[FULL_URL] if len(h) > FULL_URL else None, raw))
        rows.sort(key=lambda r: r[:3])
        _meds = {}
        for *_, full_url, raw in rows:
            res = orjson.loads(raw)
            for ref in filter(None, (full_url, f"Medication/{res.get('id')}" if res.get("id") else None)):
                _meds[ref] = res
    return _meds


def evaluate_partition(part: int) -> PartResult:
    setup = _setup
    assert setup is not None, "init() first"
    meds = _medications(setup)
    groups: dict[str, list[tuple[list[Any], bytes]]] = {}
    for f in sorted(setup.spill.glob(f"p{part:04d}-j*.spill")):
        with open(f, "rb") as fh:
            for line in fh:
                head, raw = line.split(b"\t", 1)
                h = orjson.loads(head)
                groups.setdefault(h[KEY], []).append((h, raw))
    trials = setup.trials
    gates = {t.id: cohort_valuesets(t) for t in trials}
    result = PartResult(part, {t.id: TrialTotals() for t in trials}, [])
    outs = {t.id: open_private(setup.spill / f"r{part:04d}-{i:03d}.res") for i, t in enumerate(trials)}
    try:
        for key in sorted(groups):
            recs = groups.pop(key)
            recs.sort(key=lambda r: (r[0][BAND], r[0][POS], r[0][K]))
            records, builder, pop = _build(setup, key, recs, meds, gates)
            result.problems.extend(builder.placed)
            result.population += pop
            for rec in records:
                _evaluate(setup, rec, gates, outs, result)
    finally:
        for out in outs.values():
            out.close()
    return result


def _gate(setup: Setup, codes: list[Any], gates: dict[str, list[list[str]]]) -> bool:
    return any(in_cohort(t, codes, gates[t.id]) for t in setup.trials)


def _build(setup: Setup, key: str, recs: list[tuple[list[Any], bytes]], meds: dict[str, Any], gates: dict[str, Any]) -> tuple[list[Any], _Builder, int]:
    """One patient's record, added as FileSource.read_cohort (or read) would have."""
    b = _Builder(meds)
    files = setup.files
    if not setup.cohort:
        for h, raw in recs:
            _add(b, h, raw, files)
        b.at = (ORPHANS, 0, 0, key)
        return list(b.records()), b, len(b.patients)
    held: list[tuple[list[Any], Any]] = []
    codes: list[Any] = []
    rest: list[tuple[list[Any], bytes]] = []
    for h, raw in recs:
        band = h[BAND]
        if band == BUNDLES:
            _add(b, h, raw, files)
        elif band == HELD:
            data = orjson.loads(raw)  # parsed once in pass 1: valid
            held.append((h, data))
            if h[FLAGS] & GATE and isinstance(data.get("code"), dict):
                codes.append(data["code"])
        else:
            rest.append((h, raw))
    codes = b.conditions_by_patient().get(key, []) + codes
    inside = _gate(setup, codes, gates)
    pop = bool(b.patients) or any(h[FLAGS] & POP for h, _ in rest)
    if inside:
        for h, data in held:
            _add(b, h, None, files, data)
    for h, raw in rest:
        if inside or h[FLAGS] & FORCED:
            _add(b, h, raw, files)
    b.at = (ORPHANS, 0, 0, key)
    return list(b.records(only={key} if inside else set())), b, int(pop)


def _add(b: _Builder, h: list[Any], raw: bytes | None, files: list[str], data: Any = None) -> None:
    b.at = (h[BAND], h[POS], h[K], "")
    where = where_of(files, h[FIDX], h[SUFFIX])
    if data is None:
        try:
            data = orjson.loads(raw)  # type: ignore[arg-type]
        except orjson.JSONDecodeError as e:
            if not h[FLAGS] & SEEN:
                b.problem(where, _json_error(e, False))
            return
    if not isinstance(data, dict):
        b.problem(where, NOT_AN_OBJECT)
        return
    if h[FLAGS] & SEEN and data.get("resourceType") == "Condition" and h[BAND] != HELD:
        return  # held from pass A already
    full_url = h[FULL_URL] if len(h) > FULL_URL else None
    local = h[LOCAL] if len(h) > LOCAL else None
    b.add(data, where, full_url, local)


def _evaluate(setup: Setup, rec: Any, gates: dict[str, Any], outs: dict[str, Any], result: PartResult) -> None:
    trials = setup.trials
    multi = len(trials) > 1
    row: dict[str, tuple[str, str]] = {}
    codes = None
    for t in trials:
        if multi and not setup.all_patients and gates[t.id]:
            if codes is None:
                codes = [c["code"] for c in rec.of_type("Condition") if isinstance(c.get("code"), dict)]
            if not in_cohort(t, codes, gates[t.id]):
                continue
        r = evaluate(rec, t, setup.as_of)
        totals = result.totals[t.id]
        totals.evaluated += 1
        totals.counts[r.status] += 1
        ids = deciding(t, r.criteria)
        if ids:
            totals.first[ids[0]] += 1
            totals.reasons.update(ids)
        outs[t.id].write(render(t, r, setup.as_of, ids))
        row[t.id] = (r.status, "; ".join(still_to_do(t, r.criteria)) if r.status != INELIGIBLE else "")
    if row:
        result.evaluated_any += 1
        if multi and any(s != INELIGIBLE for s, _ in row.values()):  # the portfolio page's rows
            result.shortlist.append((rec.key, row))


def render(trial: Trial, r: Any, as_of: date, ids: list[str]) -> bytes:
    """One result as the outputs need it: a header line, then the bytes of screening.ndjson,
    report.csv, the subjects Bundle entry and the report's three HTML parts."""
    screening = orjson.dumps(r.to_json(trial, as_of)) + b"\n"
    buf = io.StringIO()
    write_csv_rows(csv.writer(buf, lineterminator="\n"), trial, r)
    parts = [screening, buf.getvalue().encode()]
    if r.status in (CANDIDATE, POTENTIAL):
        parts += [(",\n" + subject_entry_text(trial, r.patient, r.status)).encode(), (glance_row(trial, r) + "\n").encode(),
                  ("\n".join(detail_lines(trial, r)) + "\n").encode(), b""]
    else:
        parts += [b"", b"", b"", (ineligible_row(trial, r) + "\n").encode()]
    head = orjson.dumps([r.patient, r.status, [len(p) for p in parts]]) + b"\n"
    return head + b"".join(parts)


def problem_text(p: tuple) -> str:
    return str(Problem(p[5], p[6], p[7]))


def log_text(p: tuple) -> str:
    return Problem(p[5], p[6], p[7]).log_text()
