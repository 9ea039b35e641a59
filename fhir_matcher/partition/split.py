"""Pass 1: stream every input into per-partition spill files, keyed by patient.

It follows the in-memory reader (sources/files.py) rule for rule, so both give the same
records, in the same order, with the same problems:

- cohort mode (``FileSource.read_cohort``): Bundles and JSON files first (band BUNDLES, read
  whole, urn:uuid references resolved while the Bundle is in hand); Condition files are
  parsed (pass A: Conditions are HELD for the gate); every other NDJSON line is routed by
  the patient a regular expression finds in it, unparsed (band REST); one-type files of
  types no criterion reads are not opened.
- all mode (``FileSource.read``): every file in order, every line parsed (band BUNDLES).

A job is one file or one byte range of a large NDJSON file (so pass 1 runs in parallel).
Each job writes its own partition files; ``pos`` (file index and byte offset) orders them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..fhirjson import as_str, bundle_entries, normalize_reference, subject_reference
from ..sources.files import BOM, NOT_AN_OBJECT, _PATIENT_REF, _TYPE, _json_error, parse_file
from .spill import BUNDLES, FORCED, GATE, HELD, POP, REST, SEEN, header, open_private, where_of

MAX_NESTING = 8  # as FileSource.MAX_NESTING
POS_SHIFT = 40  # pos = file index << 40 | byte offset


@dataclass
class SplitConfig:
    """What every job needs: where to write, how many partitions, which types to keep."""

    spill: Path
    parts: int
    files: list[str]  # input files by index (the ``where`` of problems)
    keep: frozenset[bytes] | None  # cohort mode: types worth reading (None: every type)
    cohort: bool


@dataclass
class SplitJob:
    index: int
    fidx: int
    ndjson: bool
    start: int = 0
    end: int = -1  # -1: to the end of the file
    first_line: int = 1
    pass_a: bool = False  # cohort mode: hold this file's Conditions
    pass_b: bool = True  # cohort mode: route its other lines
    seen: bool = False  # pass A reads it: pass B names no JSON error and skips its Conditions


@dataclass
class SplitResult:
    problems: list[tuple] = field(default_factory=list)  # (band, pos, k, j, subject, where, reason, resource)
    aliases: list[tuple[int, int, str, str]] = field(default_factory=list)  # (pos, k, fullUrl, Patient/<id>)
    written: int = 0  # bytes spilled


class Splitter:
    def __init__(self, cfg: SplitConfig, job: SplitJob):
        self.cfg, self.job = cfg, job
        self.outs: dict[Any, Any] = {}
        self.result = SplitResult()
        self.pos = 0
        self.k = 0

    # ------------------------------------------------------------ writing
    def _out(self, name: Any) -> Any:
        out = self.outs.get(name)
        if out is None:
            label = f"p{name:04d}" if isinstance(name, int) else name
            out = self.outs[name] = open_private(self.cfg.spill / f"{label}-j{self.job.index:05d}.spill")
        return out

    def emit(self, band: int, flags: int, key: str, raw: bytes, suffix: int | str,
             full_url: str | None = None, local: dict[str, str] | None = None, to: Any = None) -> None:
        self.k += 1
        line = header(band, self.pos, self.k, flags, self.job.fidx, suffix, key, full_url, local) + b"\t" + raw + b"\n"
        parts = self.cfg.parts
        name = to if to is not None else (zlib.crc32(key.encode("utf-8", "surrogatepass")) % parts if parts > 1 else 0)
        self._out(name).write(line)
        self.result.written += len(line)

    def problem(self, band: int, where: str, reason: str, resource: str | None = None) -> None:
        self.k += 1
        self.result.problems.append((band, self.pos, self.k, -1, "", where, reason, resource))

    def close(self) -> None:
        for out in self.outs.values():
            out.close()

    def where(self, suffix: int | str) -> str:
        return where_of(self.cfg.files, self.job.fidx, suffix)

    # ------------------------------------------------------------ parsed resources
    def route_parsed(self, data: Any, suffix: int | str, band: int, flags: int, raw: bytes | None = None) -> None:
        """FileSource.add: a resource or a Bundle."""
        if not isinstance(data, dict):
            self.problem(band, self.where(suffix), NOT_AN_OBJECT)
        elif data.get("resourceType") == "Bundle":
            self.route_bundle(data, suffix, band, 0)
        else:
            self.route_resource(data, suffix, band, flags, raw=raw)

    def route_bundle(self, bundle: dict[str, Any], suffix: str | int, band: int, depth: int) -> None:
        """FileSource.add_bundle: Patients first, so urn:uuid references resolve in the Bundle."""
        where = self.where(suffix)
        prefix = where[len(self.cfg.files[self.job.fidx]):]
        if depth > MAX_NESTING:
            self.problem(band, where, f"Bundle nested more than {MAX_NESTING} deep (skipped)")
            return
        entries, problems = bundle_entries(bundle)
        for at, reason in problems:
            self.problem(band, f"{where} {at}" if at else where, reason)
        local: dict[str, str] = {}
        for e in entries:
            res = e.resource
            if res is not None and res.get("resourceType") == "Patient":
                if not as_str(res.get("id")):
                    url = as_str(e.request.get("url")) or ""
                    if url.startswith("Patient/") and "?" not in url:
                        res = {**res, "id": url.split("/", 1)[1]}
                key = self.route_resource(res, f"{prefix} entry {e.index}", band, FORCED, full_url=e.full_url)
                if e.full_url and (res.get("id") or e.full_url):
                    local[e.full_url] = key or f"Patient/{res.get('id')}"
        for e in entries:
            res = e.resource
            if res is None:
                continue
            rtype = res.get("resourceType")
            if rtype in ("Patient", "OperationOutcome"):
                continue
            if rtype == "Bundle":
                self.route_bundle(res, f"{prefix} entry {e.index}", band, depth + 1)
                continue
            self.route_resource(res, f"{prefix} entry {e.index}", band, FORCED, full_url=e.full_url, local=local)

    def route_resource(self, data: dict[str, Any], suffix: int | str, band: int, flags: int,
                       full_url: str | None = None, local: dict[str, str] | None = None, raw: bytes | None = None) -> str | None:
        """RecordBuilder.add, up to the patient it files the resource under: the record goes to
        that patient's partition (the builder there names what is wrong with it)."""
        raw = raw if raw is not None else orjson.dumps(data)
        rtype = data.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            self.emit(band, flags | FORCED, "", raw, suffix)
            return None
        if rtype == "Patient":
            pid = as_str(data.get("id"))
            if not pid and full_url:
                pid = full_url.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
            key = f"Patient/{pid}" if pid else ""
            if full_url and pid:
                self.result.aliases.append((self.pos, self.k + 1, full_url, key))
            self.emit(band, flags | POP, key, raw, suffix, full_url)
            return key or None
        if rtype == "Medication":
            self.emit(band, flags, "", raw, suffix, full_url, to="meds")
            return None
        subject = subject_reference(data)
        if not subject:
            self.emit(band, flags | FORCED, "", raw, suffix)  # named by the builder: no subject
            return None
        if subject.startswith("urn:"):
            if local and subject in local:
                self.emit(band, flags, local[subject], raw, suffix, None, {subject: local[subject]})
            else:  # resolved after pass 1, when every Bundle's Patients are known
                self.emit(band, flags, subject, raw, suffix, to="deferred")
            return None
        self.emit(band, flags, normalize_reference(subject), raw, suffix)
        return None

    # ------------------------------------------------------------ files
    def run(self) -> SplitResult:
        try:
            if self.job.ndjson:
                self._ndjson()
            else:
                self._json_file()
        finally:
            self.close()
        return self.result

    def _json_file(self) -> None:
        file = Path(self.cfg.files[self.job.fidx])
        self.pos = self.job.fidx << POS_SHIFT

        def problem(where: str, reason: str) -> None:
            self.problem(BUNDLES, where, reason)

        for _, data in parse_file(file, problem):
            self.route_parsed(data, "", BUNDLES, FORCED)

    def _ndjson(self) -> None:
        job, cfg = self.job, self.cfg
        file = cfg.files[job.fidx]
        base = job.fidx << POS_SHIFT
        keep = cfg.keep
        try:
            fh = open(file, "rb")
        except OSError as e:
            self.pos = base
            self.problem(BUNDLES if (job.pass_a or not cfg.cohort) else REST, file, f"cannot be read ({e.strerror or e})")
            return
        with fh:
            fh.seek(job.start)
            offset, lineno = job.start, job.first_line - 1
            for line in fh:
                if job.end >= 0 and offset >= job.end:
                    break
                self.pos, self.k = base | offset, 0
                offset += len(line)
                lineno += 1
                if lineno == 1 and line.startswith(BOM):
                    line = line[3:]
                if not line.strip():
                    continue
                raw = line.rstrip(b"\r\n")
                if not cfg.cohort:
                    self._parse_all(raw, lineno)
                    continue
                data: Any = None
                if job.pass_a:
                    try:
                        data = orjson.loads(raw)
                    except orjson.JSONDecodeError as e:
                        self.problem(BUNDLES, f"{file}:{lineno}", _json_error(e, False))
                        continue
                    if isinstance(data, dict) and data.get("resourceType") == "Condition":
                        if subject_reference(data):
                            self.route_resource(data, lineno, HELD, GATE, raw=raw)
                        else:
                            self.route_resource(data, lineno, BUNDLES, FORCED, raw=raw)  # named now, as in pass 1
                        continue
                    if not job.pass_b:
                        continue
                m = _TYPE.search(raw, 0, 64) or _TYPE.search(raw)
                rtype = m.group(1) if m else None
                if keep is not None and rtype is not None and rtype not in keep:
                    continue
                if rtype not in (b"Patient", b"Medication", b"Bundle"):
                    refs = set(_PATIENT_REF.findall(raw))
                    if len(refs) == 1:
                        ref = refs.pop()
                        if b"\\" not in ref:
                            self.emit(REST, SEEN if job.seen else 0, "Patient/" + ref.decode("utf-8", "surrogateescape"), raw, lineno)
                            continue
                        refs.add(ref)
                else:
                    refs = set()
                if data is None:
                    try:
                        data = orjson.loads(raw)
                    except orjson.JSONDecodeError as e:
                        if not job.seen:
                            self.problem(REST, f"{file}:{lineno}", _json_error(e, False))
                        continue
                if isinstance(data, dict) and data.get("resourceType") == "Patient":
                    self.route_resource(data, lineno, REST, (SEEN if job.seen else 0), raw=raw)  # the cohort decides
                elif refs and isinstance(data, dict) and data.get("resourceType") != "Bundle":
                    self.route_resource(data, lineno, REST, (SEEN if job.seen else 0), raw=raw)  # several patients named
                else:
                    self.route_parsed(data, lineno, REST, FORCED | (SEEN if job.seen else 0), raw=raw)

    def _parse_all(self, raw: bytes, lineno: int) -> None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            self.problem(BUNDLES, f"{self.cfg.files[self.job.fidx]}:{lineno}", _json_error(e, False))
            return
        self.route_parsed(data, lineno, BUNDLES, FORCED, raw=raw)


def run_split(cfg: SplitConfig, job: SplitJob) -> SplitResult:
    return Splitter(cfg, job).run()
