"""Kinds about the person: age, death, and the checks only a person can make."""

from __future__ import annotations

from datetime import date

from ...fhirjson import parse_date
from ...trial import Criterion
from ..context import Context, Outcome
from ..ranges import INF, Range
from ..windows import ONE_DAY, add_years
from .base import MANUAL, MET, NOT_MET, UNKNOWN, as_list, fmt, kind, missing


def completed_years(birth: date, on: date) -> int:
    """Age in completed years: on the Nth birthday a person is N (29 February: 1 March)."""
    years = on.year - birth.year
    return years if add_years(birth, years) <= on else years - 1


@kind("age")
def age(c: Criterion, ctx: Context) -> Outcome:
    birth = parse_date(ctx.record.patient.get("birthDate"))
    if birth is None:
        return Outcome(missing(c, UNKNOWN), "no birth date")
    if "older_than_years" in c.params:
        return _older_than(c, ctx, birth)
    p = c.params
    rng = Range(
        float(p.get("min_years", -INF)), bool(p.get("min_inclusive", True)),
        float(p.get("max_years", INF)), bool(p.get("max_inclusive", True)),
    )
    shown = rng.describe().removeprefix("in ")
    # The oldest and youngest the patient can be (a year-only birth date spans a year).
    oldest, youngest = completed_years(birth.lo, ctx.as_of), completed_years(birth.hi, ctx.as_of)
    for b in (birth.lo, birth.hi):  # the next birthdays change the answer
        n = completed_years(b, ctx.as_of)
        ctx.watch(add_years(b, max(n, 0) + 1))
    answers = {rng.test(float(oldest)), rng.test(float(youngest))}
    evidence = [ctx.record.key]
    if youngest < 0:
        return Outcome(UNKNOWN, f"birth date {birth} is after the as-of date", evidence)
    if answers == {True}:
        return Outcome(MET, f"age {oldest}: {shown} years", evidence, oldest, "a")
    if answers == {False}:
        return Outcome(NOT_MET, f"age {oldest}: not {shown} years (born {birth})", evidence, oldest, "a")
    return Outcome(UNKNOWN, f"birth date {birth} is too coarse to tell if {shown} years (age {youngest}-{oldest})", evidence)


def _older_than(c: Criterion, ctx: Context, birth) -> Outcome:
    """``older_than_years``: met once the as-of date is after that birthday (the day itself fails)."""
    years = int(c.params["older_than_years"])
    completed = ctx.as_of.year - birth.lo.year - ((ctx.as_of.month, ctx.as_of.day) < (birth.lo.month, birth.lo.day))
    evidence = [ctx.record.key]
    ctx.watch(add_years(birth.hi, years) + ONE_DAY, add_years(birth.lo, years) + ONE_DAY, add_years(birth.lo, max(completed, 0) + 1))
    if ctx.as_of > add_years(birth.hi, years):
        return Outcome(MET, f"age {completed}, over {fmt(years)}", evidence, completed, "a")
    if ctx.as_of <= add_years(birth.lo, years):
        return Outcome(NOT_MET, f"age {max(completed, 0)}: not over {fmt(years)} (born {birth})", evidence, max(completed, 0), "a")
    return Outcome(UNKNOWN, f"birth date {birth} is too coarse to tell if over {fmt(years)}", evidence)


@kind("deceased")
def deceased(c: Criterion, ctx: Context) -> Outcome:
    p = ctx.record.patient
    if p.get("deceasedBoolean") is True:
        return Outcome(MET, "patient is recorded as deceased", [ctx.record.key], True)
    when = parse_date(p.get("deceasedDateTime"))
    ctx.watch(when.lo if when else None)
    if when and when.lo <= ctx.as_of:
        return Outcome(MET, f"patient died on {when}", [ctx.record.key], str(when))
    return Outcome(NOT_MET, "not recorded as deceased", [], False)


@kind("manual")
def manual(c: Criterion, ctx: Context) -> Outcome:
    types = as_list(c.params.get("evidence_types", []))
    evidence = [f"{r['resourceType']}/{r.get('id', '?')}" for r in ctx.record.of_type(*types)]
    note = c.params.get("note", ctx.trial.manual_note)
    if evidence:
        note += f" ({len(evidence)} {'/'.join(types)} on file)"
    return Outcome(MANUAL, note, evidence)
