"""File source: FHIR R4 JSON Bundles (any type), single resources and Bulk Data NDJSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from ..fhirjson import as_dict, as_str, iter_entries
from .record import PatientRecord, RecordBuilder

SUFFIXES = (".json", ".ndjson")


def input_files(path: Path) -> list[Path]:
    """The files under ``path`` (recursively) that can hold FHIR JSON, in a stable order."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES) and not p.name.startswith("."))


def _describe_json_error(e: json.JSONDecodeError) -> str:
    return f"invalid JSON at line {e.lineno} column {e.colno} ({e.msg})"


def parse_file(file: Path, problem: Callable[[str, str], None]) -> Iterator[tuple[str, Any]]:
    """Each JSON document in a file (the file, or each NDJSON line) with where it came from.

    Unreadable files and lines are reported through ``problem`` and skipped.
    """
    try:
        with file.open("r", encoding="utf-8-sig") as fh:
            if file.name.endswith(".ndjson"):
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except json.JSONDecodeError as e:
                        problem(f"{file}:{lineno}", f"invalid JSON ({e.msg})")
                        continue
                    yield f"{file}:{lineno}", data
            else:
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as e:
                    problem(str(file), _describe_json_error(e))
                    return
                yield str(file), data
    except UnicodeDecodeError:
        problem(str(file), "not UTF-8 text")
    except OSError as e:
        problem(str(file), f"cannot be read ({e.strerror or e})")


class FileSource:
    """Reads every input file into a RecordBuilder; bad files and lines are reported, not fatal."""

    def __init__(self, path: str | Path, builder: RecordBuilder | None = None):
        self.path = Path(path)
        self.builder = builder or RecordBuilder()

    def read(self, progress: Callable[[int, int], None] | None = None) -> None:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file or directory")
        files = input_files(self.path)
        for n, file in enumerate(files, 1):
            self.read_file(file)
            if progress:
                progress(n, len(files))

    def read_file(self, file: Path) -> None:
        for where, data in parse_file(file, self.builder.problem):
            self.add(data, where)

    def add(self, data: Any, where: str) -> None:
        b = self.builder
        if not isinstance(data, dict):
            b.problem(where, "not a FHIR resource (JSON is not an object)")
            return
        if data.get("resourceType") == "Bundle":
            self.add_bundle(data, where)
        else:
            b.add(data, where)

    def add_bundle(self, bundle: dict[str, Any], where: str) -> None:
        b = self.builder
        entries = list(iter_entries(bundle))
        # Patients first, so urn:uuid references inside this Bundle resolve to Patient/<id>.
        local: dict[str, str] = {}
        for i, (full_url, res) in enumerate(entries):
            res = as_dict(res)
            if res.get("resourceType") == "Patient":
                if not as_str(res.get("id")):
                    url = as_str(as_dict(bundle["entry"][i].get("request")).get("url")) or ""
                    if url.startswith("Patient/") and "?" not in url:
                        res = {**res, "id": url.split("/", 1)[1]}
                b.add_patient(res, f"{where} entry {i}", full_url)
                if full_url and (res.get("id") or full_url):
                    local[full_url] = b.aliases.get(full_url, f"Patient/{res.get('id')}")
        for i, (full_url, res) in enumerate(entries):
            if res is None:
                continue  # e.g. a DELETE entry or a search outcome without resource
            if not isinstance(res, dict):
                b.problem(f"{where} entry {i}", "entry.resource is not an object")
                continue
            rtype = res.get("resourceType")
            if rtype == "Patient":
                continue
            if rtype == "Bundle":
                self.add_bundle(res, f"{where} entry {i}")
                continue
            if rtype == "OperationOutcome":
                continue
            b.add(res, f"{where} entry {i}", full_url, local)


def read_records(path: str | Path, progress: Callable[[int, int], None] | None = None) -> tuple[list[PatientRecord], RecordBuilder]:
    source = FileSource(path)
    source.read(progress)
    return list(source.builder.records()), source.builder

