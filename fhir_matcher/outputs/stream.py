"""Writing the outputs as results come, in bounded memory (issue 15).

Workers leave one results file per partition and trial, sorted by patient, each result
already rendered (partition/work.py ``render``). Here they are merged by patient key (the
order ``write_outputs`` has always used) and copied into screening.ndjson, report.csv,
research-subjects.json and the report's sections; report.html is then put together from the
counts and those sections. The bytes are those ``write_outputs`` writes for the same results.
Each file appears whole (written under a temporary name, then renamed), owner-readable only.
"""

from __future__ import annotations

import heapq
import os
import shutil
from collections import Counter
from datetime import date
from pathlib import Path
from typing import IO, Iterator, Sequence

import orjson

from ..criteria.evaluate import CANDIDATE, POTENTIAL
from ..trial import Trial
from .files import prepare_dir
from .report import CSV_FIELDS, detail_header, glance_header, head_lines, ineligible_header, tail_lines
from .subjects import SUBJECTS_TAIL, subjects_head

_SEGMENTS = ("screening", "csv", "subjects", "glance", "detail", "inel")


def _results(path: Path) -> Iterator[tuple[str, str, list[bytes]]]:
    with open(path, "rb") as fh:
        while True:
            head = fh.readline()
            if not head:
                return
            patient, status, lengths = orjson.loads(head)
            yield patient, status, [fh.read(n) for n in lengths]


def _private(path: Path) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb", buffering=1024 * 1024)


def write_streamed(
    out: Path,
    trial: Trial,
    parts: Sequence[Path],
    as_of: date,
    source: str,
    counts: Counter,
    first: Counter,
    evaluated: int,
    problems: Sequence[str],
    outside: int,
    scratch: Path,
) -> dict[str, Path]:
    """Merge the partitions' results (each sorted by patient) into the four output files."""
    prepare_dir(out)
    paths = {
        "screening": out / "screening.ndjson",
        "subjects": out / "research-subjects.json",
        "html": out / "report.html",
        "csv": out / "report.csv",
    }
    tmp = {name: p.with_name(f".{p.name}.tmp") for name, p in paths.items()}
    sections = {name: scratch / f"{trial.id}.{name}.html" for name in ("glance", CANDIDATE, POTENTIAL, "inel")}
    try:
        _merge(trial, parts, tmp, sections)
        _compose(tmp["html"], sections, trial, as_of, source, counts, first, evaluated, problems, outside)
        for name, path in paths.items():
            os.replace(tmp[name], path)
    finally:
        for path in [*sections.values(), *tmp.values()]:
            path.unlink(missing_ok=True)  # after an error: no half-written file is left
    return paths


def _merge(trial: Trial, parts: Sequence[Path], tmp: dict[str, Path], sections: dict[str, Path]) -> None:
    files: dict[str, IO[bytes]] = {}
    try:
        for name, path in [*((n, tmp[n]) for n in ("screening", "subjects", "csv")), *sections.items()]:
            files[name] = _private(path)
        files["csv"].write((",".join(CSV_FIELDS) + "\n").encode())
        files["subjects"].write(subjects_head(trial).encode())
        merged = heapq.merge(*(_results(p) for p in parts), key=lambda r: r[0])
        for _, status, seg in merged:
            screening, csv_rows, entry, glance, detail, inel = seg
            files["screening"].write(screening)
            files["csv"].write(csv_rows)
            if entry:
                files["subjects"].write(entry)
                files["glance"].write(glance)
                files[status].write(detail)
            else:
                files["inel"].write(inel)
        files["subjects"].write(SUBJECTS_TAIL.encode())
    finally:
        for fh in files.values():
            fh.close()


def _compose(target: Path, sections: dict[str, Path], trial: Trial, as_of: date, source: str, counts: Counter, first: Counter,
             evaluated: int, problems: Sequence[str], outside: int) -> None:
    """report.html: the head from the counts, then each section as the workers rendered it."""
    with _private(target) as html:
        w = lambda text: html.write(text.encode())  # noqa: E731
        w("\n".join(head_lines(trial, as_of, source, counts, first, evaluated, outside, {}, None)) + "\n")
        shortlisted = counts.get(CANDIDATE, 0) + counts.get(POTENTIAL, 0)
        w(glance_header(shortlisted) + "\n")
        _copy(sections["glance"], html)
        w("</table>\n")
        for status in (CANDIDATE, POTENTIAL):
            w(detail_header(status, counts.get(status, 0)) + "\n")
            _copy(sections[status], html)
        w(ineligible_header(evaluated - shortlisted) + "\n")
        _copy(sections["inel"], html)
        w("\n".join(tail_lines(problems)))


def _copy(path: Path, into: IO[bytes]) -> None:
    with open(path, "rb") as fh:
        shutil.copyfileobj(fh, into, 1024 * 1024)
