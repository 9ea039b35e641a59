"""Groups of rules in three-valued (Kleene) logic: all-of, any-of, at-least N, at-most N, not.

A rule's result is met (true), not-met (false) or undetermined (unknown, or manual: a person
must confirm). A group is decided as soon as the determined rules decide it, whatever the
undetermined ones turn out to be; otherwise it is undetermined: manual when every rule left
open is manual, else unknown.
"""

from __future__ import annotations

from ...trial import Criterion
from ..context import Context, Outcome
from .base import MANUAL, MET, NOT_MET, UNKNOWN, kind, run

OPEN = (UNKNOWN, MANUAL)


def _open(outcomes: list[Outcome]) -> str:
    return UNKNOWN if any(o.result == UNKNOWN for o in outcomes if o.result in OPEN) else MANUAL


def _join(outcomes: list[Outcome]) -> str:
    return "; ".join(o.reason for o in outcomes)


def _evidence(outcomes: list[Outcome]) -> list[str]:
    return list(dict.fromkeys(e for o in outcomes for e in o.evidence))


def _count(c: Criterion, ctx: Context) -> tuple[list[Outcome], list[Outcome], list[Outcome], list[Outcome]]:
    outcomes = [run(r, ctx) for r in c.rules]
    met = [o for o in outcomes if o.result == MET]
    not_met = [o for o in outcomes if o.result == NOT_MET]
    undecided = [o for o in outcomes if o.result in OPEN]
    return outcomes, met, not_met, undecided


@kind("any-of")
def any_of(c: Criterion, ctx: Context) -> Outcome:
    outcomes, met, _, undecided = _count(c, ctx)
    if met:
        return Outcome(MET, _join(met), _evidence(met), met[0].value, met[0].unit)
    if undecided:
        return Outcome(_open(undecided), _join(outcomes), _evidence(outcomes))
    return Outcome(NOT_MET, _join(outcomes), _evidence(outcomes), next((o.value for o in outcomes if o.value is not None), None))


@kind("all-of")
def all_of(c: Criterion, ctx: Context) -> Outcome:
    outcomes, met, not_met, undecided = _count(c, ctx)
    if not_met:
        return Outcome(NOT_MET, _join(not_met), _evidence(not_met), not_met[0].value, not_met[0].unit)
    if undecided:
        return Outcome(_open(undecided), _join(outcomes), _evidence(outcomes))
    return Outcome(MET, _join(met), _evidence(met), met[0].value if len(met) == 1 else None, met[0].unit if len(met) == 1 else None)


@kind("at-least")
def at_least(c: Criterion, ctx: Context) -> Outcome:
    n = int(c.params["count"])
    outcomes, met, _, undecided = _count(c, ctx)
    head = f"{len(met)} of {len(outcomes)} met (at least {n} needed)"
    if len(met) >= n:
        return Outcome(MET, f"{head}: {_join(met)}", _evidence(met), len(met))
    if len(met) + len(undecided) < n:
        return Outcome(NOT_MET, f"{head}: {_join(outcomes)}", _evidence(outcomes), len(met))
    return Outcome(_open(undecided), f"{head}, {len(undecided)} undetermined: {_join(outcomes)}", _evidence(outcomes), len(met))


@kind("at-most")
def at_most(c: Criterion, ctx: Context) -> Outcome:
    n = int(c.params["count"])
    outcomes, met, _, undecided = _count(c, ctx)
    head = f"{len(met)} of {len(outcomes)} met (at most {n} allowed)"
    if len(met) > n:
        return Outcome(NOT_MET, f"{head}: {_join(met)}", _evidence(met), len(met))
    if len(met) + len(undecided) <= n:
        return Outcome(MET, f"{head}: {_join(outcomes)}", _evidence(outcomes), len(met))
    return Outcome(_open(undecided), f"{head}, {len(undecided)} undetermined: {_join(outcomes)}", _evidence(outcomes), len(met))


@kind("not")
def not_(c: Criterion, ctx: Context) -> Outcome:
    inner = run(c.rules[0], ctx)
    flipped = {MET: NOT_MET, NOT_MET: MET}.get(inner.result, inner.result)
    return Outcome(flipped, f"not ({inner.reason})", inner.evidence, inner.value, inner.unit)
