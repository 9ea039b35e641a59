"""Calendar windows anchored on the as-of date (both ends included)."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole calendar months, clamped to the month's last day."""
    total = day.year * 12 + (day.month - 1) + months
    year, month = divmod(total, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def add_years(day: date, years: int) -> date:
    """The anniversary ``years`` later; a 29 February birthday falls on 1 March."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return date(day.year + years, 3, 1)


@dataclass(frozen=True)
class Window:
    start: date
    end: date

    @classmethod
    def before(cls, as_of: date, *, days: int | None = None, months: int | None = None) -> "Window":
        if days is not None:
            return cls(as_of - timedelta(days=days), as_of)
        if months is not None:
            return cls(add_months(as_of, -months), as_of)
        raise ValueError("a window needs days or months")

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end

    def overlaps(self, lo: date, hi: date) -> bool:
        return lo <= self.end and hi >= self.start

    def describe(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"
