"""File source: FHIR R4 JSON Bundles (any type), single resources and Bulk Data NDJSON.

Two ways to read:
- ``read()`` reads everything (small inputs, ``--all-patients``);
- ``read_cohort()`` streams Bulk NDJSON in two passes: first the Conditions, to find the
  patients who can be eligible (the trial's diagnosis gate), then every other line, where a
  regular expression finds the patient a line refers to and only cohort patients' lines are
  parsed. Memory grows with the cohort, not the export; lines of patients outside the
  cohort are skipped unread (a malformed one among them is not reported).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson

from ..fhirjson import as_str, bundle_entries, normalize_reference, subject_reference
from ..record import PatientRecord, RecordBuilder

SUFFIXES = (".json", ".ndjson")
BOM = b"\xef\xbb\xbf"
_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_PATIENT_REF = re.compile(rb'"reference"\s*:\s*"(?:[^"]*/)?Patient/([^"/]+)"')
NOT_AN_OBJECT = "not a FHIR resource (JSON is not an object)"


def input_files(path: Path) -> list[Path]:
    """The files under ``path`` (recursively) that can hold FHIR JSON, in a stable order."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES) and not p.name.startswith("."))


def _json_error(e: json.JSONDecodeError, with_position: bool) -> str:
    if "UTF-8" in e.msg:
        return "not UTF-8 text"
    return f"invalid JSON at line {e.lineno} column {e.colno} ({e.msg})" if with_position else f"invalid JSON ({e.msg})"


def parse_file(file: Path, problem: Callable[[str, str], None]) -> Iterator[tuple[str, Any]]:
    """Each JSON document in a file (the file, or each NDJSON line) with where it came from.

    Unreadable files and lines are reported through ``problem`` and skipped.
    """
    try:
        if file.name.endswith(".ndjson"):
            for lineno, line in _lines(file):
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    problem(f"{file}:{lineno}", _json_error(e, False))
                    continue
                yield f"{file}:{lineno}", data
        else:
            raw = file.read_bytes()
            try:
                data = orjson.loads(raw[3:] if raw.startswith(BOM) else raw)
            except orjson.JSONDecodeError as e:
                problem(str(file), _json_error(e, True))
                return
            yield str(file), data
    except OSError as e:
        problem(str(file), f"cannot be read ({e.strerror or e})")


def _lines(file: Path) -> Iterator[tuple[int, bytes]]:
    with file.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if lineno == 1 and line.startswith(BOM):
                line = line[3:]
            if line.strip():
                yield lineno, line


def _first_type(file: Path) -> bytes | None:
    for _, line in _lines(file):
        m = _TYPE.search(line)
        return m.group(1) if m else None
    return None


