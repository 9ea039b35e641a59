"""Calendar windows anchored on the as-of date (both ends included).

Besides membership, a window tells when a date will leave it as the as-of date moves on:
that is how an evaluation knows the first day its result can change with time alone.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Callable

ONE_DAY = timedelta(days=1)


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


def first_day(holds: Callable[[date], bool], guess: date) -> date:
    """The first day on which a monotone condition (false, then true forever) holds."""
    day = guess
    while holds(day - ONE_DAY):
        day -= ONE_DAY
    while not holds(day):
        day += ONE_DAY
    return day


@dataclass(frozen=True)
class Window:
    start: date
    end: date
    days: int | None = None
    months: int | None = None

    @classmethod
    def before(cls, as_of: date, *, days: int | None = None, months: int | None = None) -> "Window":
        if days is not None:
            return cls(as_of - timedelta(days=days), as_of, days=days)
        if months is not None:
            return cls(add_months(as_of, -months), as_of, months=months)
        raise ValueError("a window needs days or months")

    def start_for(self, as_of: date) -> date:
        if self.days is not None:
            return as_of - timedelta(days=self.days)
        return add_months(as_of, -(self.months or 0))

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end

    def overlaps(self, lo: date, hi: date) -> bool:
        return lo <= self.end and hi >= self.start

    def leaves_on(self, day: date) -> date:
        """The first as-of date whose window no longer reaches back to ``day``."""
        if self.days is not None:
            return day + timedelta(days=self.days + 1)
        return first_day(lambda x: self.start_for(x) > day, add_months(day, self.months or 0) + ONE_DAY)

    def describe(self) -> str:
        if self.days is not None:
            return f"the last {self.days} days"
        return f"the last {self.months} months"
