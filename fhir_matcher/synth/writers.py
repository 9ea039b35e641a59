"""Writers: the output folder, Bulk Data NDJSON or transaction Bundles, and ``generate()``.

Output is streamed: one patient is built, written and forgotten at a time, so a million
patients need no more memory than one. The same (n, seed, anchor) always gives byte-identical
files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from itertools import chain
from pathlib import Path
from typing import Any

from .medications import SHARED_MED_KEYS, shared_medication
from .patient import Generator
from .population import DEFAULT_ANCHOR, Patient, check_prevalence
from .styles import Json

try:  # orjson is ~10x faster; the stdlib gives the same bytes (compact, UTF-8, key order kept)
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


PATIENTS_PER_BUNDLE = 50
NDJSON_TYPES = (
    "Patient", "Condition", "Observation", "MedicationStatement", "MedicationRequest",
    "Procedure", "Encounter", "Medication",
)
_OWN_FILE = re.compile(r"^(?:(?:%s)\.ndjson|bundle-\d{4,}\.json)$" % "|".join(NDJSON_TYPES))
_OWN_CONTENT = re.compile(rb'^\{"resourceType":"[A-Za-z]+","id":"s\d+-')  # how every file synth writes begins


def _is_own(path: Path) -> bool:
    """A file an earlier synth run wrote: its name, and how its content begins."""
    if not _OWN_FILE.match(path.name) or not path.is_file():
        return False
    with path.open("rb") as fh:
        head = fh.read(200)
    return not head or bool(_OWN_CONTENT.match(head))


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not _is_own(p))
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise ValueError(f"{out}: folder holds files synth did not write ({shown}); use an empty or new folder")
        for p in out.iterdir():  # an earlier synth run: replace it entirely
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(n: int, seed: int, out: Path, *, bundles: bool = False, prevalence: dict[str, float] | None = None,
             anchor: date = DEFAULT_ANCHOR) -> dict:
    """Write ``n`` synthetic patients to ``out``; return the counts.

    Returns ``{"patients", "resources" (by type), "resources_total", "files", "bytes", "flags"}``
    where ``flags`` counts the patients with each prevalence feature (``target``,
    ``target:sle`` ...).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--patients must be a whole number of at least 1 (got {n!r})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a whole number >= 0 (got {seed!r})")
    if not isinstance(anchor, date):
        raise ValueError(f"the anchor date must be a date (got {anchor!r})")
    prev = check_prevalence(prevalence)
    out = Path(out)
    _prepare_out(out)
    gen = Generator(seed, anchor, prev, bundles)
    counts: dict[str, int] = {t: 0 for t in NDJSON_TYPES}
    flags: dict[str, int] = {}
    write = _write_bundles if bundles else _write_ndjson
    files, total_bytes = write(gen, n, out, counts, flags)
    resources = {t: c for t, c in counts.items() if c}
    return {
        "patients": n,
        "resources": resources,
        "resources_total": sum(c for t, c in counts.items() if t != "Bundle"),
        "files": files,
        "bytes": total_bytes,
        "flags": dict(sorted(flags.items())),
    }


def _patients(gen: Generator, first: int, stop: int, flags: dict[str, int]) -> Iterator[tuple[str, Json]]:
    """The resources of patients ``first + 1`` .. ``stop``, in order; counts their features in ``flags``."""
    for i in range(first, stop):
        pat = Patient(gen, i + 1)
        yield from pat.build()
        for f in pat.flags:
            flags[f] = flags.get(f, 0) + 1


def _write_ndjson(gen: Generator, n: int, out: Path, counts: dict[str, int], flags: dict[str, int]) -> tuple[int, int]:
    """One ``<Type>.ndjson`` per resource type, the shared Medications first; returns (files, bytes)."""
    total_bytes = 0
    handles = {t: open(out / f"{t}.ndjson", "wb", buffering=1 << 20) for t in NDJSON_TYPES}
    try:
        w = {t: h.write for t, h in handles.items()}
        medications = (("Medication", shared_medication(gen.seed, key)) for key in SHARED_MED_KEYS)
        for rtype, res in chain(medications, _patients(gen, 0, n, flags)):
            line = _dumps(res) + b"\n"
            w[rtype](line)
            counts[rtype] += 1
            total_bytes += len(line)
    finally:
        for h in handles.values():
            h.close()
    return len(handles), total_bytes


def _write_bundles(gen: Generator, n: int, out: Path, counts: dict[str, int], flags: dict[str, int]) -> tuple[int, int]:
    """``bundle-0001.json`` ...: transaction Bundles of PATIENTS_PER_BUNDLE patients with the Medications
    they name; returns (files, bytes)."""
    total_bytes = files = 0
    counts["Bundle"] = 0
    for first in range(0, n, PATIENTS_PER_BUNDLE):
        files += 1
        gen.used_meds = []
        entries: list[Json] = []
        for rtype, res in _patients(gen, first, min(n, first + PATIENTS_PER_BUNDLE), flags):
            entries.append(_entry(gen, rtype, res))
            counts[rtype] += 1
        meds = [_entry(gen, "Medication", shared_medication(gen.seed, k)) for k in SHARED_MED_KEYS if k in gen.used_meds]
        counts["Medication"] += len(meds)
        bundle = {"resourceType": "Bundle", "id": f"s{gen.seed}-bundle-{files:04d}", "type": "transaction", "entry": meds + entries}
        data = _dumps(bundle)
        (out / f"bundle-{files:04d}.json").write_bytes(data)
        counts["Bundle"] += 1
        total_bytes += len(data)
    return files, total_bytes


def _entry(gen: Generator, rtype: str, res: Json) -> Json:
    rid = res["id"]
    return {"fullUrl": gen.urn(rtype, rid), "resource": res, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}

