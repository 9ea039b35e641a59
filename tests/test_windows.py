from datetime import date

from fhir_matcher.criteria.windows import Window, add_months, add_years
from fhir_matcher.fhirjson import parse_date


def test_day_window_includes_both_ends():
    w = Window.before(date(2026, 11, 24), days=30)
    assert w.start == date(2026, 10, 25)
    assert w.contains(date(2026, 10, 25)) and w.contains(date(2026, 11, 24))
    assert not w.contains(date(2026, 10, 24)) and not w.contains(date(2026, 11, 25))


def test_month_window_is_calendar_months():
    assert Window.before(date(2026, 11, 24), months=3).start == date(2026, 8, 24)
    assert add_months(date(2026, 5, 31), -3) == date(2026, 2, 28)
    assert add_months(date(2024, 5, 31), -3) == date(2024, 2, 29)
    assert add_months(date(2026, 1, 15), -6) == date(2025, 7, 15)


def test_leap_day_birthday():
    assert add_years(date(2008, 2, 29), 18) == date(2026, 3, 1)
    assert add_years(date(2008, 11, 24), 18) == date(2026, 11, 24)


def test_dates_as_written_and_partial():
    assert parse_date("2026-11-03T23:30:00+08:00").lo == date(2026, 11, 3)
    span = parse_date("2026-02")
    assert (span.lo, span.hi) == (date(2026, 2, 1), date(2026, 2, 28))
    assert parse_date("1990").hi == date(1990, 12, 31)
    assert parse_date("2026-02-30") is None
    assert parse_date("yesterday") is None
    assert parse_date(20261103) is None
