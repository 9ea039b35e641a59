"""The parameters each kind of criterion takes, and the checks a trial file must pass.

One table says, per kind, which parameters exist, which are required and what each must
hold. ``check_criterion`` walks a raw ``[[criteria]]`` table against it and returns every
problem (not just the first), each naming the criterion and the field, so that
``fhir-matcher trial check`` can list them all and ``load_trial`` can refuse a bad file
with messages a site can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

RESULTS = ("met", "not-met", "unknown", "manual")
SEXES = ("male", "female", "other", "unknown")
OPS = (">", ">=", "<", "<=")
LOGIC_KINDS = ("any-of", "all-of", "at-least", "at-most", "not")


@dataclass(frozen=True)
class Problem:
    criterion: str  # criterion id (or a path such as "exc-cardiac rule 2"), "" for the file
    field: str
    message: str

    def render(self, path: str) -> str:
        where = f"criterion {self.criterion}: " if self.criterion else ""
        field = f"{self.field}: " if self.field else ""
        return f"{path}: {where}{field}{self.message}"


Check = Callable[[Any], str | None]  # None when the value is right, else what is wrong


def _number(v: Any) -> str | None:
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) else f"must be a number, not {v!r}"


def _non_negative(v: Any) -> str | None:
    return _number(v) or (None if v >= 0 else f"must not be negative ({v!r})")


def _whole(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else f"must be a whole number >= 0, not {v!r}"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, not {v!r}"


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else f"must be a non-empty string, not {v!r}"


def _one_of(*allowed: str) -> Check:
    return lambda v: None if v in allowed else f"must be one of {', '.join(repr(a) for a in allowed)}, not {v!r}"


def _strings(v: Any) -> str | None:
    if isinstance(v, str) and v.strip():
        return None
    if isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v):
        return None
    return f"must be a string or a non-empty list of strings, not {v!r}"


def _threshold(v: Any) -> str | None:
    if isinstance(v, dict):
        if not v:
            return "a per-sex threshold needs at least one sex"
        for sex, x in v.items():
            if sex not in SEXES:
                return f"unknown sex {sex!r} (use {', '.join(SEXES)})"
            if _number(x):
                return f"{sex}: {_number(x)}"
        return None
    return _number(v)


def _range(v: Any) -> str | None:
    if not isinstance(v, dict):
        return f"must be a table such as {{ min = 7.0, max = 10.5 }}, not {v!r}"
    unknown = set(v) - {"min", "max", "min_inclusive", "max_inclusive"}
    if unknown:
        return f"unknown key(s) {', '.join(sorted(unknown))} (known: min, max, min_inclusive, max_inclusive)"
    if "min" not in v and "max" not in v:
        return "needs min, max or both"
    for key in ("min", "max"):
        if key in v and (why := _threshold(v[key])):
            return f"{key} {why}"
    for key in ("min_inclusive", "max_inclusive"):
        if key in v and (why := _bool(v[key])):
            return f"{key} {why}"
    lo, hi = v.get("min"), v.get("max")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > hi:
        return f"min {lo} is above max {hi}"
    return None


def _classes(v: Any) -> str | None:
    if not isinstance(v, dict) or not v:
        return "must be a table of class name = value set id"
    bad = [k for k, x in v.items() if not (isinstance(x, str) and x)]
    return f"class(es) {', '.join(bad)} must name a value set" if bad else None


def _dose(v: Any) -> str | None:
    if not isinstance(v, dict) or set(v) != {"above"}:
        return "must be { above = N } (mg/day of the reference drug)"
    return _number(v["above"])


def _applies_to(v: Any) -> str | None:
    if not isinstance(v, dict) or set(v) - {"sex"} or "sex" not in v:
        return "must be { sex = \"female\" } or { sex = [\"female\", \"other\"] }"
    sexes = [v["sex"]] if isinstance(v["sex"], str) else v["sex"]
    if not isinstance(sexes, list) or not sexes:
        return "sex must be a string or a list"
    bad = [s for s in sexes if s not in SEXES]
    return f"unknown sex(es) {', '.join(map(repr, bad))} (use {', '.join(SEXES)})" if bad else None


COMMON: dict[str, Check] = {
    "id": _text,
    "type": _one_of("inclusion", "exclusion"),
    "kind": _text,
    "title": _text,
    "protocol": lambda v: None if isinstance(v, (str, int)) else f"must be a string, not {v!r}",
    "washout": _bool,
    "missing": _one_of("met", "not-met", "unknown"),
    "label": _text,
    "met_note": _text,
    "applies_to": _applies_to,
    "otherwise": _one_of("met", "not-met", "unknown"),
}
WINDOW: dict[str, Check] = {"window_days": _whole, "window_months": _whole}

# kind -> (parameters, required groups: each tuple needs at least one of its names)
KINDS: dict[str, tuple[dict[str, Check], list[tuple[str, ...]]]] = {
    "age": (
        {"older_than_years": _non_negative, "min_years": _non_negative, "max_years": _non_negative,
         "min_inclusive": _bool, "max_inclusive": _bool},
        [("older_than_years", "min_years", "max_years")],
    ),
    "condition": (
        {"valuesets": _strings, "active_only": _bool, "max_age_days": _whole, "possible_valuesets": _strings, **WINDOW},
        [("valuesets",)],
    ),
    "treatment-history": (
        {"classes": _classes, "min_classes": _whole, "min_months": _whole, "systemic_only": _bool},
        [("classes",), ("min_classes",), ("min_months",)],
    ),
    "manual": ({"note": _text, "evidence_types": _strings}, []),
    "lab": (
        {"valueset": _strings, "quantity": _text, "op": _one_of(*OPS), "threshold": _threshold, "range": _range, **WINDOW},
        [("valueset",), ("quantity",), ("op", "range"), ("window_days", "window_months")],
    ),
    "lab-uln": (
        {"tests": _strings, "quantity": _text, "multiple": _number, "default_uln": _number, **WINDOW},
        [("tests",), ("quantity",), ("multiple",), ("default_uln",), ("window_days", "window_months")],
    ),
    "test-result": (
        {"valueset": _strings, "mode": _one_of("latest", "any"), "quantitative": _one_of("detectable"), **WINDOW},
        [("valueset",)],
    ),
    "exposure": (
        {"valuesets": _strings, "procedures": _bool, "medications": _bool, "systemic_only": _bool,
         "dose": _dose, "statuses": _strings, **WINDOW},
        [("valuesets",)],
    ),
    "medication-use": (
        {"valuesets": _strings, "min_days": _whole, "min_months": _whole, "max_gap_days": _whole,
         "systemic_only": _bool, "statuses": _strings},
        [("valuesets",), ("min_days", "min_months")],
    ),
    "deceased": ({}, []),
    **{k: ({"count": _whole} if k in ("at-least", "at-most") else {}, [("count",)] if k in ("at-least", "at-most") else [])
       for k in LOGIC_KINDS},
}
VALUESET_PARAMS = ("valuesets", "valueset", "tests", "possible_valuesets")


def check_criterion(raw: Any, name: str, quantities: set[str], nested: bool = False) -> list[Problem]:
    """Every problem with one ``[[criteria]]`` table (and its rules), none raised."""
    if not isinstance(raw, dict):
        return [Problem(name, "", "must be a table")]
    problems: list[Problem] = []
    kind = raw.get("kind")
    if kind not in KINDS:
        return [Problem(name, "kind", f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")]
    params, required = KINDS[kind]
    for key, value in raw.items():
        if key == "rules":
            continue
        check = params.get(key) or COMMON.get(key)
        if check is None:
            known = sorted(set(params) | set(COMMON) | ({"rules"} if kind in LOGIC_KINDS else set()))
            problems.append(Problem(name, key, f"unknown parameter for kind {kind} (known: {', '.join(known)})"))
        elif why := check(value):
            problems.append(Problem(name, key, why))
    for group in required:
        if not any(k in raw for k in group):
            problems.append(Problem(name, " or ".join(group), f"required for kind {kind}"))
    if kind == "lab":
        if "op" in raw and "threshold" not in raw:
            problems.append(Problem(name, "threshold", "required with op"))
        if "range" in raw and ("op" in raw or "threshold" in raw):
            problems.append(Problem(name, "range", "give either range or op and threshold, not both"))
    if "window_days" in raw and "window_months" in raw:
        problems.append(Problem(name, "window_days", "give window_days or window_months, not both"))
    if "min_days" in raw and "min_months" in raw:
        problems.append(Problem(name, "min_days", "give min_days or min_months, not both"))
    q = raw.get("quantity")
    if isinstance(q, str) and q and q not in quantities:
        problems.append(Problem(name, "quantity", f"{q!r} is not defined in [quantities] (defined: {', '.join(sorted(quantities)) or 'none'})"))
    if not nested and "id" not in raw:
        problems.append(Problem(name, "id", "required"))
    if not nested and "type" not in raw:
        problems.append(Problem(name, "type", "required ('inclusion' or 'exclusion')"))
    rules = raw.get("rules", [])
    if kind in LOGIC_KINDS:
        if not isinstance(rules, list) or not rules:
            problems.append(Problem(name, "rules", f"{kind} needs [[...rules]] sub-tables"))
            rules = []
        elif kind == "not" and len(rules) != 1:
            problems.append(Problem(name, "rules", f"not takes exactly one rule, not {len(rules)}"))
        count = raw.get("count")
        if isinstance(count, int) and kind in ("at-least", "at-most") and count > len(rules):
            problems.append(Problem(name, "count", f"{count} is more than the {len(rules)} rules"))
        for i, rule in enumerate(rules, 1):
            problems += check_criterion(rule, f"{name} rule {i}", quantities, nested=True)
    elif "rules" in raw:
        problems.append(Problem(name, "rules", f"only {', '.join(LOGIC_KINDS)} take rules"))
    return problems


def check_quantity(name: str, raw: Any, parse_unit: Callable[[str], None]) -> list[Problem]:
    """Problems with one ``[quantities.NAME]`` table; ``parse_unit`` raises on a bad unit."""
    where = f"[quantities.{name}]"
    if not isinstance(raw, dict):
        return [Problem("", where, "must be a table")]
    problems: list[Problem] = []
    known = {"unit", "molar_mass", "decimals", "equivalent_units", "conversions"}
    for key in set(raw) - known:
        problems.append(Problem("", f"{where} {key}", f"unknown key (known: {', '.join(sorted(known))})"))

    def unit(field: str, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem("", f"{where} {field}", f"must be a unit string, not {value!r}"))
            return
        try:
            parse_unit(value)
        except Exception as e:  # UnitError, or anything the parser raises
            problems.append(Problem("", f"{where} {field}", f"unit {value!r} does not parse ({e})"))

    if "unit" not in raw:
        problems.append(Problem("", f"{where} unit", "required"))
    else:
        unit("unit", raw["unit"])
    if "molar_mass" in raw:
        unit("molar_mass", raw["molar_mass"])
    if "decimals" in raw and (why := _whole(raw["decimals"])):
        problems.append(Problem("", f"{where} decimals", why))
    eq = raw.get("equivalent_units", {})
    if not isinstance(eq, dict):
        problems.append(Problem("", f"{where} equivalent_units", "must be a table of \"unit\" = \"unit read as\""))
    else:
        for k, v in eq.items():
            unit(f"equivalent_units {k!r}", k)
            unit(f"equivalent_units {k!r}", v)
    convs = raw.get("conversions", [])
    if not isinstance(convs, list):
        problems.append(Problem("", f"{where} conversions", "must be [[quantities.NAME.conversions]] tables"))
        convs = []
    for i, conv in enumerate(convs, 1):
        field = f"{where} conversions {i}"
        if not isinstance(conv, dict):
            problems.append(Problem("", field, "must be a table"))
            continue
        for key in set(conv) - {"from", "scale", "offset", "decimals"}:
            problems.append(Problem("", f"{field} {key}", "unknown key (known: from, scale, offset, decimals)"))
        if "from" not in conv:
            problems.append(Problem("", f"{field} from", "required"))
        else:
            unit("from", conv["from"])
        if "scale" not in conv:
            problems.append(Problem("", f"{field} scale", "required"))
        for key in ("scale", "offset"):
            if key in conv and (why := _number(conv[key])):
                problems.append(Problem("", f"{field} {key}", why))
        if "decimals" in conv and (why := _whole(conv["decimals"])):
            problems.append(Problem("", f"{field} decimals", why))
    return problems
