"""Kinds over medications and procedures: treatment history, exposure in a window, current use."""

from __future__ import annotations

from datetime import date, timedelta

from ...normalize.dose import daily_dose_mg
from ...normalize.facts import MedicationUse
from ...terminology.valuesets import Match
from ...trial import Criterion
from ..context import Context, Outcome
from ..windows import ONE_DAY, add_months, first_day
from .base import MET, NOT_MET, UNKNOWN, as_list, fmt, kind, missing, titles, window_of


def _uses(c: Criterion, ctx: Context, valuesets: list[str]) -> list[tuple[MedicationUse, Match]]:
    """Medication records in the value sets, after the systemic-route and status filters."""
    systemic_only = bool(c.params.get("systemic_only", False))
    statuses = set(as_list(c.params["statuses"])) if "statuses" in c.params else None
    out = []
    for u in ctx.medication_uses:
        ms = ctx.match(u.concept, valuesets)
        if not ms or (systemic_only and not ctx.systemic(u)) or (statuses is not None and u.status not in statuses):
            continue
        out.append((u, ms[0]))
    return out


@kind("treatment-history")
def treatment_history(c: Criterion, ctx: Context) -> Outcome:
    classes: dict[str, str] = c.params["classes"]
    min_classes = int(c.params["min_classes"])
    min_months = int(c.params["min_months"])
    systemic_only = bool(c.params.get("systemic_only", True))
    for u in ctx.medication_uses:
        ctx.watch(u.start)
    uses = [u for u in ctx.medication_uses if not (u.start and u.start > ctx.as_of)]
    if not uses:
        return Outcome(missing(c, UNKNOWN), "no medication records")
    found: dict[str, list[MedicationUse]] = {}
    for u in uses:
        if systemic_only and not ctx.systemic(u):
            continue
        for name, vs in classes.items():
            if ctx.match(u.concept, vs):
                found.setdefault(name, []).append(u)
    used = [u for us in found.values() for u in us]
    evidence = sorted({u.ref for u in used})
    names = ", ".join(f"{n} ({found[n][0].label})" for n in found)
    if len(found) < min_classes:
        have = names or "none"
        return Outcome(NOT_MET, f"{len(found)} of the required {min_classes} drug classes: {have}", evidence, len(found))
    cutoff = add_months(ctx.as_of, -min_months)
    starts = [u.start for u in used if u.start]
    earliest = min(starts) if starts else None
    if earliest:
        ctx.watch(first_day(lambda x: add_months(x, -min_months) >= earliest, add_months(earliest, min_months)))
    if earliest and earliest <= cutoff:
        return Outcome(MET, f"{len(found)} drug classes: {names}; first started {earliest} ({min_months}+ months)", evidence, len(found))
    if any(u.start is None for u in used):
        return Outcome(UNKNOWN, f"{len(found)} drug classes ({names}) but start dates are missing", evidence, len(found))
    return Outcome(NOT_MET, f"{len(found)} drug classes ({names}), but the earliest started {earliest}, less than {min_months} months ago", evidence, len(found))


@kind("exposure")
def exposure(c: Criterion, ctx: Context) -> Outcome:
    """A drug or procedure from the value sets on any day of the window (optionally above a dose)."""
    valuesets = as_list(c.params["valuesets"])
    label = c.params.get("label", titles(ctx, valuesets))
    window = window_of(c, ctx)
    dose_rule = c.params.get("dose")
    statuses = set(as_list(c.params["statuses"])) if "statuses" in c.params else None
    hits: list[tuple[MedicationUse | None, str, Match]] = []
    undated: list[str] = []
    for u, m in (_uses(c, ctx, valuesets) if c.params.get("medications", True) else []):
        days = u.days(ctx.as_of)
        if days is not None:
            ctx.watch(days[0], window.leaves_on(days[1]) if window and not (u.ongoing and u.end is None) else None)
        if days is None:
            undated.append(u.ref)
        elif (window.overlaps(*days) if window else days[0] <= ctx.as_of):
            hits.append((u, u.ref, m))
    if c.params.get("procedures", False):
        for p in ctx.procedures:
            ms = ctx.match(p.concept, valuesets)
            if not ms or (statuses is not None and p.status not in statuses):
                continue
            if p.start is not None:
                ctx.watch(p.start, window.leaves_on(p.end or p.start) if window else None)
            if p.start is None:
                undated.append(p.ref)
            elif (window.overlaps(p.start, p.end or p.start) if window else p.start <= ctx.as_of):
                hits.append((None, p.ref, ms[0]))
    span = f" in {window.describe()}" if window else ""
    if dose_rule:
        return _dose_exposure(c, ctx, hits, undated, label, span, dose_rule)
    if hits:
        names = ", ".join(sorted({m.concept.display for _, _, m in hits}))
        return Outcome(MET, f"{names}{span}", [r for _, r, _ in hits], names)
    if undated:
        return Outcome(UNKNOWN, f"{label} recorded without a date", undated)
    return Outcome(missing(c, NOT_MET), f"no {label}{span}")


