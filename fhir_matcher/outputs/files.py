"""Writing the output folder: screening.ndjson, research-subjects.json, report.*, run.json.

Files are written owner-readable only (they hold patient data) and atomically (a temporary
file renamed into place), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any, Sequence

import orjson

from ..criteria.evaluate import PatientResult
from ..trial import Trial
from .report import report_csv, report_html
from .subjects import subjects_bundle


def write_private(path: Path, content: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content.encode("utf-8") if isinstance(content, str) else content)
    os.replace(tmp, path)


def prepare_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True, mode=0o700)


def write_outputs(
    out: Path,
    trial: Trial,
    results: Sequence[PatientResult],
    as_of: date,
    source: str,
    problems: Sequence[str] = (),
    changes: dict[str, str] | None = None,
    outside: int = 0,
    subjects: dict[str, dict[str, Any]] | None = None,
    needs_review: Sequence[dict[str, Any]] = (),
    reviewed: Sequence[dict[str, Any]] = (),
) -> dict[str, Path]:
    """``subjects`` (nightly): patient -> the ResearchSubject's status on the server now
    (``status``, ``by_person``, ``decided_on``); patients a person decided are left out of
    research-subjects.json, so posting it can never overwrite a decision."""
    prepare_dir(out)
    paths = {
        "screening": out / "screening.ndjson",
        "subjects": out / "research-subjects.json",
        "html": out / "report.html",
        "csv": out / "report.csv",
    }
    write_private(paths["screening"], b"".join(orjson.dumps(r.to_json(trial, as_of)) + b"\n" for r in results))
    decided = {p for p, s in (subjects or {}).items() if s.get("by_person")}
    bundle = subjects_bundle(trial, [r for r in results if r.patient not in decided])
    write_private(paths["subjects"], bundle.model_dump_json(indent=2, exclude_none=True) + "\n")
    write_private(paths["html"], report_html(trial, results, as_of, source, problems, changes, outside, subjects=subjects, needs_review=needs_review, reviewed=reviewed))
    write_private(paths["csv"], report_csv(trial, results, changes, subjects=subjects))
    return paths


def write_run_json(out: Path, summary: dict[str, Any]) -> Path:
    path = out / "run.json"
    write_private(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return path
