"""A trial definition as FHIR R4: its ResearchStudy, an enrollment Group and the value sets.

Every computable criterion becomes one ``Group.characteristic`` (a logic group's rules each
become one, marked with the group's combination), carrying what other FHIR systems need to
read the eligibility: the code or value set, the value or range with its UCUM unit, the
exclude flag, and the look-back window (R4 ``period`` takes absolute dates only, so the
relative window is an extension). Built and validated with the R4B models.
"""

from __future__ import annotations

from typing import Any, Iterator

from fhir.resources.R4B.bundle import Bundle

from .fhirjson import as_dict, as_list, as_str
from .trial import EXCLUSION, Criterion, Trial

SD = "https://fhir-matcher.org/fhir/StructureDefinition"
UCUM = "http://unitsofmeasure.org"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
MAX_CODINGS = 40  # top-level concepts named per characteristic; the value set holds the rest

_WHAT = {
    "age": {"coding": [{"system": LOINC, "code": "30525-0", "display": "Age"}]},
    "condition": {"coding": [{"system": SCT, "code": "439401001", "display": "Diagnosis"}]},
    "treatment-history": {"coding": [{"system": SCT, "code": "410942007", "display": "Drug or medicament"}]},
    "exposure": {"coding": [{"system": SCT, "code": "410942007", "display": "Drug or medicament"}]},
    "medication-use": {"coding": [{"system": SCT, "code": "410942007", "display": "Drug or medicament"}]},
    "deceased": {"coding": [{"system": SCT, "code": "419099009", "display": "Dead"}]},
}
_POSITIVE = {"coding": [{"system": SCT, "code": "10828004", "display": "Positive"}], "text": "positive / detected"}


def _ext(name: str, **value: Any) -> dict[str, Any]:
    return {"url": f"{SD}/{name}", **value}


def _valuesets(c: Criterion) -> list[str]:
    out: list[str] = []
    for key in ("valueset", "valuesets", "tests"):
        v = c.params.get(key)
        out += [v] if isinstance(v, str) else list(v or [])
    if isinstance(c.params.get("classes"), dict):
        out += list(c.params["classes"].values())
    return out


def _concept(trial: Trial, ids: list[str], text: str) -> dict[str, Any]:
    """A CodeableConcept of the value sets' top-level codes (the first MAX_CODINGS)."""
    codings = []
    for vs_id in ids:
        for top in as_list(as_dict(as_dict(trial.valuesets.valuesets.get(vs_id)).get("expansion")).get("contains")):
            top = as_dict(top)
            system, code = as_str(top.get("system")), as_str(top.get("code"))
            if system and code and len(codings) < MAX_CODINGS:
                codings.append({"system": system, "code": code, "display": as_str(top.get("display"))})
    return {"coding": codings or None, "text": text}


def _quantity(trial: Trial, c: Criterion, value: float, comparator: str | None = None) -> dict[str, Any]:
    unit = trial.quantities[c.params["quantity"]].unit
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if comparator:
        q["comparator"] = comparator
    return q


