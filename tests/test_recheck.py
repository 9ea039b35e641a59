"""recheck_on: no result may change with time alone before the date an evaluation names.

This is what makes incremental nights safe: a patient whose data did not change is only
re-evaluated on or after its recheck date, so that date must never be late.
"""

from datetime import date, timedelta
from pathlib import Path

import pytest

from builders import patient, record
from fhir_matcher.criteria.evaluate import evaluate
from fhir_matcher.sources.files import read_records

DEMO = Path(__file__).resolve().parent.parent / "bundles" / "demo"


def snapshot(result):
    return result.status, {k: o.to_json() for k, o in result.criteria.items()}


@pytest.fixture(scope="module")
def demo_records():
    records, _ = read_records(DEMO)
    return records


def test_results_hold_until_the_recheck_date(trial, demo_records):
    start, days = date(2026, 9, 1), 150
    checked = 0
    for rec in demo_records:
        anchor = evaluate(rec, trial, start)
        anchor_day = start
        for n in range(1, days):
            day = start + timedelta(days=n)
            now = evaluate(rec, trial, day)
            if anchor.recheck_on is None or day < anchor.recheck_on:
                assert snapshot(now) == snapshot(anchor), f"{rec.key} changed on {day}; evaluated {anchor_day}, recheck {anchor.recheck_on}"
                checked += 1
            else:
                anchor, anchor_day = now, day
    assert checked > 1000  # most days are skipped safely, not re-evaluated


def test_recheck_dates_are_not_needlessly_early(trial):
    r = evaluate(record(patient(birth="2008-12-01")), trial, date(2026, 11, 24))
    assert r.recheck_on == date(2026, 12, 1)  # the 18th birthday: the age shown changes
    r = evaluate(record(patient(birth="2008-12-01")), trial, date(2026, 12, 1))
    assert r.recheck_on == date(2026, 12, 2)  # the day after: over 18
    r = evaluate(record(patient(birth="1980-05-05", deceasedDateTime="2027-01-01")), trial, date(2026, 11, 24))
    assert r.recheck_on is not None and r.recheck_on <= date(2027, 1, 1)
