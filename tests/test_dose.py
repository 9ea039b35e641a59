"""Daily dose from Dosage: quantity x frequency per period, tablets x strength, refusals."""

import pytest

from fhir_matcher.normalize.dose import daily_dose_mg, strength_mg
from fhir_matcher.normalize.units import UnitSystem


@pytest.fixture(scope="module")
def units():
    return UnitSystem()


def dosage(value=None, unit="mg", code=None, freq=None, period=None, period_unit=None, timing_code=None, **extra):
    d = dict(extra)
    if value is not None:
        q = {"value": value, "unit": unit}
        if code:
            q["code"] = code
        d["doseAndRate"] = [{"doseQuantity": q}]
    repeat = {k: v for k, v in (("frequency", freq), ("period", period), ("periodUnit", period_unit)) if v is not None}
    timing = {}
    if repeat:
        timing["repeat"] = repeat
    if timing_code:
        timing["code"] = {"coding": [{"code": timing_code}]}
    if timing:
        d["timing"] = timing
    return d


@pytest.mark.parametrize("d, expected", [
    (dosage(10, freq=2, period=1, period_unit="d"), 20),  # 10 mg twice a day
    (dosage(10, freq=1, period=12, period_unit="h"), 20),  # every 12 hours
    (dosage(40, freq=1, period=2, period_unit="d"), 20),  # every other day
    (dosage(1, unit="g", freq=1, period=1, period_unit="d"), 1000),
    (dosage(500, unit="mcg", freq=1, period=1, period_unit="d"), 0.5),
    (dosage(5, timing_code="TID"), 15),
    (dosage(7.5, freq=1, period=1, period_unit="wk"), 7.5 / 7),
])
def test_daily_dose(units, d, expected):
    mg, why = daily_dose_mg((d,), {}, units)
    assert mg == pytest.approx(expected), why


def test_dosages_are_summed(units):
    morning, evening = dosage(10, freq=1, period=1, period_unit="d"), dosage(5, freq=1, period=1, period_unit="d")
    assert daily_dose_mg((morning, evening), {}, units)[0] == 15


def test_tablets_times_strength_from_name(units):
    d = dosage(4, unit="片", freq=1, period=1, period_unit="d")
    assert daily_dose_mg((d,), {"text": "甲泼尼龙片 4mg"}, units)[0] == 16
    d = dosage(2, unit="{tablet}", freq=2, period=1, period_unit="d")
    med = {"coding": [{"display": "prednisone 10 MG Oral Tablet"}]}
    assert daily_dose_mg((d,), med, units)[0] == 40


def test_strength_needs_one_unambiguous_number():
    assert strength_mg({"text": "甲泼尼龙片 4mg"}) == 4
    assert strength_mg({"text": "prednisone 5 MG / 10 MG pack"}) is None
    assert strength_mg({"text": "prednisone tablets"}) is None


@pytest.mark.parametrize("d, med, why", [
    (dosage(10), {}, "frequency"),
    (dosage(freq=1, period=1, period_unit="d", text="10mg per the note"), {}, "free text"),
    (dosage(2, unit="tablet", freq=1, period=1, period_unit="d"), {"text": "prednisone"}, "strength"),
    (dosage(10, unit="puffs", freq=1, period=1, period_unit="d"), {}, "unit"),
])
def test_unknown_doses_say_why(units, d, med, why):
    mg, reason = daily_dose_mg((d,), med, units)
    assert mg is None and why in reason


def test_no_dosage(units):
    assert daily_dose_mg((), {}, units) == (None, "no dosage recorded")


@pytest.mark.parametrize("text, med, expected", [
    ("10 mg bid", {}, 20),
    ("Prednisone 7.5mg once daily", {}, 7.5),
    ("40 mg every 12 hours", {}, 80),
    ("每日两次，每次4mg", {}, 8),
    ("一日1次 每次2片", {"text": "甲泼尼龙片 4mg"}, 8),
    ("1 g daily", {}, 1000),
])
def test_dose_from_free_text(units, text, med, expected):
    mg, why = daily_dose_mg(({"text": text},), med, units)
    assert mg == pytest.approx(expected), why


@pytest.mark.parametrize("text", ["as directed", "10 mg", "bid", "10 mg bid or 20 mg tid", "5 mg then 10 mg daily"])
def test_free_text_without_certainty_stays_unknown(units, text):
    mg, why = daily_dose_mg(({"text": text},), {}, units)
    assert mg is None and why
