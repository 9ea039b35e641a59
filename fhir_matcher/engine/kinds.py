"""The kinds of criteria: pure functions of (criterion, context) -> Outcome.

A trial names a kind and its parameters; nothing here knows a particular trial.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Callable

from ..fhirjson import parse_date
from ..normalize.dose import daily_dose_mg
from ..normalize.facts import Measurement, MedicationUse
from ..normalize.units import QuantitySpec, UnitError
from ..terminology.valuesets import Match
from ..trial import Criterion
from .context import Context, Outcome
from .windows import ONE_DAY, Window, add_months, add_years, first_day

MET, NOT_MET, UNKNOWN, MANUAL = "met", "not-met", "unknown", "manual"

Kind = Callable[[Criterion, Context], Outcome]
KIND_FUNCTIONS: dict[str, Kind] = {}


def kind(name: str) -> Callable[[Kind], Kind]:
    def register(fn: Kind) -> Kind:
        KIND_FUNCTIONS[name] = fn
        return fn

    return register


def _fmt(x: float) -> str:
    return f"{x:g}"


def _titles(ctx: Context, ids: list[str]) -> str:
    return ", ".join(ctx.trial.valuesets.titles.get(i, i) for i in ids)


def _as_list(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _window(c: Criterion, ctx: Context) -> Window | None:
    p = c.params
    if "window_days" in p:
        return Window.before(ctx.as_of, days=int(p["window_days"]))
    if "window_months" in p:
        return Window.before(ctx.as_of, months=int(p["window_months"]))
    return None


def _missing(c: Criterion, default: str) -> str:
    return c.params.get("missing", default)


# ---------------------------------------------------------------- demographics


@kind("age")
def age(c: Criterion, ctx: Context) -> Outcome:
    years = int(c.params["older_than_years"])
    birth = parse_date(ctx.record.patient.get("birthDate"))
    if birth is None:
        return Outcome(_missing(c, UNKNOWN), "no birth date")
    completed = ctx.as_of.year - birth.lo.year - ((ctx.as_of.month, ctx.as_of.day) < (birth.lo.month, birth.lo.day))
    evidence = [ctx.record.key]
    ctx.watch(add_years(birth.hi, years) + ONE_DAY, add_years(birth.lo, years) + ONE_DAY, add_years(birth.lo, max(completed, 0) + 1))
    if ctx.as_of > add_years(birth.hi, years):
        return Outcome(MET, f"age {completed}, over {years}", evidence, completed, "a")
    if ctx.as_of <= add_years(birth.lo, years):
        return Outcome(NOT_MET, f"age {max(completed, 0)}: not over {years} (born {birth})", evidence, max(completed, 0), "a")
    return Outcome(UNKNOWN, f"birth date {birth} is too coarse to tell if over {years}", evidence)


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
    types = _as_list(c.params.get("evidence_types", []))
    evidence = [f"{r['resourceType']}/{r.get('id', '?')}" for r in ctx.record.of_type(*types)]
    note = c.params.get("note", "to be confirmed by the investigator")
    if evidence:
        note += f" ({len(evidence)} {'/'.join(types)} on file)"
    return Outcome(MANUAL, note, evidence)


# ---------------------------------------------------------------- conditions


@kind("condition")
def condition(c: Criterion, ctx: Context) -> Outcome:
    valuesets = _as_list(c.params["valuesets"])
    active_only = bool(c.params.get("active_only", False))
    max_age = c.params.get("max_age_days")
    hits: list[tuple[Any, Match]] = []
    skipped_inactive = skipped_old = 0
    recent = Window.before(ctx.as_of, days=int(max_age)) if max_age is not None else None
    for f in ctx.conditions:
        matches = ctx.match(f.concept, valuesets)
        if not matches:
            continue
        if f.day:
            ctx.watch(f.day.lo, recent.leaves_on(f.day.hi) if recent else None)
            if f.day.lo > ctx.as_of:
                continue  # recorded after the as-of date
        if active_only and not f.active:
            skipped_inactive += 1
            continue
        if recent is not None and (f.day is None or f.day.hi < recent.start):
            skipped_old += 1
            continue
        hits.append((f, matches[0]))
    if hits:
        f, m = hits[0]
        more = f" and {len(hits) - 1} more" if len(hits) > 1 else ""
        how = f", {m.describe()}" if m.by == "text" else ""
        return Outcome(MET, f"{m.concept.display}: {f.label} ({f.status}{how}){more}", [h[0].ref for h in hits], m.concept.display)
    notes = []
    if skipped_inactive:
        notes.append(f"{skipped_inactive} not active")
    if skipped_old:
        notes.append(f"{skipped_old} dated more than {max_age} days ago")
    tail = f" ({'; '.join(notes)} ignored)" if notes else ""
    possible = _as_list(c.params.get("possible_valuesets", []))
    if possible:
        vague = [(f, ms[0]) for f in ctx.conditions if not (f.day and f.day.lo > ctx.as_of) for ms in [ctx.match(f.concept, possible)] if ms]
        if vague:
            f, m = vague[0]
            return Outcome(UNKNOWN, f"only '{f.label}' recorded ({m.concept.display}): confirm which form{tail}", [v[0].ref for v in vague], m.concept.display)
    return Outcome(_missing(c, NOT_MET), f"no {'active ' if active_only else ''}condition in {_titles(ctx, valuesets)}{tail}")


# ---------------------------------------------------------------- labs


def _in_window(m: Measurement, window: Window | None, as_of: date) -> bool:
    if m.day is None:
        return False
    if window is None:
        return m.day.lo <= as_of
    return window.start <= m.day.lo and m.day.hi <= window.end


def _latest(ctx: Context, valuesets: list[str], window: Window | None) -> tuple[list[Measurement], Measurement | None]:
    """(results in the window newest first, the newest result of any date up to as-of)."""
    found = list(ctx.measurements_in(valuesets))
    found.sort(key=lambda m: (m.day.hi if m.day else date.min, m.sort_key), reverse=True)
    for m in found:
        if m.day:
            ctx.watch(m.day.lo, m.day.hi, window.leaves_on(m.day.lo) if window else None)
    newest_any = next((m for m in found if m.day and m.day.lo <= ctx.as_of), None)
    return [m for m in found if _in_window(m, window, ctx.as_of)], newest_any


def _quantity(ctx: Context, valuesets: list[str], window: Window, spec: QuantitySpec, label: str) -> tuple[Measurement | None, float | None, str | None, str]:
    """The newest usable numeric result in the window, converted and rounded.

    Returns (measurement, value, comparator, reason). A newer result of another dimension
    (a percentage where a count is wanted) is a different test and is passed over; a newer
    result with no or an unknown unit makes the answer unknown (never a guess).
    """
    results, newest = _latest(ctx, valuesets, window)
    passed_over: tuple[Measurement, UnitError] | None = None
    for m in results:
        if m.number is None:
            return m, None, None, f"latest {label} ({m.day}): {m.malformed or 'the result is not a number'}"
        try:
            value = ctx.units.convert(m.number, m.unit_code, m.unit_text, spec)
        except UnitError as e:
            if e.kind == "incompatible":
                passed_over = passed_over or (m, e)
                continue
            return m, None, None, f"latest {label} ({m.day}): {e}"
        return m, round(value, spec.decimals), m.comparator, ""
    if passed_over:
        m, e = passed_over
        return m, None, None, f"no usable {label} result in {window.describe()}: the one of {m.day} has {e}"
    undated = next((m for m in ctx.measurements_in(valuesets) if m.date_problem), None)
    if undated is not None:  # a result whose date cannot be read may be in the window
        return undated, None, None, f"{label}: {undated.date_problem}, cannot tell if it is in {window.describe()}"
    if newest is not None:
        return None, None, None, f"no {label} result in {window.describe()} (latest {newest.day})"
    return None, None, None, f"no {label} result in {window.describe()}"


def _compare(value: float, comparator: str | None, op: str, threshold: float) -> bool | None:
    """Does the true value satisfy ``op threshold``? None when the comparator leaves it open."""
    test = {">": lambda v: v > threshold, ">=": lambda v: v >= threshold, "<": lambda v: v < threshold, "<=": lambda v: v <= threshold}[op]
    if not comparator:
        return test(value)
    # The true value lies in an open or half-open ray from `value`; probe both ends.
    eps = max(abs(value), 1.0) * 1e-9
    if comparator in ("<", "<="):
        inner = value if comparator == "<=" else value - eps
        lo_ok, hi_ok = test(-1e300), test(inner)
    else:
        inner = value if comparator == ">=" else value + eps
        lo_ok, hi_ok = test(inner), test(1e300)
    if lo_ok and hi_ok:
        return True
    if not lo_ok and not hi_ok:
        return False
    return None


def _thresholds(c: Criterion, ctx: Context) -> tuple[list[float], str]:
    t = c.params["threshold"]
    if isinstance(t, dict):
        g = ctx.gender
        if g in t:
            return [float(t[g])], f" ({g})"
        return sorted(float(v) for v in t.values()), " (sex unknown)"
    return [float(t)], ""


@kind("lab")
def lab(c: Criterion, ctx: Context) -> Outcome:
    spec = ctx.trial.quantities[c.params["quantity"]]
    valuesets = _as_list(c.params["valueset"])
    label = c.params.get("label", _titles(ctx, valuesets))
    window = _window(c, ctx)
    assert window is not None
    m, value, comparator, why = _quantity(ctx, valuesets, window, spec, label)
    if value is None:
        return Outcome(_missing(c, UNKNOWN), why, [m.ref] if m else [])
    op = c.params["op"]
    thresholds, sex_note = _thresholds(c, ctx)
    answers = {_compare(value, comparator, op, t) for t in thresholds}
    shown = f"{comparator or ''}{_fmt(value)} {spec.unit}"
    rule = f"{op} {'/'.join(_fmt(t) for t in thresholds)}{sex_note}"
    if answers == {True}:
        result, verdict = MET, ""
    elif answers == {False}:
        result, verdict = NOT_MET, "not "
    else:
        result, verdict = UNKNOWN, "cannot tell if "
    return Outcome(result, f"{label} {shown} on {m.day}: {verdict}{rule}", [m.ref], value, spec.unit)


@kind("lab-uln")
def lab_uln(c: Criterion, ctx: Context) -> Outcome:
    spec = ctx.trial.quantities[c.params["quantity"]]
    multiple = float(c.params["multiple"])
    default_uln = float(c.params["default_uln"])
    window = _window(c, ctx)
    assert window is not None
    parts, evidence, results = [], [], []
    worst: float | None = None
    for vs in _as_list(c.params["tests"]):
        label = ctx.trial.valuesets.titles.get(vs, vs)
        m, value, comparator, why = _quantity(ctx, [vs], window, spec, label)
        if value is None:
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
                converted = round(ctx.units.convert(m.ref_high[0], m.ref_high[1] or m.unit_code, m.ref_high[2] or m.unit_text, spec), spec.decimals)
                if converted > 0:
                    uln, uln_note = converted, ""
            except UnitError:
                pass
        ratio = value / uln if uln else None
        answer = _compare(value, comparator, ">", multiple * uln)
        results.append(answer)
        evidence.append(m.ref)
        worst = ratio if ratio is not None and (worst is None or ratio > worst) else worst
        parts.append(f"{label} {comparator or ''}{_fmt(value)} {spec.unit} = {ratio:.2f} x ULN {_fmt(uln)}{uln_note} on {m.day}")
    if True in results:
        result = MET
    elif all(r is False for r in results):
        result = NOT_MET
    else:
        result = _missing(c, UNKNOWN) if all(r is None for r in results) else UNKNOWN
    rule = f"(exclusion above {_fmt(multiple)} x ULN)"
    return Outcome(result, "; ".join(parts) + f" {rule}", evidence, round(worst, 2) if worst is not None else None, "x ULN" if worst is not None else None)


@kind("test-result")
def test_result(c: Criterion, ctx: Context) -> Outcome:
    """A qualitative result: positive, detected, reactive (met) or negative (not met)."""
    valuesets = _as_list(c.params["valueset"])
    label = c.params.get("label", _titles(ctx, valuesets))
    window = _window(c, ctx)
    results, _ = _latest(ctx, valuesets, window)
    mode = c.params.get("mode", "latest")
    span = f" in {window.describe()}" if window else ""
    if not results:
        undated = [m for m in ctx.measurements_in(valuesets) if m.date_problem and _positivity(c, ctx, m) is not False]
        if undated:  # positive or unreadable, and its date cannot be read: it may count
            return Outcome(UNKNOWN, f"{label}: {undated[0].date_problem}, cannot tell if it counts", [m.ref for m in undated])
        return Outcome(_missing(c, NOT_MET), f"no {label} result{span}")
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


# ---------------------------------------------------------------- medications and procedures


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
        return Outcome(_missing(c, UNKNOWN), "no medication records")
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
    manual_note = "; treatment failure to be confirmed by the investigator"
    if earliest and earliest <= cutoff:
        return Outcome(MET, f"{len(found)} drug classes: {names}; first started {earliest} ({min_months}+ months){manual_note}", evidence, len(found))
    if any(u.start is None for u in used):
        return Outcome(UNKNOWN, f"{len(found)} drug classes ({names}) but start dates are missing", evidence, len(found))
    return Outcome(NOT_MET, f"{len(found)} drug classes ({names}), but the earliest started {earliest}, less than {min_months} months ago", evidence, len(found))


@kind("exposure")
def exposure(c: Criterion, ctx: Context) -> Outcome:
    """A drug or procedure from the value sets on any day of the window (optionally above a dose)."""
    valuesets = _as_list(c.params["valuesets"])
    label = c.params.get("label", _titles(ctx, valuesets))
    window = _window(c, ctx)
    systemic_only = bool(c.params.get("systemic_only", False))
    dose_rule = c.params.get("dose")
    hits: list[tuple[MedicationUse | None, str, Match]] = []
    undated: list[str] = []
    for u in ctx.medication_uses:
        ms = ctx.match(u.concept, valuesets)
        if not ms or (systemic_only and not ctx.systemic(u)):
            continue
        days = u.days(ctx.as_of)
        if days is not None:
            ctx.watch(days[0], window.leaves_on(days[1]) if window and not (u.ongoing and u.end is None) else None)
        if days is None:
            undated.append(u.ref)
        elif (window.overlaps(*days) if window else days[0] <= ctx.as_of):
            hits.append((u, u.ref, ms[0]))
    if c.params.get("procedures", False):
        for p in ctx.procedures:
            ms = ctx.match(p.concept, valuesets)
            if not ms:
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
        tail = "; wash out before cell collection" if c.washout else ""
        return Outcome(MET, f"{names}{span}{tail}", [r for _, r, _ in hits], names)
    if undated:
        return Outcome(UNKNOWN, f"{label} recorded without a date", undated)
    return Outcome(_missing(c, NOT_MET), f"no {label}{span}")


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
        if equivalent is None:
            unknown.append((ref, f"{match.concept.display}: no {trial.dose_reference} equivalent defined"))
            continue
        eq = round(mg * trial.dose_reference_mg / equivalent, 2)
        best = eq if best is None or eq > best else best
        if eq > above:
            over.append((ref, f"{use.label} {_fmt(mg)} mg/day = {_fmt(eq)} mg {trial.dose_reference}-equivalent"))
    unit = f"mg/day {trial.dose_reference}-equivalent"
    if over:
        tail = "; wash out before cell collection" if c.washout else ""
        return Outcome(MET, "; ".join(t for _, t in over) + f"{span} (above {_fmt(above)}){tail}", [r for r, _ in over], best, unit)
    if unknown or undated:
        reasons = [t for _, t in unknown] + ([f"{len(undated)} undated record(s)"] if undated else [])
        return Outcome(UNKNOWN, "dose unknown: " + "; ".join(reasons), [r for r, _ in unknown] + undated, best, unit if best is not None else None)
    if hits:
        return Outcome(NOT_MET, f"{label}{span} at most {_fmt(best or 0)} {unit} (not above {_fmt(above)})", [r for _, r, _ in hits], best, unit)
    return Outcome(_missing(c, NOT_MET), f"no {label}{span}")


# ---------------------------------------------------------------- composition


@kind("any-of")
def any_of(c: Criterion, ctx: Context) -> Outcome:
    outcomes = [KIND_FUNCTIONS[r.kind](r, ctx) for r in c.rules]
    met = [o for o in outcomes if o.result == MET]
    if met:
        return Outcome(MET, "; ".join(o.reason for o in met), [e for o in met for e in o.evidence], met[0].value, met[0].unit)
    unknown = [o for o in outcomes if o.result == UNKNOWN]
    evidence = [e for o in outcomes for e in o.evidence]
    if unknown:
        return Outcome(UNKNOWN, "; ".join(o.reason for o in outcomes), evidence)
    return Outcome(NOT_MET, "; ".join(o.reason for o in outcomes), evidence, next((o.value for o in outcomes if o.value is not None), None))


# ---------------------------------------------------------------- what each kind reads

MEDICATION_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")


def resource_types(c: Criterion) -> set[str]:
    """The FHIR resource types a criterion reads (sources fetch only these)."""
    reads = {
        "condition": {"Condition"},
        "lab": {"Observation"},
        "lab-uln": {"Observation"},
        "test-result": {"Observation"},
        "treatment-history": set(MEDICATION_TYPES),
        "exposure": set(MEDICATION_TYPES) | ({"Procedure"} if c.params.get("procedures") else set()),
        "manual": set(_as_list(c.params.get("evidence_types", []))),
    }.get(c.kind, set())
    for rule in c.rules:
        reads |= resource_types(rule)
    return reads
