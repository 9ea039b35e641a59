"""Small typed accessors over FHIR R4 resources held as plain JSON dicts.

Input resources are never parsed into strict models: real servers send imperfect data, and
the matcher must lose one field, not a whole file. Every accessor returns ``None`` (or an
empty list) for a missing or malformed field instead of raising.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Iterator

Json = dict[str, Any]

_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
# Dates outside these years are data-entry errors, and calendar arithmetic on them (windows,
# birthdays) would leave Python's date range: they are read as no date.
MIN_YEAR, MAX_YEAR = 1800, 2999


def as_dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def ref_of(resource: Json) -> str:
    """``Type/id`` of a resource (``Type/?`` when it has no id)."""
    return f"{resource.get('resourceType', '?')}/{resource.get('id') or '?'}"


@dataclass(frozen=True)
class Coding:
    system: str | None
    code: str | None
    display: str | None


def codings(concept: Any) -> list[Coding]:
    out = []
    for c in as_list(as_dict(concept).get("coding")):
        if isinstance(c, dict):
            out.append(Coding(as_str(c.get("system")), as_str(c.get("code")), as_str(c.get("display"))))
    return out


def concept_text(concept: Any) -> str | None:
    return as_str(as_dict(concept).get("text"))


def concept_label(concept: Any) -> str:
    """A short human label for a CodeableConcept (for reasons and reports)."""
    text = concept_text(concept)
    if text:
        return text
    for c in codings(concept):
        if c.display:
            return c.display
    for c in codings(concept):
        if c.code:
            return f"{c.code}"
    return "(uncoded)"


# ---------------------------------------------------------------- dates


@dataclass(frozen=True)
class DateSpan:
    """The calendar days a FHIR date/dateTime may denote (a partial date is a span)."""

    lo: date
    hi: date

    @property
    def exact(self) -> bool:
        return self.lo == self.hi

    def __str__(self) -> str:
        return self.lo.isoformat() if self.exact else f"{self.lo.isoformat()}..{self.hi.isoformat()}"


def parse_date(value: Any) -> DateSpan | None:
    """Parse a FHIR date or dateTime to the day(s) it names, in its own time zone.

    "2026-11-03T23:30:00+08:00" is 2026-11-03 as written; "2026-11" is the whole month.
    Returns None for anything that is not a valid date.
    """
    return _parse_date_text(value) if isinstance(value, str) else None


@lru_cache(maxsize=65536)
def _parse_date_text(s: str) -> DateSpan | None:
    if not s.strip():
        return None
    m = _DATE_RE.match(s.strip())
    if not m:
        return None
    y, mo, d = m.group(1), m.group(2), m.group(3)
    try:
        year = int(y)
        if not MIN_YEAR <= year <= MAX_YEAR:
            return None
        if mo is None:
            return DateSpan(date(year, 1, 1), date(year, 12, 31))
        month = int(mo)
        if d is None:
            start = date(year, month, 1)
            end = date(year + (month == 12), month % 12 + 1, 1)
            return DateSpan(start, date.fromordinal(end.toordinal() - 1))
        day = date(year, month, int(d))
        return DateSpan(day, day)
    except ValueError:
        return None


# ---------------------------------------------------------------- references


def reference(value: Any) -> str | None:
    return as_str(as_dict(value).get("reference"))


def normalize_reference(ref: str, base_types: tuple[str, ...] = ()) -> str:
    """Reduce absolute and versioned references to ``Type/id``.

    ``https://x/fhir/Patient/1/_history/2`` -> ``Patient/1``. ``urn:uuid:`` and contained
    (``#id``) references are returned unchanged.
    """
    if ref.startswith(("urn:", "#")):
        return ref
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return ref


def subject_reference(resource: Json) -> str | None:
    """The patient a resource is about (subject, patient or beneficiary)."""
    for key in ("subject", "patient", "individual", "beneficiary"):
        value = resource.get(key)
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str) and ref.strip():
                return ref
    return None


@dataclass(frozen=True)
class Entry:
    """One well-formed part of a Bundle entry (malformed parts are dropped and named)."""

    index: int
    full_url: str | None
    resource: Json | None
    request: Json


# Bundles whose entries legitimately carry no resource (a response, a deletion in a history).
_NO_RESOURCE_TYPES = {"history", "transaction-response", "batch-response"}


def bundle_entries(bundle: Json) -> tuple[list[Entry], list[tuple[str, str]]]:
    """A Bundle's entries, checked for shape, and the structural problems found.

    Problems are ``(where, reason)`` with ``where`` = "" (the Bundle itself) or "entry <i>".
    An entry that is not an object, or whose resource is not an object, is skipped; a
    malformed fullUrl or request is ignored and the resource kept. Nothing is dropped
    without a problem, except entries that need no resource (DELETE, responses).
    """
    problems: list[tuple[str, str]] = []
    raw = bundle.get("entry")
    if raw is None:
        return [], problems
    if isinstance(raw, dict):
        problems.append(("", "Bundle.entry is not a list (read as a single entry)"))
        raw = [raw]
    elif not isinstance(raw, list):
        problems.append(("", f"Bundle.entry is not a list but {_json_type(raw)} (no entry read)"))
        return [], problems
    btype = bundle.get("type")
    out = []
    for i, e in enumerate(raw):
        where = f"entry {i}"
        if not isinstance(e, dict):
            problems.append((where, f"the entry is {_json_type(e)}, not an object (skipped)"))
            continue
        full_url = e.get("fullUrl")
        if full_url is not None and not as_str(full_url):
            problems.append((where, "entry.fullUrl is not a non-empty string (ignored)"))
            full_url = None
        request = e.get("request")
        if request is not None and not isinstance(request, dict):
            problems.append((where, "entry.request is not an object (ignored)"))
            request = None
        request = request or {}
        for key in ("method", "url"):
            if key in request and not as_str(request[key]):
                problems.append((where, f"entry.request.{key} is not a non-empty string (ignored)"))
                request = {k: v for k, v in request.items() if k != key}
        resource = e.get("resource")
        if resource is not None and not isinstance(resource, dict):
            problems.append((where, f"entry.resource is {_json_type(resource)}, not an object (skipped)"))
            continue
        if resource is None and not (request.get("method") == "DELETE" or "response" in e or btype in _NO_RESOURCE_TYPES):
            problems.append((where, "the entry has no resource (skipped)"))
            continue
        out.append(Entry(i, full_url, resource, request))
    return out, problems


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


def iter_entries(bundle: Json) -> Iterator[tuple[str | None, Any]]:
    for entry in as_list(bundle.get("entry")):
        if isinstance(entry, dict):
            yield as_str(entry.get("fullUrl")), entry.get("resource")


# ---------------------------------------------------------------- numbers


MAX_MAGNITUDE = 1e100  # beyond any clinical value in any unit: a corrupt number, not a result


def as_number(value: Any) -> float | None:
    """A finite number within +-1e100 (JSON numbers, or a number written as a string).

    Booleans, NaN, infinities, integers too large for a float and absurd magnitudes are not
    numbers here: arithmetic on them raises or gives nonsense further down.
    """
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            x = float(value)
        elif isinstance(value, str):
            x = float(value.strip())
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return x if math.isfinite(x) and abs(x) <= MAX_MAGNITUDE else None