class FileSource:
    """Reads every input file into a RecordBuilder; bad files and lines are reported, not fatal."""

    def __init__(self, path: str | Path, builder: RecordBuilder | None = None):
        self.path = Path(path)
        self.builder = builder or RecordBuilder()

        self.population = 0  # patients seen in the input, cohort or not

    def _files(self) -> list[Path]:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file or directory")
        return input_files(self.path)

    def read(self, progress: Callable[[int, int], None] | None = None) -> None:
        files = self._files()
        for n, file in enumerate(files, 1):
            self.read_file(file)
            if progress:
                progress(n, len(files))
        self.population = len(self.builder.patients)

    def read_cohort(
        self,
        gate: Callable[[Iterable[Any]], bool],
        progress: Callable[[int, int], None] | None = None,
        types: set[str] | None = None,
    ) -> set[str]:
        """Read only the patients whose Condition codes pass ``gate``; returns their keys.

        ``types``: the resource types worth keeping (others, such as Encounters no criterion
        reads, are skipped before parsing); Patient and Medication are always kept.
        """
        keep = {t.encode() for t in types | {"Patient", "Medication"}} if types else None
        files = self._files()
        bundles = [f for f in files if not f.name.endswith(".ndjson")]
        ndjson = [f for f in files if f.name.endswith(".ndjson")]
        steps, done = len(files) + len(ndjson), 0
        for file in bundles:  # Bundles are read whole; they are small next to exports
            self.read_file(file)
            done += 1
            if progress:
                progress(done, steps)
        codes: dict[str, list[Any]] = {}
        held: dict[str, list[tuple[str, Any]]] = {}  # pass 1's Conditions, until the gate decides
        seen: set[Path] = set()  # files pass 1 read: pass 2 skips their Conditions
        skip: set[Path] = set()  # one-type Bulk files of a type no criterion reads
        for file in ndjson:  # pass 1: the Conditions
            first = _first_type(file)
            conventional = re.match(r"^([A-Z][A-Za-z]+)([._-]|\.ndjson$)", file.name)
            if conventional and first and conventional.group(1).encode() == first and keep is not None and first not in keep:
                skip.add(file)
            elif first == b"Condition" or not conventional:
                seen.add(file)
                if conventional:
                    skip.add(file)  # a Condition file: pass 1 holds all it needs
                for where, data in parse_file(file, self.builder.problem):
                    if isinstance(data, dict) and data.get("resourceType") == "Condition":
                        ref = subject_reference(data)
                        if ref:
                            key = normalize_reference(ref)
                            held.setdefault(key, []).append((where, data))
                            if isinstance(data.get("code"), dict):
                                codes.setdefault(key, []).append(data["code"])
                        else:
                            self.add(data, where)  # reported as having no subject
            done += 1
            if progress:
                progress(done, steps)
        for key, rs in self.builder.conditions_by_patient().items():
            codes.setdefault(key, []).extend(rs)
        cohort = {key for key, ccs in codes.items() if gate(ccs)}
        for key in cohort:
            for where, data in held.get(key, ()):
                self.add(data, where)
        held.clear()
        wanted = {key.split("/", 1)[1].encode() for key in cohort}
        patients = set(self.builder.patients)
        for file in ndjson:  # pass 2: cohort patients' lines only
            if file in skip:
                done += 1
                continue
            for lineno, line in _lines(file):
                if keep is not None:
                    m = _TYPE.search(line, 0, 64) or _TYPE.search(line)
                    if m and m.group(1) not in keep:
                        continue  # a type no criterion reads
                refs = _PATIENT_REF.findall(line)
                if refs and not any(r in wanted for r in refs):
                    continue  # another patient's line: skipped unread
                where = f"{file}:{lineno}"
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    if file not in seen:
                        self.builder.problem(where, _json_error(e, False))
                    continue
                if file in seen and isinstance(data, dict) and data.get("resourceType") == "Condition":
                    continue  # already held from pass 1
                if isinstance(data, dict) and data.get("resourceType") == "Patient":
                    patients.add(f"Patient/{data.get('id')}")
                    if f"Patient/{data.get('id')}" not in cohort:
                        continue
                self.add(data, where)
            done += 1
            if progress:
                progress(done, steps)
        self.population = len(patients)
        return cohort

    def read_file(self, file: Path) -> None:
        for where, data in parse_file(file, self.builder.problem):
            self.add(data, where)

    def add(self, data: Any, where: str) -> None:
        b = self.builder
        if not isinstance(data, dict):
            b.problem(where, NOT_AN_OBJECT)
            return
        if data.get("resourceType") == "Bundle":
            self.add_bundle(data, where)
        else:
            b.add(data, where)

    MAX_NESTING = 8  # Bundles inside Bundles deeper than this are named and skipped

    def add_bundle(self, bundle: dict[str, Any], where: str, depth: int = 0) -> None:
        b = self.builder
        if depth > self.MAX_NESTING:
            b.problem(where, f"Bundle nested more than {self.MAX_NESTING} deep (skipped)")
            return
        entries, problems = bundle_entries(bundle)
        for at, reason in problems:
            b.problem(f"{where} {at}" if at else where, reason)
        # Patients first, so urn:uuid references inside this Bundle resolve to Patient/<id>.
        local: dict[str, str] = {}
        for e in entries:
            res = e.resource
            if res is not None and res.get("resourceType") == "Patient":
                if not as_str(res.get("id")):
                    url = as_str(e.request.get("url")) or ""
                    if url.startswith("Patient/") and "?" not in url:
                        res = {**res, "id": url.split("/", 1)[1]}
                b.add_patient(res, f"{where} entry {e.index}", e.full_url)
                if e.full_url and (res.get("id") or e.full_url):
                    local[e.full_url] = b.aliases.get(e.full_url, f"Patient/{res.get('id')}")
        for e in entries:
            res = e.resource
            if res is None:
                continue  # a DELETE entry or a response: no resource to read
            rtype = res.get("resourceType")
            if rtype in ("Patient", "OperationOutcome"):
                continue
            if rtype == "Bundle":
                self.add_bundle(res, f"{where} entry {e.index}", depth + 1)
                continue
            b.add(res, f"{where} entry {e.index}", e.full_url, local)


def read_records(path: str | Path, progress: Callable[[int, int], None] | None = None) -> tuple[list[PatientRecord], RecordBuilder]:
    source = FileSource(path)
    source.read(progress)
    return list(source.builder.records()), source.builder

