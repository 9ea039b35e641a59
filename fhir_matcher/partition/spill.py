"""Spill files: the private temporary folder, the record format, and how many partitions.

Every resource read from the input is appended, as one line, to the spill file of its
patient's partition (a stable hash of the patient key), so a partition can later be read
back and grouped per patient without holding the cohort. A spill line is

    orjson([band, pos, k, flags, fidx, where-suffix, key, fullUrl, local]) TAB raw-JSON NEWLINE

``band`` and (``pos``, ``k``) order resources and problems exactly as the in-memory reader
added them (see split.py); ``fidx`` names the input file, ``where-suffix`` the line (an int)
or the Bundle entry (" entry 3"). Raw NDJSON lines are copied, never re-encoded.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

MiB = 1024 * 1024

# header fields
BAND, POS, K, FLAGS, FIDX, SUFFIX, KEY, FULL_URL, LOCAL = range(9)
# flags
FORCED = 1  # added whatever the cohort gate says (Bundles, lines without a patient reference)
GATE = 2  # a Condition whose code opens the cohort gate (pass A)
POP = 4  # a Patient line: counts in the population
SEEN = 8  # from a file pass A read: its JSON errors are already named, its Conditions held
PATIENT = 16  # a Bundle's Patient entry (added with its fullUrl)

# bands: the order the in-memory reader met things in (cohort mode)
BUNDLES, HELD, REST, ORPHANS = 0, 1, 2, 3

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB, "t": 1024 * 1024 * MiB}


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``800MB`` or plain bytes -> bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size (e.g. 512M, 2G): {text!r}")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ValueError(f"the memory budget must be more than 0: {text!r}")
    return n


def partition_of(key: str, parts: int) -> int:
    """A stable hash (the same in every process and run), unlike ``hash()``."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % parts if parts > 1 else 0


# What one process costs before it holds any data (Python, pint, fhir.resources, the trials),
# and how much memory a partition's spilled bytes take once read back and grouped per patient
# (bytes objects, parsed headers): both measured on synthetic exports (benchmarks/bench_memory.py).
PROCESS_BASE = 90 * MiB
GROUPED_FACTOR = 2.5
MAX_PARTS = 512


def partitions_for(input_bytes: int, budget: int, processes: int) -> int:
    """How many partitions keep every worker's share of the budget: the parent and each
    worker cost PROCESS_BASE; what is left is shared by the workers, each holding one
    partition at a time. With several workers, at least four partitions each (balance)."""
    share = max(budget - (processes + 1) * PROCESS_BASE, 16 * MiB) / processes
    parts = max(1, -(-int(input_bytes * GROUPED_FACTOR) // int(share)))
    if processes > 1 and parts > 1:
        parts = max(parts, 4 * processes)
    return min(parts, MAX_PARTS)


def header(band: int, pos: int, k: int, flags: int, fidx: int, suffix: int | str, key: str,
           full_url: str | None = None, local: dict[str, str] | None = None) -> bytes:
    h: list[Any] = [band, pos, k, flags, fidx, suffix, key]
    if full_url is not None or local:
        h += [full_url, local]
    return orjson.dumps(h)


def where_of(files: list[str], fidx: int, suffix: int | str) -> str:
    """The location named in problems: ``file:line`` (NDJSON), ``file entry N`` (Bundles)."""
    return f"{files[fidx]}:{suffix}" if isinstance(suffix, int) else f"{files[fidx]}{suffix}"


@dataclass
class SpillDir:
    """A private folder (0700) for spill files, removed on exit whatever happens."""

    path: Path

    @classmethod
    def create(cls, near: Path | None = None) -> "SpillDir":
        base = None
        if near is not None:
            try:
                near.mkdir(parents=True, exist_ok=True, mode=0o700)
                base = str(near)
            except OSError:
                base = None
        return cls(Path(tempfile.mkdtemp(prefix=".fhir-matcher-spill-", dir=base)))  # mkdtemp: mode 0700

    def file(self, name: str) -> Path:
        return self.path / name

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "SpillDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def open_private(path: Path, mode: str = "wb") -> Any:
    """A new file only its owner can read (spill files hold patient data)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC), 0o600)
    return os.fdopen(fd, mode, buffering=256 * 1024)
