"""The registry of kinds, the one entry point that runs a criterion, and shared helpers.

``run`` is how every criterion (and every sub-rule of a logic group) is evaluated: it
applies the parameters every kind shares (``applies_to``, ``met_note``) around the kind's
own function, so that no kind re-implements them.
"""

from __future__ import annotations

from typing import Any, Callable

from ...trial import Criterion
from ..context import Context, Outcome
from ..ranges import fmt_number
from ..windows import Window

MET, NOT_MET, UNKNOWN, MANUAL = "met", "not-met", "unknown", "manual"

Kind = Callable[[Criterion, Context], Outcome]
KIND_FUNCTIONS: dict[str, Kind] = {}


def kind(name: str) -> Callable[[Kind], Kind]:
    def register(fn: Kind) -> Kind:
        KIND_FUNCTIONS[name] = fn
        return fn

    return register


def run(c: Criterion, ctx: Context) -> Outcome:
    """Evaluate one criterion or rule with the parameters every kind shares."""
    applies = c.params.get("applies_to")
    if applies:
        sexes = [applies["sex"]] if isinstance(applies["sex"], str) else list(applies["sex"])
        sex = ctx.gender
        if sex and sex != "unknown" and sex not in sexes:  # FHIR's "unknown" is no recorded sex
            return Outcome(c.params.get("otherwise", NOT_MET), f"applies to {' or '.join(sexes)} patients only; this patient is {sex}")
    outcome = KIND_FUNCTIONS[c.kind](c, ctx)
    note = c.params.get("met_note")
    if note and outcome.result == MET:
        outcome.reason = f"{outcome.reason}; {note}"
    return outcome


def fmt(x: float) -> str:
    return fmt_number(x)


def titles(ctx: Context, ids: list[str]) -> str:
    return ", ".join(ctx.trial.valuesets.titles.get(i, i) for i in ids)


def as_list(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def window_of(c: Criterion, ctx: Context) -> Window | None:
    p = c.params
    if "window_days" in p:
        return Window.before(ctx.as_of, days=int(p["window_days"]))
    if "window_months" in p:
        return Window.before(ctx.as_of, months=int(p["window_months"]))
    return None


def missing(c: Criterion, default: str) -> str:
    return c.params.get("missing", default)