def _values(trial: Trial, c: Criterion) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(value[x], extra extensions) for one leaf criterion; several for per-sex bounds."""
    p = c.params
    if c.kind == "age":
        if "older_than_years" in p:
            yield {"valueQuantity": {"value": p["older_than_years"], "comparator": ">", "unit": "a", "system": UCUM, "code": "a"}}, []
            return
        rng: dict[str, Any] = {}
        if "min_years" in p:
            rng["low"] = {"value": p["min_years"], "unit": "a", "system": UCUM, "code": "a"}
        if "max_years" in p:
            rng["high"] = {"value": p["max_years"], "unit": "a", "system": UCUM, "code": "a"}
        yield {"valueRange": rng}, _inclusive(p.get("min_inclusive", True), p.get("max_inclusive", True))
    elif c.kind == "lab" and "range" in p:
        r = p["range"]
        for sex in _sexes(r.get("min"), r.get("max")):
            rng = {}
            if "min" in r:
                rng["low"] = _quantity(trial, c, _bound(r["min"], sex))
            if "max" in r:
                rng["high"] = _quantity(trial, c, _bound(r["max"], sex))
            yield {"valueRange": rng}, _inclusive(r.get("min_inclusive", True), r.get("max_inclusive", True)) + _sex(sex)
    elif c.kind == "lab":
        for sex in _sexes(p["threshold"]):
            yield {"valueQuantity": _quantity(trial, c, _bound(p["threshold"], sex), p["op"])}, _sex(sex)
    elif c.kind == "lab-uln":
        yield {"valueQuantity": {"value": p["multiple"], "comparator": ">", "unit": "x ULN", "system": UCUM, "code": "{ULN}"}}, []
    elif c.kind == "test-result":
        yield {"valueCodeableConcept": _POSITIVE}, []
    elif c.kind in ("condition", "exposure", "medication-use", "treatment-history"):
        yield {"valueCodeableConcept": _concept(trial, _valuesets(c), c.params.get("label") or c.title)}, []
    else:
        yield {"valueBoolean": True}, []


def _sexes(*bounds: Any) -> list[str | None]:
    keys = [k for b in bounds if isinstance(b, dict) for k in b]
    return list(dict.fromkeys(keys)) or [None]


def _bound(b: Any, sex: str | None) -> float:
    return b[sex] if isinstance(b, dict) else b


def _sex(sex: str | None) -> list[dict[str, Any]]:
    return [_ext("applies-to-sex", valueCode=sex)] if sex else []


def _inclusive(lo: bool, hi: bool) -> list[dict[str, Any]]:
    return [_ext("range-low-inclusive", valueBoolean=bool(lo)), _ext("range-high-inclusive", valueBoolean=bool(hi))]


def _code(trial: Trial, c: Criterion) -> dict[str, Any]:
    if c.kind in ("lab", "lab-uln", "test-result"):
        return _concept(trial, _valuesets(c), c.params.get("label") or c.title)
    return _WHAT.get(c.kind, {"text": c.title})


def _characteristics(trial: Trial, top: Criterion, c: Criterion, path: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if c.rules:
        combination = [_ext("criterion-combination", valueCode=c.kind)]
        if "count" in c.params:
            combination.append(_ext("criterion-combination-count", valueInteger=int(c.params["count"])))
        for i, rule in enumerate(c.rules, 1):
            yield from _characteristics(trial, top, rule, path + combination + [_ext("criterion-rule", valueInteger=i)])
        return
    window = c.params.get("window_days"), c.params.get("window_months")
    for value, extra in _values(trial, c):
        ext = [_ext("criterion-id", valueString=top.id), _ext("criterion-kind", valueCode=c.kind)] + path + extra
        if window[0] is not None:
            ext.append(_ext("criterion-window", valueDuration={"value": window[0], "unit": "d", "system": UCUM, "code": "d"}))
        elif window[1] is not None:
            ext.append(_ext("criterion-window", valueDuration={"value": window[1], "unit": "mo", "system": UCUM, "code": "mo"}))
        for vs in _valuesets(c):
            url = as_str(as_dict(trial.valuesets.valuesets.get(vs)).get("url"))
            if url:
                ext.append(_ext("criterion-valueset", valueCanonical=url))
        applies = c.params.get("applies_to") or top.params.get("applies_to")
        if applies:
            for sex in [applies["sex"]] if isinstance(applies["sex"], str) else applies["sex"]:
                ext.append(_ext("applies-to-sex", valueCode=sex))
        if c.kind == "manual":
            ext.append(_ext("criterion-manual", valueBoolean=True))
        yield {"extension": ext, "code": _code(trial, c), **value, "exclude": top.type == EXCLUSION}


def trial_bundle(trial: Trial) -> dict[str, Any]:
    """A collection Bundle: the ResearchStudy, its enrollment Group and every value set used."""
    group_id = f"{trial.id}-enrollment"
    characteristics = [ch for c in trial.criteria for ch in _characteristics(trial, c, c, [])]
    group = {
        "resourceType": "Group",
        "id": group_id,
        "identifier": [{"system": trial.identifier_system, "value": group_id}],
        "type": "person",
        "actual": False,
        "name": f"Eligibility for {trial.title}",
        "characteristic": characteristics,
    }
    study = {
        "resourceType": "ResearchStudy",
        "id": trial.id,
        "identifier": [{"system": trial.identifier_system, "value": trial.id}],
        "title": trial.title,
        "status": "active",
        "description": trial.description or None,
        "condition": [{"coding": [c], "text": c.get("display")} for c in trial.conditions] or None,
        "enrollment": [{"reference": f"Group/{group_id}"}],
    }
    used = sorted({vs for c in trial.criteria for r in c.walk() for vs in _valuesets(r)} | {v for v in (trial.positive_results, trial.negative_results, trial.non_systemic_routes)})
    entries = [study, group] + [trial.valuesets.valuesets[v] for v in used if v in trial.valuesets.valuesets]
    base = "https://fhir-matcher.org/fhir"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": _clean(r)} for r in entries],
    }
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)


def _clean(value: Any) -> Any:
    """Drop None values (optional fields left out) before validation."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
