"""Mutated copies of the demo Bundles: never an exception inside a kind, untouched patients unchanged.

Each example takes one demo input (a Bundle file, or the whole Bulk NDJSON folder), picks a
patient and some of the resources a kind of criterion reads, and mutates them the way real
data goes wrong: odd values, wrong JSON types, deleted fields, a wrong resourceType, an entry
turned into a nested Bundle or into junk. The input is then read through the file source and
every patient is evaluated with ``strict_kinds()``, so an exception inside any kind fails the
test instead of becoming "could not be evaluated". Every patient the mutation did not touch
must keep exactly the result of the unmutated input (result, reason, evidence and value).
"""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fhir_matcher.criteria.evaluate import evaluate, strict_kinds
from fhir_matcher.criteria.kinds import resource_types
from fhir_matcher.fhirjson import normalize_reference, subject_reference
from fhir_matcher.sources.files import FileSource, parse_file
from fhir_matcher.trial import load_trial

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
AS_OF = date(2026, 11, 24)
TRIAL = load_trial()

# One unit per demo input: a Bundle file, or the Bulk folder (its lines reference each other).
UNITS: dict[str, list[Any]] = {p.name: [json.loads(p.read_text(encoding="utf-8"))] for p in sorted(DEMO.glob("*.json"))}
UNITS["bulk"] = [doc for f in sorted((DEMO / "bulk").glob("*.ndjson")) for _, doc in parse_file(f, lambda *a: None)]


