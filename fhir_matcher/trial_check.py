"""``fhir-matcher trial check``: what a trial file says, and everything wrong with it.

Prints the criteria in protocol order with their parameters, the value sets with their code
and name counts, and the quantities; lists problems (the file, criterion and field of each)
and names shared by value sets that are read as rivals. Overlaps between value sets of
different criteria are listed as notes: a concept can rightly be in two sets (dilated
cardiomyopathy due to lupus is both lupus and heart disease).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .fhirjson import as_dict, as_list
from .trial import Criterion, Trial, TrialError, TrialProblems, _valueset_ids, load_trial


@dataclass
class CheckReport:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _params(c: Criterion) -> str:
    parts = []
    for k, v in c.params.items():
        parts.append(f"{k}={v!r}" if not isinstance(v, (int, float)) else f"{k}={v}")
    return ", ".join(parts)


def _describe(c: Criterion, depth: int, out: list[str]) -> None:
    pad = "    " * depth
    if depth == 0:
        proto = f"{c.protocol:<8}" if c.protocol else " " * 8
        flags = " [washout]" if c.washout and "washout" not in c.title.lower() else ""
        out.append(f"  {proto}{c.id:<32} {c.type:<9} {c.kind:<17} {c.title}{flags}")
    else:
        out.append(f"  {pad}- {c.kind}")
    params = _params(c)
    if params:
        out.append(f"  {pad}        {params}")
    for r in c.rules:
        _describe(r, depth + 1, out)


def _codes(vs: dict) -> tuple[int, int]:
    """(codes listed in the expansion tree, names and designations)."""
    codes = names = 0
    stack = list(as_list(as_dict(vs.get("expansion")).get("contains")))
    while stack:
        e = as_dict(stack.pop())
        codes += 1 if e.get("code") else 0
        names += (1 if e.get("display") else 0) + len(as_list(e.get("designation")))
        stack += as_list(e.get("contains"))
    return codes, names


def _overlaps(trial: Trial) -> tuple[list[str], list[str]]:
    """(problems: names shared by rival value sets, notes: names shared across criteria)."""
    lib = trial.valuesets
    rivals: list[tuple[str, str, str]] = [(trial.positive_results, trial.negative_results, "[terminology] positive/negative")]
    for c in trial.criteria:
        for r in c.walk():
            possible = r.params.get("possible_valuesets")
            if possible:
                main = [r.params["valuesets"]] if isinstance(r.params["valuesets"], str) else r.params["valuesets"]
                for a in main:
                    for b in ([possible] if isinstance(possible, str) else possible):
                        rivals.append((a, b, f"criterion {c.id}: valuesets/possible_valuesets"))
    problems = []
    for a, b, where in rivals:
        shared = sorted(n for n, cs in lib._set_names.get(a, {}).items() if cs and lib._set_names.get(b, {}).get(n))
        for n in shared:
            problems.append(f"{where}: name {n!r} is in both {a} and {b}: a text saying it would be read both ways")
    owner: dict[str, set[str]] = {}
    for c in trial.criteria:
        for vs in _valueset_ids(c):
            owner.setdefault(vs, set()).add(c.id)
    names: dict[str, set[str]] = {}
    for vs in owner:
        for n, cs in lib._set_names.get(vs, {}).items():
            if cs:
                names.setdefault(n, set()).add(vs)
    notes = []
    for n, sets in sorted(names.items()):
        crits = set().union(*(owner[s] for s in sets))
        if len(sets) > 1 and len(crits) > 1:
            notes.append(f"name {n!r} is in {', '.join(sorted(sets))} (criteria {', '.join(sorted(crits))})")
    return problems, notes


def check_trial(path: str | None) -> CheckReport:
    report = CheckReport()
    try:
        trial = load_trial(path)
    except TrialProblems as e:
        report.problems += e.problems
        return report
    except TrialError as e:
        report.problems.append(str(e))
        return report
    out = report.lines
    n_inc = sum(c.type == "inclusion" for c in trial.criteria)
    used = sorted(set().union(*(_valueset_ids(c) for c in trial.criteria)) | {trial.positive_results, trial.negative_results, trial.non_systemic_routes})
    out.append(f"Trial {trial.id}: {trial.title}")
    out.append(f"  file: {trial.path}")
    out.append(f"  {len(trial.criteria)} criteria ({n_inc} inclusion, {len(trial.criteria) - n_inc} exclusion), {len(used)} value sets, {len(trial.quantities)} quantities")
    out.append("")
    out.append("Criteria, in protocol order:")
    for c in trial.criteria:
        _describe(c, 0, out)
    out.append("")
    out.append("Value sets:")
    for vs_id in used:
        vs = trial.valuesets.valuesets[vs_id]
        codes, names = _codes(vs)
        out.append(f"  {vs_id:<36} {codes:>4} codes {names:>5} names  {trial.valuesets.titles.get(vs_id, '')}")
    out.append("")
    out.append("Quantities:")
    for q in trial.quantities.values():
        extra = []
        if q.molar_mass:
            extra.append(f"molar mass {q.molar_mass}")
        extra += [f"{a} read as {b}" for a, b in q.equivalent_units]
        extra += [f"from {cv.source}: x{cv.scale:g} {cv.offset:+g}" for cv in q.conversions]
        out.append(f"  {q.name:<24} {q.unit:<18} {q.decimals} decimals  {'; '.join(extra)}")
    problems, notes = _overlaps(trial)
    report.problems += [f"{trial.path}: {p}" for p in problems]
    report.notes += notes
    return report
