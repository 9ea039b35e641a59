"""What every part of a synthetic patient builds on: the run, its random stream, ids, dates, draws.

A patient is one class assembled from parts (population.Patient = Conditions + Medications +
Observations + Noise); each part subclasses ``PatientBase`` for the state and helpers below.
``Generator`` is what all patients of one run share.
"""

from __future__ import annotations

import random
import uuid
from datetime import date, timedelta

from .styles import STYLE_SPLIT, TZ, Json

_NS = uuid.UUID("6f1c3b1e-3d1a-5b8e-9a57-1f0e5c9d2a44")  # bundle fullUrls: uuid5 of "Type/id"


def weighted(pairs: tuple | list) -> tuple[tuple, tuple]:
    """``((key, weight), ...)`` -> (keys, cumulative weights), the table ``PatientBase.draw`` takes."""
    keys = tuple(k for k, _ in pairs)
    cum, total = [], 0.0
    for _, w in pairs:
        total += w
        cum.append(total)
    return keys, tuple(cum)


def _bisect(cum: tuple | list, x: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def num(x: float) -> float | int:
    """An integral float as an int (``10`` not ``10.0``), else the float."""
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


STYLE_TABLE = weighted(STYLE_SPLIT)


class Generator:
    """What one run shares: seed, anchor and its dates, prevalences, how resources reference each other."""

    def __init__(self, seed: int, anchor: date, prevalence: dict[str, float], bundles: bool):
        self.seed = seed
        self.anchor = anchor
        self.prevalence = prevalence
        self.p_text = prevalence["text-only"]
        self.bundles = bundles
        self.used_meds: list[str] = []  # shared Medications referenced (since the Bundle began)
        # dates as ISO strings, by days before the anchor (history, and deceased patients' offsets)
        self.iso = [(anchor - timedelta(days=i)).isoformat() for i in range(8000)]
        self._birth_iso: dict[int, str] = {}

    def birth_iso(self, off: int) -> str:
        s = self._birth_iso.get(off)
        if s is None:
            s = self._birth_iso[off] = (self.anchor - timedelta(days=off)).isoformat()
        return s

    def urn(self, rtype: str, rid: str) -> str:
        return "urn:uuid:" + str(uuid.uuid5(_NS, f"{rtype}/{rid}"))

    def ref(self, rtype: str, rid: str) -> str:
        if self.bundles:
            return self.urn(rtype, rid)
        return f"{rtype}/{rid}"


class PatientBase:
    """One patient's state: its own random stream, its style, and the resources built so far."""

    # set while building (population.Patient.build and the parts), read by the later parts
    base: int  # days from the anchor back to the patient's last day (0, or the death)
    span: int  # days of history
    female: bool
    age_y: float
    target: str | None
    onset: int
    qtc_high: bool
    pregnant: bool
    hiv: bool
    hbv: bool
    hbv_resolved: bool
    hcv: bool

    def __init__(self, gen: Generator, n: int):
        self.g = gen
        self.rng = rng = random.Random(f"fhir-matcher-synth:{gen.seed}:{n}")
        self.r = rng.random
        self.pid = f"s{gen.seed}-{n}"
        self.out: list[tuple[str, Json]] = []
        self.counters: dict[str, int] = {}
        self.flags: list[str] = []
        self.style = self.draw(STYLE_TABLE)
        self.tz = rng.choice(TZ[self.style])
        self.subject = {"reference": gen.ref("Patient", self.pid)}

    def next_id(self, kind: str) -> str:
        k = self.counters.get(kind, 0) + 1
        self.counters[kind] = k
        return f"{self.pid}-{kind}-{k}"

    def day(self, off: int) -> str:
        """ISO date ``off`` days before the patient's last day (anchor, or death)."""
        return self.g.iso[self.base + off]

    def dt(self, off: int, hour: int, minute: int = 0) -> str:
        return f"{self.g.iso[self.base + off]}T{hour:02d}:{minute:02d}:00{self.tz}"

    def emit(self, rtype: str, res: Json) -> None:
        self.out.append((rtype, res))

    def pick(self, seq):
        return seq[int(self.r() * len(seq))]

    def draw(self, table: tuple[tuple, tuple]):
        """One key of a ``weighted`` table, with the chances its weights give."""
        keys, cum = table
        return keys[_bisect(cum, self.r() * cum[-1])]
