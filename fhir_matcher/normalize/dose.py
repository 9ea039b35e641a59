"""Daily dose of a medication record in mg, from its Dosage elements.

dose (doseQuantity, or the high end of doseRange) x administrations per day (Timing.repeat
frequency per period, or a Timing.code such as BID), summed over the Dosage entries. A dose
in tablets is multiplied by the strength written in the drug's name ("甲泼尼龙片 4mg",
"prednisone 10 MG Oral Tablet"). A Dosage with text only is read when it states exactly one
dose and one frequency ("10 mg bid", "每日两次，每次4mg"). Anything missing or ambiguous gives
None with the reason; never a guess.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..fhirjson import Json, as_dict, as_list, as_number, as_str, codings, concept_label
from .units import UnitError, UnitSystem

_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}
# HL7 GTS timing abbreviations: administrations per day.
_TIMING_CODES = {
    "QD": 1, "QOD": 0.5, "BID": 2, "TID": 3, "QID": 4, "AM": 1, "PM": 1,
    "Q4H": 6, "Q6H": 4, "Q8H": 3, "Q12H": 2, "Q24H": 1, "WK": 1 / 7, "MO": 1 / 30,
}
_UNIT_DOSE = re.compile(r"^\{?(tab|tabs|tablet|tablets|tbl|cap|caps|capsule|capsules|pill|片|粒|粒/次|片/次)\}?$", re.I)
_STRENGTH = re.compile(r"(\d+(?:\.\d+)?)\s*(mg|毫克)(?![a-z/])", re.I)


def _per_day(timing: Json) -> tuple[float | None, str]:
    repeat = as_dict(timing.get("repeat"))
    freq = as_number(repeat.get("frequencyMax")) or as_number(repeat.get("frequency"))
    period = as_number(repeat.get("period"))
    unit = as_str(repeat.get("periodUnit"))
    if (freq is not None and freq <= 0) or (period is not None and period <= 0):
        return None, "timing.repeat.frequency or period is not a positive number"
    if period and unit in _PERIOD_DAYS:
        return (freq or 1.0) / (period * _PERIOD_DAYS[unit]), ""
    tod = as_list(repeat.get("timeOfDay"))
    if tod:
        return float(len(tod)), ""
    for c in codings(timing.get("code")):
        if c.code and c.code.upper() in _TIMING_CODES:
            return float(_TIMING_CODES[c.code.upper()]), ""
    return None, "no frequency in the dosage timing"


def _dose_quantity(dosage: Json) -> Json | None:
    for dr in as_list(dosage.get("doseAndRate")):
        dr = as_dict(dr)
        if isinstance(dr.get("doseQuantity"), dict):
            return dr["doseQuantity"]
        if isinstance(dr.get("doseRange"), dict):
            return as_dict(dr["doseRange"].get("high")) or None
    if isinstance(dosage.get("dose"), dict):  # MedicationAdministration.dosage.dose
        return dosage["dose"]
    return None


def strength_mg(medication: Any) -> float | None:
    """The mg strength written in a drug's name, if exactly one is written."""
    names = [concept_label(medication)] + [c.display for c in codings(medication) if c.display]
    for name in names:
        found = {float(m.group(1)) for m in _STRENGTH.finditer(name or "")}
        if len(found) == 1:
            return found.pop()
    return None


# Dosage.text as hospitals write it: "10 mg bid", "8mg once daily", "每日两次，每次4mg", "一日1次 每次2片".
_CN_NUMBER = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4}
_TEXT_DOSE = re.compile(r"(?:每次|单次)?\s*(\d+(?:\.\d+)?)\s*(mg|毫克|g|克|mcg|ug|µg|片|粒|tab(?:let)?s?)(?![a-z])", re.I)
_TEXT_FREQ = [
    (re.compile(r"\b(qd|od|once (?:a )?daily|once a day|daily|every day|qam|qpm|qhs)\b", re.I), lambda m: 1.0),
    (re.compile(r"\b(bid|b\.i\.d\.|twice (?:a )?daily|twice a day)\b", re.I), lambda m: 2.0),
    (re.compile(r"\b(tid|t\.i\.d\.|three times (?:a )?daily|three times a day)\b", re.I), lambda m: 3.0),
    (re.compile(r"\b(qid|q\.i\.d\.|four times (?:a )?daily|four times a day)\b", re.I), lambda m: 4.0),
    (re.compile(r"\b(?:q|every\s*)(\d+)\s*(?:h|hr|hrs|hours?)\b", re.I), lambda m: 24.0 / float(m.group(1)) if float(m.group(1)) > 0 else None),
    (re.compile(r"\bqod\b|every other day", re.I), lambda m: 0.5),
    (re.compile(r"(?:每日|每天|一日|1日)\s*([一二两三四1-4])\s*次"), lambda m: float(_CN_NUMBER.get(m.group(1), m.group(1)))),
    (re.compile(r"隔日"), lambda m: 0.5),
]


def dose_from_text(text: str, medication: Any, units: UnitSystem) -> tuple[float | None, str]:
    """mg per day from a free-text dosage, only when both dose and frequency are written."""
    doses = _TEXT_DOSE.findall(text)
    freqs = [fn(m) for pattern, fn in _TEXT_FREQ for m in [pattern.search(text)] if m]
    value = as_number(doses[0][0]) if len(doses) == 1 else None
    if value is None or len({f for f in freqs}) != 1 or freqs[0] is None:
        return None, "dose only as free text, not read with certainty"
    unit = doses[0][1].lower()
    if unit in ("片", "粒") or unit.startswith("tab"):
        strength = strength_mg(medication)
        if strength is None:
            return None, "dose in tablets and no strength in the drug name"
        return value * strength * freqs[0], ""
    try:
        return units.to_mg(value, {"毫克": "mg", "克": "g", "µg": "ug"}.get(unit, unit), None) * freqs[0], ""
    except UnitError as e:
        return None, f"dose unit: {e}"


def daily_dose_mg(dosages: tuple[Json, ...], medication: Any, units: UnitSystem) -> tuple[float | None, str]:
    """Total mg per day, or None and why it cannot be known."""
    if not dosages:
        return None, "no dosage recorded"
    total = 0.0
    for n, dosage in enumerate(dosages):
        q = _dose_quantity(dosage)
        if not q:
            text = as_str(dosage.get("text"))
            if not text:
                return None, "no dose quantity"
            mg, why = dose_from_text(text, medication, units)
            if mg is None:
                return None, why
            total += mg
            continue
        value = as_number(q.get("value"))
        if value is None or value < 0:
            return None, f"dosage[{n}] dose quantity value is not a number" if "value" in q else "dose quantity has no numeric value"
        code, text = as_str(q.get("code")), as_str(q.get("unit"))
        unit_words = [u for u in (code, text) if u]
        if unit_words and any(_UNIT_DOSE.match(u.strip()) for u in unit_words):
            strength = strength_mg(medication)
            if strength is None:
                return None, "dose in tablets and no strength in the drug name"
            mg = value * strength
        else:
            try:
                mg = units.to_mg(value, code, text)
            except UnitError as e:
                return None, f"dose unit: {e}"
        per_day, why = _per_day(as_dict(dosage.get("timing")))
        if per_day is None:
            if "dose" in dosage and "timing" not in dosage:
                per_day = 1.0  # MedicationAdministration.dosage: one dose given
            else:
                return None, why
        total += mg * per_day
    if not math.isfinite(total):
        return None, "dose out of range"
    return total, ""
