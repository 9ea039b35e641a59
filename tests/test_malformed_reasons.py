"""A malformed value makes its one criterion unknown, with a reason naming the resource and field.

Each case was an exception inside a kind before (or silently counted as absent).
"""

import pytest

from builders import RXNORM, SCT, cc, med, obs, patient, run
from fhir_matcher.criteria.evaluate import strict_kinds

PRED = cc(RXNORM, "8640", "prednisone")


def _outcome(trial, cid, *resources):
    with strict_kinds():  # an exception inside any kind fails the test
        return run(trial, *resources).criteria[cid]


def _hb(value=None, **kw):
    return obs("718-7", value, **kw)


@pytest.mark.parametrize("resource, field", [
    (_hb(10**400, code="g/dL"), "valueQuantity.value is not a number"),          # OverflowError before
    (_hb("abc", code="g/dL"), "valueQuantity.value is not a number"),
    (_hb(12, code="g/dL", comparator=["<"]), "valueQuantity.comparator is not one of"),  # TypeError before
    (_hb(12, code="g/dL", comparator="~"), "valueQuantity.comparator is not one of"),
    ({**_hb(), "valueQuantity": [12]}, "valueQuantity is not an object"),
    ({**_hb(), "valueInteger": 10**400}, "valueInteger is not an integer"),
    (_hb(12, code="g/dL", when="2026-13-45"), "effectiveDateTime is not a valid date"),  # ignored before
    (_hb(12, code="g/dL", when="9999-12-31"), "effectiveDateTime is not a valid date"),  # date overflow before
    (_hb(12, code="g/dL", when=None), "has no effective date"),
])
def test_malformed_lab_value_or_date(trial, resource, field):
    o = _outcome(trial, "inc-hemoglobin", resource)
    assert o.result == "unknown"
    assert f"{resource['id']} " in o.reason and field in o.reason, o.reason
    assert o.evidence == [f"Observation/{resource['id']}"]


@pytest.mark.parametrize("unit", ["0 g/dL", "0", "-1", "NaN", "inf", "1e-400"])
def test_unit_with_a_degenerate_factor(trial, unit):
    o = _outcome(trial, "inc-hemoglobin", _hb(12, unit=unit))  # ZeroDivisionError in pint before
    assert o.result == "unknown" and repr(unit) in o.reason, o.reason


def test_reference_range_high_of_zero(trial):
    alt = obs("1742-6", 50, code="U/L", referenceRange=[{"high": {"value": 0, "unit": "U/L"}}])
    ast = obs("1920-8", 20, code="U/L")
    o = _outcome(trial, "exc-transaminases", alt, ast)  # TypeError formatting a None ratio before
    assert o.result == "unknown"
    assert f"Observation/{alt['id']} referenceRange[0].high.value is not a positive number" in o.reason
    good = obs("1742-6", 50, code="U/L", referenceRange=[{"high": {"value": 40, "unit": "U/L"}}])
    assert _outcome(trial, "exc-transaminases", good, ast).result == "not-met"


def test_positive_test_with_an_unreadable_date_is_unknown_not_absent(trial):
    pos = obs("75622-1", when="2026-02-30", valueCodeableConcept=cc(SCT, "10828004", "Positive"))
    o = _outcome(trial, "exc-hiv", pos)
    assert o.result == "unknown" and "effectiveDateTime is not a valid date" in o.reason
    neg = obs("75622-1", when="2026-02-30", valueCodeableConcept=cc(SCT, "260385009", "Negative"))
    assert _outcome(trial, "exc-hiv", neg).result == "not-met"  # negative whatever its date


@pytest.mark.parametrize("dosage, reason", [
    ({"doseAndRate": [{"doseQuantity": {"value": "abc", "unit": "mg"}}], "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}},
     "dosage[0] dose quantity value is not a number"),
    ({"doseAndRate": [{"doseQuantity": {"value": 30, "unit": "mg"}}], "timing": {"repeat": {"frequency": 1, "period": 0, "periodUnit": "d"}}},
     "timing.repeat.frequency or period is not a positive number"),
    ({"doseAndRate": [{"doseQuantity": {"value": 30, "unit": "0 mg"}}], "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}},
     "dose unit"),
    ({"text": "10 mg q0h"}, "dose only as free text"),  # ZeroDivisionError before
    ({"text": "9" * 400 + " mg bid"}, "dose only as free text"),
])
def test_malformed_dosage(trial, dosage, reason):
    m = {**med(PRED, start="2026-11-20"), "dosage": [dosage]}
    o = _outcome(trial, "exc-steroid-washout", m)
    assert o.result == "unknown" and reason in o.reason, o.reason
    assert o.evidence == [f"MedicationStatement/{m['id']}"]


def test_birth_date_out_of_range(trial):
    assert _outcome(trial, "inc-age", patient(birth="9990-01-01")).result == "unknown"  # date overflow before
