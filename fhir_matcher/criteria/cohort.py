"""Which patients can possibly be eligible: the cheap first pass sources use to narrow a screen.

A patient is outside the cohort when an inclusion criterion of kind ``condition`` (missing
data means not met) cannot be met because none of their Conditions is in its value sets.
Screening only the cohort gives the same candidates as screening everyone: every patient
left out would be ineligible on that criterion.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..plan import ReadPlan
from ..trial import INCLUSION, Trial
from .kinds import NOT_MET, resource_types


def cohort_valuesets(trial: Trial) -> list[list[str]]:
    """One list of value sets per gating criterion; a patient must match every list."""
    gates = []
    for c in trial.criteria:
        if (
            c.type == INCLUSION
            and c.kind == "condition"
            and c.params.get("missing", NOT_MET) == NOT_MET
            and not c.params.get("active_only")
            and c.params.get("otherwise", NOT_MET) == NOT_MET  # a rule that passes others can't gate
        ):
            vs = c.params["valuesets"]
            vague = c.params.get("possible_valuesets", [])
            gates.append(([vs] if isinstance(vs, str) else list(vs)) + ([vague] if isinstance(vague, str) else list(vague)))
    return gates


def in_cohort(trial: Trial, concepts: Iterable[Any], gates: list[list[str]]) -> bool:
    """True when the Condition codes seen for a patient open every gate."""
    concepts = list(concepts)
    return all(any(trial.valuesets.match(cc, vs) for cc in concepts) for vs in gates)


def needed_types(trial: Trial) -> set[str]:
    types: set[str] = set()
    for c in trial.criteria:
        types |= resource_types(c)
    return types


def observation_days(trial: Trial) -> int | None:
    """The longest look-back of the criteria reading Observations, or None if one has none."""
    windows = []
    for c in trial.criteria:
        for rule in c.walk():
            if rule.kind in ("lab", "lab-uln", "test-result"):
                if "window_days" in rule.params:
                    windows.append(int(rule.params["window_days"]))
                elif "window_months" in rule.params:
                    windows.append(31 * int(rule.params["window_months"]))
                else:
                    return None
    return max(windows) if windows else None


def read_plan(trials: Trial | Sequence[Trial]) -> ReadPlan:
    """What the sources read for one trial or a portfolio: the union of the types, a gate
    that admits a patient any trial's gate admits, the longest Observation look-back."""
    trials = [trials] if isinstance(trials, Trial) else list(trials)
    types = frozenset().union(*(needed_types(t) for t in trials))
    gates = [(t, cohort_valuesets(t)) for t in trials]
    gate = None
    if gates and all(g for _, g in gates):
        gate = lambda codes: any(in_cohort(t, codes, g) for t, g in gates)  # noqa: E731
    days = [observation_days(t) for t in trials]
    return ReadPlan(types, gate, None if any(d is None for d in days) else max(days, default=None))
