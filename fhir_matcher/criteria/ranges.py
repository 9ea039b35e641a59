"""Ranges of values a criterion accepts, and the three-valued test of a (possibly censored) value.

One vocabulary for every bound in a trial file: ``op``/``threshold`` pairs and two-sided
``range`` tables both become a ``Range``; per-sex bounds (``{ male = 450, female = 470 }``)
resolve against the patient's recorded sex. A lab value may be censored (``<0.5``): the true
value then lies on a ray, and the answer is true, false or open (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

INF = math.inf


def fmt_number(x: float) -> str:
    """A number as a person wrote it: 176.8, 30, 0.09148 (never rounded to 6 digits)."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Range:
    lo: float = -INF
    lo_inclusive: bool = True
    hi: float = INF
    hi_inclusive: bool = True

    @classmethod
    def from_op(cls, op: str, threshold: float) -> "Range":
        return {
            ">": cls(lo=threshold, lo_inclusive=False),
            ">=": cls(lo=threshold, lo_inclusive=True),
            "<": cls(hi=threshold, hi_inclusive=False),
            "<=": cls(hi=threshold, hi_inclusive=True),
        }[op]

    def test(self, value: float, comparator: str | None = None) -> bool | None:
        """Is the true value in the range? None when a censored value leaves it open."""
        if math.isnan(value):
            return None
        a, a_in, b, b_in = value, True, value, True  # the interval holding the true value
        if comparator in ("<", "<="):
            a, a_in, b_in = -INF, False, comparator == "<="
        elif comparator in (">", ">="):
            b, b_in, a_in = INF, False, comparator == ">="
        inside = self._above_lo(a, a_in) and self._below_hi(b, b_in)
        if inside:
            return True
        disjoint = (b < self.lo or (b == self.lo and not (b_in and self.lo_inclusive))) or (
            a > self.hi or (a == self.hi and not (a_in and self.hi_inclusive))
        )
        return False if disjoint else None

    def _above_lo(self, a: float, a_in: bool) -> bool:
        if self.lo == -INF:
            return True
        return a > self.lo or (a == self.lo and (self.lo_inclusive or not a_in))

    def _below_hi(self, b: float, b_in: bool) -> bool:
        if self.hi == INF:
            return True
        return b < self.hi or (b == self.hi and (self.hi_inclusive or not b_in))

    def describe(self) -> str:
        lo = f"{'>=' if self.lo_inclusive else '>'} {fmt_number(self.lo)}" if self.lo != -INF else ""
        hi = f"{'<=' if self.hi_inclusive else '<'} {fmt_number(self.hi)}" if self.hi != INF else ""
        if lo and hi:
            if self.lo_inclusive and self.hi_inclusive:
                return f"in {fmt_number(self.lo)}-{fmt_number(self.hi)}"
            return f"{lo} and {hi}"
        return lo or hi or "any value"


def _per_sex(bound: Any, sex: str | None) -> tuple[list[float], bool]:
    """The bound's candidate values for a patient, and whether sex decided it."""
    if isinstance(bound, dict):
        if sex in bound:
            return [float(bound[sex])], True
        return sorted(float(v) for v in bound.values()), False
    return [float(bound)], True


def ranges_for(params: dict[str, Any], sex: str | None) -> tuple[list[Range], str]:
    """The Range(s) a criterion's parameters give for a patient of this sex, and a note.

    Several ranges come back when the bound depends on sex and the sex is not recorded:
    the answer is certain only when all of them agree.
    """
    if "range" in params:
        r = params["range"]
        los, lo_known = _per_sex(r["min"], sex) if "min" in r else ([-INF], True)
        his, hi_known = _per_sex(r["max"], sex) if "max" in r else ([INF], True)
        lo_in, hi_in = bool(r.get("min_inclusive", True)), bool(r.get("max_inclusive", True))
        out = [Range(lo, lo_in, hi, hi_in) for lo in los for hi in his]
        known = lo_known and hi_known
    else:
        values, known = _per_sex(params["threshold"], sex)
        out = [Range.from_op(params["op"], v) for v in values]
    dependent = isinstance(params.get("threshold"), dict) or any(isinstance(v, dict) for v in params.get("range", {}).values())
    note = "" if not dependent else (f" ({sex})" if known else " (sex unknown)")
    return out, note


def test_all(ranges: list[Range], value: float, comparator: str | None) -> bool | None:
    answers = {r.test(value, comparator) for r in ranges}
    return answers.pop() if len(answers) == 1 else None


def describe_all(ranges: list[Range]) -> str:
    if len(ranges) == 1:
        return ranges[0].describe()
    # per-sex alternatives, e.g. "> 450/470"
    first = ranges[0]
    if all(r.hi == INF and r.lo_inclusive == first.lo_inclusive for r in ranges):
        return f"{'>=' if first.lo_inclusive else '>'} {'/'.join(fmt_number(r.lo) for r in ranges)}"
    if all(r.lo == -INF and r.hi_inclusive == first.hi_inclusive for r in ranges):
        return f"{'<=' if first.hi_inclusive else '<'} {'/'.join(fmt_number(r.hi) for r in ranges)}"
    return " or ".join(r.describe() for r in ranges)