def _screen(docs: list[Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    src = FileSource(DEMO)
    for n, doc in enumerate(docs):
        src.add(doc, f"doc{n}")
    out = {}
    with strict_kinds():
        for record in src.builder.records():
            out[record.key] = evaluate(record, TRIAL, AS_OF).criteria_json()
    return out, [str(p) for p in src.builder.problems]


BASELINE = {name: _screen(docs)[0] for name, docs in UNITS.items()}


def test_baseline_is_the_demo_oracle():
    """The per-unit baseline equals the expected demo results (the oracle is not a tautology)."""
    expected = json.loads((ROOT / "tests" / "data" / "demo-expected.json").read_text(encoding="utf-8"))["patients"]
    merged = {k: v for results in BASELINE.values() for k, v in results.items()}
    assert set(merged) == set(expected)
    for key, criteria in merged.items():
        assert {c: o["result"] for c, o in criteria.items()} == expected[key]["criteria"], key


# ---------------------------------------------------------------- the mutations

NESTED = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Observation", "status": "final"}}]}
ODD_VALUES = [
    None, True, False, 0, -1, 0.0, -0.0, 1e308, -1e308, float("nan"), float("inf"), float("-inf"), 10**400, -(10**30),
    "", " ", "abc", "0", "-1", "1e400", "NaN", "Infinity", [], {}, [None], [1, "a"], {"value": "x"},
    "2026-13-45", "0001-01-01", "9999-12-31", "0000", "2026-02-29", "2026-11-24T25:61:00Z", "2026-11",
    "10*9/L", "0 g/dL", "/0", "0/L", "g/0", "1e999", "%", "[iU]", "degC", "mg**-400", "{tab}", "片", "×10⁹/L",
    "d", "s", "mo", "a", "BID", "Q0H", "<", ">=", "~", "final", "active", "entered-in-error",
    "10 mg q0h", "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
    "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
    "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
    "999999999999999999999999999999999999999999999999999999999999999999999999999 mg bid", "每日0次，每次4mg",
    NESTED,
]
_ODD = st.sampled_from(ODD_VALUES)
odd = st.one_of(_ODD, _ODD, _ODD, st.text(max_size=6), st.integers(), st.floats())
# Type-aware damage: what a number, a string or an object most plausibly turns into.
ODD_NUMBERS = st.sampled_from([0, -1, -0.0, 1e-300, 1e308, float("nan"), float("inf"), 10**400, -(10**30), "12", "abc", "", None, True, [], {}])
ODD_STRINGS = st.sampled_from(["", " ", "0", "-1", "abc", "1e400", "NaN", "0001-01-01", "9999-12-31", "2026-13-45", "0000", "2026-11",
                               "0 g/dL", "/0", "0/L", "g/0", "1e999", "mg**-400", "Infinity", "Q0H", "10 mg q0h", "~", 0, 10**400, None, [], {}])
ODD_OBJECTS = st.sampled_from([None, "abc", 0, [], {}, [None], NESTED, {"value": "x"}, {"value": 0}, {"start": "9999-12-31"}])
WRONG_TYPES = ["Observation", "Condition", "Patient", "MedicationStatement", "Medication", "Bundle", "Procedure", "Foo", "", 7, None]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


HOT = {"valueQuantity", "valueInteger", "valueString", "valueCodeableConcept", "valueBoolean", "referenceRange", "component",
       "interpretation", "dosage", "dosageInstruction", "doseAndRate", "timing", "dispenseRequest", "effectiveDateTime",
       "effectivePeriod", "onsetDateTime", "onsetPeriod", "recordedDate", "birthDate", "deceasedDateTime", "deceasedBoolean",
       "performedDateTime", "performedPeriod", "authoredOn", "issued", "clinicalStatus", "verificationStatus", "status",
       "contained", "medicationReference", "medicationCodeableConcept", "gender", "route"}


def _mutate_field(data: st.DataObject, resource: dict) -> None:
    # The subject and ids stay: a mutated reference could point at another patient.
    paths = [p for p in _paths(resource) if p[0] not in ("subject", "patient", "id", "resourceType")]
    if not paths:
        return
    leaves = [p for p in paths if not any(q[: len(p)] == p and q != p for q in paths)]
    hot = [p for p in paths if HOT & set(p)] or paths
    # Mostly the fields criteria read (values, units, ranges, doses, dates, statuses).
    path = data.draw(st.one_of(st.sampled_from(hot), st.sampled_from(hot), st.sampled_from(leaves), st.sampled_from(paths)), label="path")
    parent = resource
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    op = data.draw(st.sampled_from(["delete", "odd", "odd", "odd", "wrap", "unwrap"]), label="op")
    if op == "delete":
        parent.pop(last)
    elif op == "wrap":
        parent[last] = [parent[last]]
    elif op == "unwrap" and isinstance(parent[last], list) and parent[last]:
        parent[last] = parent[last][0]
    else:
        current = parent[last]
        typed = ODD_NUMBERS if isinstance(current, (int, float)) else ODD_STRINGS if isinstance(current, str) else ODD_OBJECTS
        parent[last] = copy.deepcopy(data.draw(typed | typed | odd, label="value"))


def _mutate_entry(data: st.DataObject, entries: list, i: int) -> None:
    """Structural damage to one Bundle entry."""
    op = data.draw(st.sampled_from(["entry", "resource", "fullUrl", "request", "nest", "type"]), label="entry-op")
    entry = entries[i]
    if op == "entry":
        entries[i] = copy.deepcopy(data.draw(odd, label="entry"))
    elif op == "resource":
        entry["resource"] = copy.deepcopy(data.draw(odd, label="resource"))
    elif op == "fullUrl":
        entry["fullUrl"] = copy.deepcopy(data.draw(odd, label="fullUrl"))
    elif op == "request":
        entry["request"] = copy.deepcopy(data.draw(odd, label="request"))
    elif op == "nest":
        entry["resource"] = {"resourceType": "Bundle", "type": "collection", "entry": [{k: v for k, v in entry.items() if k != "request"}]}
    else:
        entry["resource"]["resourceType"] = data.draw(st.sampled_from(WRONG_TYPES), label="resourceType")


def _owner(resource: Any, aliases: dict[str, str]) -> str | None:
    if not isinstance(resource, dict):
        return None
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource.get('id')}"
    ref = subject_reference(resource)
    return aliases.get(ref, normalize_reference(ref)) if ref else None


def _items(docs: list[Any]) -> list[tuple[list, int, dict | None]]:
    """Every resource as (container list, index, entry or None for an NDJSON line)."""
    out = []
    for n, doc in enumerate(docs):
        if doc.get("resourceType") == "Bundle":
            out += [(doc["entry"], i, e) for i, e in enumerate(doc["entry"])]
        else:
            out.append((docs, n, None))
    return out


def _resource(item: tuple[list, int, dict | None]) -> Any:
    container, i, entry = item
    return entry["resource"] if entry is not None else container[i]


def _mutate(data: st.DataObject, unit: str, types: set[str], alone: bool) -> tuple[list[Any], str]:
    """A mutated copy of a demo unit, and the patient whose resources were mutated.

    ``alone``: keep only that patient's resources (and the shared Medications), which makes
    an example cheap enough to try many.
    """
    docs = copy.deepcopy(UNITS[unit])
    items = _items(docs)
    aliases = {e["fullUrl"]: f"Patient/{e['resource']['id']}" for _, _, e in items
               if e and e.get("fullUrl") and e["resource"]["resourceType"] == "Patient"}
    target = data.draw(st.sampled_from(sorted(BASELINE[unit])), label="patient")
    if alone:
        keep = lambda r: r.get("resourceType") == "Medication" or _owner(r, aliases) == target  # noqa: E731
        for doc in docs:
            if doc.get("resourceType") == "Bundle":
                doc["entry"] = [e for e in doc["entry"] if keep(e["resource"])]
        docs = [d for d in docs if d.get("resourceType") == "Bundle" or keep(d)]
        items = _items(docs)
    mine = [it for it in items if _owner(_resource(it), aliases) == target and _resource(it)["resourceType"] in types | {"Patient"}]
    chosen = data.draw(st.lists(st.sampled_from(mine), min_size=1, max_size=4), label="resources")
    for item in chosen:
        container, i, entry = item
        if entry is not None and data.draw(st.integers(0, 3), label="structural") == 0:
            if isinstance(container[i], dict) and isinstance(container[i].get("resource"), dict):
                _mutate_entry(data, container, i)
            continue
        res = _resource(item)
        if isinstance(res, dict):
            if data.draw(st.integers(0, 9), label="retype") == 0:
                res["resourceType"] = data.draw(st.sampled_from(WRONG_TYPES), label="resourceType")
            else:
                for _ in range(data.draw(st.integers(1, 5), label="fields")):
                    _mutate_field(data, res)
    return docs, target


def _no_exception_anywhere(results: dict[str, dict[str, Any]]) -> None:
    for key, criteria in results.items():
        for cid, o in criteria.items():
            assert "could not be evaluated" not in o["reason"], (key, cid, o)
            json.dumps(o, allow_nan=False)  # a NaN or infinite value is not JSON

KINDS = sorted({c.kind for c in TRIAL.criteria} | {r.kind for c in TRIAL.criteria for r in c.rules})


def _reads(kind: str) -> set[str]:
    out: set[str] = set()
    for c in TRIAL.criteria:
        for rule in [c, *c.rules]:
            if rule.kind == kind:
                out |= resource_types(rule)
    return out or {"Patient"}


def test_every_kind_is_exercised():
    assert set(KINDS) >= {"age", "condition", "lab", "lab-uln", "test-result", "treatment-history", "exposure", "deceased", "manual", "any-of"}


_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, **_SETTINGS)
@given(unit=st.sampled_from(sorted(UNITS)), data=st.data())
def test_mutated_demo_bundles_never_raise_inside_a_kind(kind, unit, data):
    """Strict: an exception inside any kind fails here, with the mutation that caused it."""
    docs, _ = _mutate(data, unit, _reads(kind), alone=True)
    results, problems = _screen(docs)
    note(f"problems: {problems}")
    _no_exception_anywhere(results)


@settings(max_examples=40, **_SETTINGS)
@given(unit=st.sampled_from(sorted(UNITS)), kind=st.sampled_from(KINDS), data=st.data())
def test_mutations_leave_other_patients_exactly_as_they_were(unit, kind, data):
    docs, target = _mutate(data, unit, _reads(kind), alone=False)
    results, problems = _screen(docs)
    note(f"problems: {problems}")
    for key, expected in BASELINE[unit].items():
        if key != target:
            assert results.get(key) == expected, key
    _no_exception_anywhere(results)