def _dose_exposure(c: Criterion, ctx: Context, hits: list, undated: list[str], label: str, span: str, rule: dict) -> Outcome:
    above = float(rule["above"])
    trial = ctx.trial
    over, unknown = [], []
    best: float | None = None
    for use, ref, match in hits:
        if use is None:
            continue
        mg, why = daily_dose_mg(use.dosages, use.concept, ctx.units)
        equivalent = trial.dose_equivalents.get(match.concept.key)
        if mg is None:
            unknown.append((ref, f"{use.label}: {why}"))
            continue
        if not equivalent:
            unknown.append((ref, f"{match.concept.display}: no {trial.dose_reference} equivalent defined"))
            continue
        eq = round(mg * trial.dose_reference_mg / equivalent, 2)
        best = eq if best is None or eq > best else best
        if eq > above:
            over.append((ref, f"{use.label} {fmt(mg)} mg/day = {fmt(eq)} mg {trial.dose_reference}-equivalent"))
    unit = f"mg/day {trial.dose_reference}-equivalent"
    if over:
        return Outcome(MET, "; ".join(t for _, t in over) + f"{span} (above {fmt(above)})", [r for r, _ in over], best, unit)
    if unknown or undated:
        reasons = [t for _, t in unknown] + ([f"{len(undated)} undated record(s)"] if undated else [])
        return Outcome(UNKNOWN, "dose unknown: " + "; ".join(reasons), [r for r, _ in unknown] + undated, best, unit if best is not None else None)
    if hits:
        return Outcome(NOT_MET, f"{label}{span} at most {fmt(best or 0)} {unit} (not above {fmt(above)})", [r for _, r, _ in hits], best, unit)
    return Outcome(missing(c, NOT_MET), f"no {label}{span}")


@kind("medication-use")
def medication_use(c: Criterion, ctx: Context) -> Outcome:
    """Current, continuous use for at least a minimum time up to the as-of date.

    Records of the value sets' drugs are laid on a calendar as intervals (an active record
    with no end runs to the as-of date) and merged when they touch or the gap between them is
    at most ``max_gap_days``; the interval that reaches the as-of date (within the gap) must
    have started at least ``min_days`` / ``min_months`` before it.
    """
    valuesets = as_list(c.params["valuesets"])
    label = c.params.get("label", titles(ctx, valuesets))
    gap = timedelta(days=int(c.params.get("max_gap_days", 0)))
    if "min_months" in c.params:
        n = int(c.params["min_months"])
        need, since = f"{n} months", (lambda start: add_months(start, n))
    else:
        n = int(c.params["min_days"])
        need, since = f"{n} days", (lambda start: start + timedelta(days=n))
    spans: list[tuple[date, date, str]] = []
    undated: list[str] = []
    for u, _ in _uses(c, ctx, valuesets):
        days = u.days(ctx.as_of)
        if days is None:
            undated.append(u.ref)
            continue
        ctx.watch(days[0])
        if days[0] <= ctx.as_of:
            spans.append((days[0], min(days[1], ctx.as_of), u.ref))
    spans.sort()
    merged: list[tuple[date, date, list[str]]] = []
    for start, end, ref in spans:
        if merged and start <= merged[-1][1] + gap + ONE_DAY:
            lo, hi, refs = merged[-1]
            merged[-1] = (lo, max(hi, end), refs + [ref])
        else:
            merged.append((start, end, [ref]))
    current = next((m for m in reversed(merged) if m[1] + gap >= ctx.as_of), None)
    if current is not None:
        start, end, refs = current
        reached = since(start)
        ctx.watch(reached, end + gap + ONE_DAY if end < ctx.as_of else None)
        if reached <= ctx.as_of:
            return Outcome(MET, f"{label} continuously since {start} ({need}+ up to {ctx.as_of})", refs, str(start))
        if undated:
            return Outcome(UNKNOWN, f"{label} since {start}, less than {need}; {len(undated)} undated record(s) may reach further back", refs + undated)
        return Outcome(NOT_MET, f"{label} since {start}: less than {need} of continuous use", refs, str(start))
    if undated:
        return Outcome(UNKNOWN, f"{label} recorded without dates: cannot tell if current for {need}", undated)
    if merged:
        lo, hi, refs = merged[-1]
        return Outcome(NOT_MET, f"no current {label}: last use {lo} to {hi}", refs)
    return Outcome(missing(c, NOT_MET), f"no {label} on record")
