"""The condition kind: a diagnosis in value sets, optionally active, recent or within a window."""

from __future__ import annotations

from typing import Any

from ...terminology.valuesets import Match
from ...trial import Criterion
from ..context import Context, Outcome
from ..windows import Window
from .base import MET, NOT_MET, UNKNOWN, as_list, kind, missing, titles, window_of


@kind("condition")
def condition(c: Criterion, ctx: Context) -> Outcome:
    valuesets = as_list(c.params["valuesets"])
    active_only = bool(c.params.get("active_only", False))
    max_age = c.params.get("max_age_days")
    window = window_of(c, ctx)  # by onset, else recorded date; undated = unknown
    hits: list[tuple[Any, Match]] = []
    undated: list[Any] = []
    straddling: list[Any] = []
    skipped_inactive = skipped_old = skipped_outside = 0
    recent = Window.before(ctx.as_of, days=int(max_age)) if max_age is not None else None
    for f in ctx.conditions:
        matches = ctx.match(f.concept, valuesets)
        if not matches:
            continue
        if f.day:
            ctx.watch(f.day.lo, recent.leaves_on(f.day.hi) if recent else None, window.leaves_on(f.day.hi) if window else None)
            if f.day.lo > ctx.as_of:
                continue  # recorded after the as-of date
        if active_only and not f.active:
            skipped_inactive += 1
            continue
        if recent is not None and (f.day is None or f.day.hi < recent.start):
            skipped_old += 1
            continue
        if window is not None:
            if f.day is None:
                undated.append(f)
                continue
            if f.day.hi < window.start:
                skipped_outside += 1
                continue
            if f.day.lo < window.start:  # a month or year that straddles the window's start
                straddling.append(f)
                continue
        hits.append((f, matches[0]))
    if hits:
        f, m = hits[0]
        more = f" and {len(hits) - 1} more" if len(hits) > 1 else ""
        how = f", {m.describe()}" if m.by == "text" else ""
        when = f", {f.day}" if window is not None and f.day else ""
        return Outcome(MET, f"{m.concept.display}: {f.label} ({f.status}{how}{when}){more}", [h[0].ref for h in hits], m.concept.display)
    notes = []
    if skipped_inactive:
        notes.append(f"{skipped_inactive} not active")
    if skipped_old:
        notes.append(f"{skipped_old} dated more than {max_age} days ago")
    if skipped_outside and window is not None:
        notes.append(f"{skipped_outside} before {window.describe()}")
    tail = f" ({'; '.join(notes)} ignored)" if notes else ""
    if straddling:
        f = straddling[0]
        return Outcome(UNKNOWN, f"{f.label} dated {f.day}: may fall before or inside {window.describe()}{tail}", [x.ref for x in straddling])
    if undated:
        return Outcome(UNKNOWN, f"{undated[0].label} recorded without a date: cannot tell if in {window.describe()}{tail}", [f.ref for f in undated])
    possible = as_list(c.params.get("possible_valuesets", []))
    if possible:
        vague = [(f, ms[0]) for f in ctx.conditions if not (f.day and f.day.lo > ctx.as_of) for ms in [ctx.match(f.concept, possible)] if ms]
        if vague:
            f, m = vague[0]
            return Outcome(UNKNOWN, f"only '{f.label}' recorded ({m.concept.display}): confirm which form{tail}", [v[0].ref for v in vague], m.concept.display)
    span = f" in {window.describe()}" if window else ""
    return Outcome(missing(c, NOT_MET), f"no {'active ' if active_only else ''}condition in {titles(ctx, valuesets)}{span}{tail}")
