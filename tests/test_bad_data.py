"""Bad data: named and skipped, or the criterion it feeds is unknown; never a traceback.

Property-based tests (hypothesis) throw arbitrary JSON at the parsers, the unit converter and
the engine.
"""

import json
import logging
import shutil
from datetime import date
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import LOINC, SCT, cc, condition, obs, patient
from fhir_matcher.cli import main
from fhir_matcher.criteria.evaluate import evaluate
from fhir_matcher.fhirjson import parse_date
from fhir_matcher.normalize.units import QuantitySpec, UnitError, UnitSystem
from fhir_matcher.sources.files import FileSource

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = json.loads((ROOT / "tests" / "data" / "demo-expected.json").read_text(encoding="utf-8"))
GOOD = ["transaction-us-ehr.json", "collection-registry-export.json"]


def test_mixed_good_and_malformed_files(tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    for name in GOOD:
        shutil.copy(ROOT / "bundles" / "demo" / name, src / name)
    bad_obs = [
        obs("26474-7", "abc", code="10*9/L", pid="bad-01"),  # non-numeric value
        obs("26499-4", 2.0, code="10*9/L", when="2026-02-30", pid="bad-01"),  # impossible date
        obs("718-7", 120, code="furlongs", pid="bad-01"),  # unknown unit
        {**obs("777-3", 200, code="10*9/L", pid="bad-01"), "code": "777-3"},  # wrong type
        {**obs("777-3", 200, code="10*9/L", pid="bad-01"), "status": ["final"]},  # wrong type
    ]
    lines = [patient("bad-01", birth="1980-01-01"), condition(cc(SCT, "55464009"), pid="bad-01"), *bad_obs,
             {"resourceType": "Observation", "id": "nosubject", "status": "final", "code": cc(LOINC, "777-3")},
             condition(cc(SCT, "55464009"), pid="ghost")]
    dup = condition(cc(SCT, "84757009"), pid="bad-01")
    lines += [dup, {**dup, "onsetDateTime": "2001-01-01"}]  # duplicated id, other content
    (src / "bad.ndjson").write_text("\n".join(json.dumps(x) for x in lines) + "\n[1, 2]\n{oops\n", encoding="utf-8")
    (src / "notfhir.json").write_text(json.dumps({"hello": "world"}), encoding="utf-8")
    (src / "truncated.json").write_text('{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": ', encoding="utf-8")
    (src / "empty.json").write_text("", encoding="utf-8")
    out = tmp_path / "out"
    caplog.set_level(logging.WARNING)
    assert main(["screen", "--source", str(src), "--as-of", "2026-11-24", "--out", str(out), "-q"]) == 3
    rows = {r["patient"]: r for r in map(json.loads, (out / "screening.ndjson").read_text(encoding="utf-8").splitlines())}
    # Every good patient exactly as in the clean demo run.
    good = [p for p in EXPECTED["patients"] if p in rows]
    assert len(good) == 12
    for p in good:
        assert {k: v["result"] for k, v in rows[p]["criteria"].items()} == EXPECTED["patients"][p]["criteria"], p
    # The malformed patient: each bad field makes its own criterion unknown, with the reason.
    bad = rows["Patient/bad-01"]["criteria"]
    assert bad["inc-lymphocytes"]["result"] == "unknown" and "not a number" in bad["inc-lymphocytes"]["reason"]
    assert bad["inc-neutrophils"]["result"] == "unknown"
    assert bad["inc-hemoglobin"]["result"] == "unknown" and "furlongs" in bad["inc-hemoglobin"]["reason"]
    assert bad["inc-platelets"]["result"] == "unknown"
    assert bad["exc-neuro"]["result"] == "met"  # the duplicated epilepsy condition still counts, once
    assert len(bad["exc-neuro"]["evidence"]) == 1
    problems = "\n".join(json.loads((out / "run.json").read_text())["problems"])
    for expected in ["valueQuantity.value is not a number", "effectiveDateTime is not a valid date", "code is not an object",
                     "status is not a code", "no subject", "not in the source", "same id appears again", "bad.ndjson:12: not a FHIR",
                     "bad.ndjson:13: invalid JSON", "notfhir.json: not a FHIR resource", "truncated.json: invalid JSON", "empty.json: invalid JSON"]:
        assert expected in problems, expected
    # Logs at the default level: no ids, names or values.
    for secret in ("bad-01", "demo-0", "demo-2", "ghost", "Demo Patient", "abc", "2026-02-30", "nosubject"):
        assert secret not in caplog.text, secret
    assert "Traceback" not in caplog.text


# ---------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["code", "status", "subject", "valueQuantity", "valueString", "valueCodeableConcept", "effectiveDateTime",
                          "effectivePeriod", "issued", "clinicalStatus", "verificationStatus", "onsetDateTime", "component",
                          "referenceRange", "interpretation", "medicationCodeableConcept", "medicationReference", "dosage",
                          "dosageInstruction", "performedDateTime", "performedPeriod", "birthDate", "gender", "deceasedDateTime",
                          "deceasedBoolean", "contained", "meta"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=40) | json_values)
def test_parse_date_never_raises(value):
    span = parse_date(value)
    assert span is None or span.lo <= span.hi


UNITS = UnitSystem()
_TRIALS = []


def _trial():
    if not _TRIALS:
        from fhir_matcher.trial import load_trial

        _TRIALS.append(load_trial())
    return _TRIALS[0]
CELLS = QuantitySpec("cell count", "10^9/L")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=16))
def test_unit_parser_only_ever_refuses_with_a_reason(unit):
    try:
        value = UNITS.convert(1.0, unit, None, CELLS)
    except UnitError as e:
        assert e.kind in ("missing", "unknown", "incompatible") and str(e)
    else:
        assert value == value  # a number (not NaN)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["10*9/L", "/uL", "G/L", "10*3/uL", "cells/mm3", "×10⁹/L"]), st.floats(min_value=0, max_value=1e6))
def test_conversions_are_linear(unit, x):
    one = UNITS.convert(1.0, unit, None, CELLS)
    assert abs(UNITS.convert(x, unit, None, CELLS) - x * one) <= 1e-9 * max(1.0, x * one)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["Observation", "Condition", "MedicationStatement", "MedicationRequest",
                                           "MedicationAdministration", "Procedure", "Consent"]),
                          st.dictionaries(fields, json_values, max_size=6)), max_size=6),
       st.dictionaries(fields, json_values, max_size=4))
def test_engine_degrades_per_field_on_arbitrary_resources(resources, patient_fields):
    trial = _trial()
    items = [{**patient_fields, "resourceType": "Patient", "id": "p1"}]
    for n, (rtype, body) in enumerate(resources):
        items.append({**body, "resourceType": rtype, "id": f"r{n}", "subject": {"reference": "Patient/p1"}})
    src = FileSource(Path("."))
    for item in items:
        src.add(item, "generated")
    recs = list(src.builder.records())
    assert len(recs) == 1
    result = evaluate(recs[0], trial, date(2026, 11, 24))
    crashed = {k: o.reason for k, o in result.criteria.items() if "could not be evaluated" in o.reason}
    assert not crashed, crashed


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_file_source_accepts_any_json(value):
    src = FileSource(Path("."))
    src.add(value, "generated")
    list(src.builder.records())
