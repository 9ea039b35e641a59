"""Kinds over results: a value against a range, a multiple of the upper limit, a qualitative test."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

from ...normalize.facts import Measurement
from ...normalize.units import QuantitySpec, UnitError
from ...trial import Criterion
from ..context import Context, Outcome
from ..ranges import Range, describe_all, ranges_for, test_all
from ..windows import Window
from .base import MET, NOT_MET, UNKNOWN, as_list, fmt, kind, missing, titles, window_of


def _in_window(m: Measurement, window: Window | None, as_of: date) -> bool:
    if m.day is None:
        return False
    if window is None:
        return m.day.lo <= as_of
    return window.start <= m.day.lo and m.day.hi <= window.end


def latest(ctx: Context, valuesets: list[str], window: Window | None) -> tuple[list[Measurement], Measurement | None]:
    """(results in the window newest first, the newest result of any date up to as-of)."""
    found = list(ctx.measurements_in(valuesets))
    found.sort(key=lambda m: (m.day.hi if m.day else date.min, m.sort_key), reverse=True)
    for m in found:
        if m.day:
            ctx.watch(m.day.lo, m.day.hi, window.leaves_on(m.day.lo) if window else None)
    newest_any = next((m for m in found if m.day and m.day.lo <= ctx.as_of), None)
    return [m for m in found if _in_window(m, window, ctx.as_of)], newest_any


def quantity(ctx: Context, valuesets: list[str], window: Window, spec: QuantitySpec, label: str) -> tuple[Measurement | None, float | None, str | None, str]:
    """The newest usable numeric result in the window, converted and rounded.

    Returns (measurement, value, comparator, reason). A newer result of another kind of unit
    (a percentage where a count is wanted) is a different test and is passed over; a newer
    result with no or an unknown unit makes the answer unknown (never a guess).
    """
    results, newest = latest(ctx, valuesets, window)
    passed_over: tuple[Measurement, UnitError] | None = None
    for m in results:
        if m.number is None:
            return m, None, None, f"latest {label} ({m.day}): {m.malformed or 'the result is not a number'}"
        try:
            conv = ctx.units.converter(m.unit_code, m.unit_text, spec)
        except UnitError as e:
            if e.kind == "incompatible":
                passed_over = passed_over or (m, e)
                continue
            return m, None, None, f"latest {label} ({m.day}): {e}"
        decimals = spec.decimals if conv.decimals is None else conv.decimals
        value = conv(m.number)
        if not math.isfinite(value):
            return m, None, None, f"latest {label} ({m.day}): the value is out of range"
        return m, round(value, decimals), m.comparator, ""
    if passed_over:
        m, e = passed_over
        return m, None, None, f"no usable {label} result in {window.describe()}: the one of {m.day} has {e}"
    undated = next((m for m in ctx.measurements_in(valuesets) if m.date_problem), None)
    if undated is not None:  # a result whose date cannot be read may be in the window
        return undated, None, None, f"{label}: {undated.date_problem}, cannot tell if it is in {window.describe()}"
    if newest is not None:
        return None, None, None, f"no {label} result in {window.describe()} (latest {newest.day})"
    return None, None, None, f"no {label} result in {window.describe()}"


@kind("lab")
def lab(c: Criterion, ctx: Context) -> Outcome:
    spec = ctx.trial.quantities[c.params["quantity"]]
    valuesets = as_list(c.params["valueset"])
    label = c.params.get("label", titles(ctx, valuesets))
    window = window_of(c, ctx)
    assert window is not None  # the trial check requires one
    m, value, comparator, why = quantity(ctx, valuesets, window, spec, label)
    if value is None or m is None:
        return Outcome(missing(c, UNKNOWN), why, [m.ref] if m else [])
    ranges, sex_note = ranges_for(c.params, ctx.gender)
    answer = test_all(ranges, value, comparator)
    shown = f"{comparator or ''}{fmt(value)} {spec.unit}"
    rule = f"{describe_all(ranges)}{sex_note}"
    result, verdict = {True: (MET, ""), False: (NOT_MET, "not "), None: (UNKNOWN, "cannot tell if ")}[answer]
    return Outcome(result, f"{label} {shown} on {m.day}: {verdict}{rule}", [m.ref], value, spec.unit)


@kind("lab-uln")
def lab_uln(c: Criterion, ctx: Context) -> Outcome:
    spec = ctx.trial.quantities[c.params["quantity"]]
    multiple = float(c.params["multiple"])
    default_uln = float(c.params["default_uln"])
    window = window_of(c, ctx)
    assert window is not None
    parts, evidence, results = [], [], []
    worst: float | None = None
    for vs in as_list(c.params["tests"]):
        label = ctx.trial.valuesets.titles.get(vs, vs)
        m, value, comparator, why = quantity(ctx, [vs], window, spec, label)
        if value is None or m is None:
            results.append(None)
            parts.append(why)
            evidence += [m.ref] if m else []
            continue
        if m.ref_high_problem:  # the lab's own ULN is there but unusable: no guess
            results.append(None)
            parts.append(f"{label} on {m.day}: {m.ref_high_problem}")
            evidence.append(m.ref)
            continue
        uln, uln_note = default_uln, " (default ULN)"
        if m.ref_high is not None:
            try:
                high = ctx.units.converter(m.ref_high[1] or m.unit_code, m.ref_high[2] or m.unit_text, spec)
                converted = round(high(m.ref_high[0]), spec.decimals)
                if converted > 0:
                    uln, uln_note = converted, ""
            except UnitError:
                pass
        ratio = value / uln
        answer = Range.from_op(">", multiple * uln).test(value, comparator)
        results.append(answer)
        evidence.append(m.ref)
        worst = ratio if worst is None or ratio > worst else worst
        parts.append(f"{label} {comparator or ''}{fmt(value)} {spec.unit} = {ratio:.2f} x ULN {fmt(uln)}{uln_note} on {m.day}")
    if True in results:
        result = MET
    elif all(r is False for r in results):
        result = NOT_MET
    else:
        result = missing(c, UNKNOWN) if all(r is None for r in results) else UNKNOWN
    rule = f"(exclusion above {fmt(multiple)} x ULN)"
    return Outcome(result, "; ".join(parts) + f" {rule}", evidence, round(worst, 2) if worst is not None else None, "x ULN" if worst is not None else None)


@kind("test-result")
def test_result(c: Criterion, ctx: Context) -> Outcome:
    """A qualitative result: positive, detected, reactive (met) or negative (not met)."""
    valuesets = as_list(c.params["valueset"])
    label = c.params.get("label", titles(ctx, valuesets))
    window = window_of(c, ctx)
    results, _ = latest(ctx, valuesets, window)
    mode = c.params.get("mode", "latest")
    span = f" in {window.describe()}" if window else ""
    if not results:
        undated = [m for m in ctx.measurements_in(valuesets) if m.date_problem and _positivity(c, ctx, m) is not False]
        if undated:  # positive or unreadable, and its date cannot be read: it may count
            return Outcome(UNKNOWN, f"{label}: {undated[0].date_problem}, cannot tell if it counts", [m.ref for m in undated])
        return Outcome(missing(c, NOT_MET), f"no {label} result{span}")
    readings = [(m, _positivity(c, ctx, m)) for m in results]
    if mode == "any":
        positives = [m for m, r in readings if r is True]
        if positives:
            return Outcome(MET, f"{label} positive on {positives[0].day}", [m.ref for m in positives], "positive")
        unclear = [m for m, r in readings if r is None]
        if unclear:
            return Outcome(UNKNOWN, f"{label} on {unclear[0].day}: result not readable as positive or negative", [m.ref for m in unclear])
        return Outcome(NOT_MET, f"{len(readings)} {label} result(s){span}, all negative", [m.ref for m, _ in readings], "negative")
    m, r = readings[0]
    if r is True:
        return Outcome(MET, f"latest {label} ({m.day}) positive", [m.ref], "positive")
    if r is False:
        return Outcome(NOT_MET, f"latest {label} ({m.day}) negative", [m.ref], "negative")
    return Outcome(UNKNOWN, f"latest {label} ({m.day}) not readable as positive or negative", [m.ref])


def _positivity(c: Criterion, ctx: Context, m: Measurement) -> bool | None:
    pos_vs, neg_vs = ctx.trial.positive_results, ctx.trial.negative_results

    def read(concept: Any) -> bool | None:
        found = {x.concept.valueset for x in ctx.match(concept, [pos_vs, neg_vs])}
        if found == {pos_vs}:
            return True
        if found == {neg_vs}:
            return False
        return None

    if m.concept is not None:
        return read(m.concept)
    if m.text is not None:
        return read({"text": m.text})
    if m.boolean is not None:
        return m.boolean
    if m.number is not None:
        if m.comparator in ("<", "<="):
            return False  # below the limit of detection
        if c.params.get("quantitative") == "detectable":
            return m.number > 0
    for interp in m.interpretation:
        r = read(interp)
        if r is not None:
            return r
    return None
