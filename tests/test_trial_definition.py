"""The trial is data: a second trial runs from a new file, and a bad file fails clearly."""

from datetime import date
from pathlib import Path

import pytest
from builders import ICD10, SCT, cc, condition, obs, patient, record

from fhir_matcher.criteria.evaluate import evaluate
from fhir_matcher.trial import TrialError, load_trial

SECOND_TRIAL = """
[trial]
id = "toy-nephritis"
title = "A second trial: lupus nephritis with preserved kidneys"
valueset_dirs = ["vs"]

[quantities.creatinine]
unit = "umol/L"
molar_mass = "113.12 g/mol"
decimals = 1

[[criteria]]
id = "adult"
type = "inclusion"
kind = "age"
older_than_years = 40

[[criteria]]
id = "nephritis"
type = "inclusion"
kind = "condition"
valuesets = ["target-immune-nephritis"]

[[criteria]]
id = "kidneys"
type = "inclusion"
kind = "lab"
valueset = "lab-creatinine"
quantity = "creatinine"
op = "<="
threshold = 120
window_days = 60

[[criteria]]
id = "no-diabetes"
type = "exclusion"
kind = "condition"
valuesets = ["site-diabetes"]
"""

SITE_VALUESET = """{"resourceType": "ValueSet", "id": "site-diabetes", "status": "active", "title": "Diabetes",
 "expansion": {"contains": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2",
   "designation": [{"language": "zh", "value": "2型糖尿病"}], "contains": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11"}]}]}}"""


@pytest.fixture()
def second_trial(tmp_path):
    (tmp_path / "vs").mkdir()
    (tmp_path / "vs" / "site-diabetes.json").write_text(SITE_VALUESET, encoding="utf-8")
    path = tmp_path / "trial.toml"
    path.write_text(SECOND_TRIAL, encoding="utf-8")
    return load_trial(path)


def test_second_trial_needs_a_file_not_code(second_trial):
    ln = condition(cc(SCT, "68815009"))
    r = evaluate(record(patient(birth="1970-01-01"), ln, obs("14682-9", 100, code="umol/L")), second_trial, date(2026, 11, 24))
    assert r.status == "candidate"
    assert set(r.criteria) == {"adult", "nephritis", "kidneys", "no-diabetes"}
    r = evaluate(record(patient(birth="1970-01-01"), ln, obs("2160-0", 1.5, code="mg/dL"), condition(cc(ICD10, "E11.9"))), second_trial, date(2026, 11, 24))
    assert (r.criteria["kidneys"].result, r.criteria["no-diabetes"].result, r.status) == ("not-met", "met", "ineligible")


@pytest.mark.parametrize("edit, message", [
    (("kind = \"lab\"", "kind = \"labb\""), "unknown kind 'labb'"),
    (("threshold = 120\n", ""), "criterion kidneys: threshold: required with op"),
    (("site-diabetes", "no-such-set"), "value set: 'no-such-set' not found"),
    (("quantity = \"creatinine\"", "quantity = \"urea\""), "criterion kidneys: quantity: 'urea' is not defined"),
    (("id = \"adult\"", "id = \"kidneys\""), "criterion kidneys: id: used by more than one criterion"),
    (("[trial]", "[trial"), "not a readable TOML"),
])
def test_bad_definitions_fail_with_the_file_named(tmp_path, edit, message):
    (tmp_path / "vs").mkdir()
    (tmp_path / "vs" / "site-diabetes.json").write_text(SITE_VALUESET, encoding="utf-8")
    path = tmp_path / "trial.toml"
    path.write_text(SECOND_TRIAL.replace(*edit), encoding="utf-8")
    with pytest.raises(TrialError) as e:
        load_trial(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_bundled_trial_has_every_criterion_of_criteria_md(trial):
    ids = [c.id for c in trial.criteria]
    assert ids == [
        "inc-age", "inc-diagnosis", "inc-refractory", "inc-life-expectancy", "inc-lymphocytes", "inc-neutrophils",
        "inc-hemoglobin", "inc-platelets", "inc-contraception", "inc-consent", "exc-neuro", "exc-cardiac",
        "exc-pregnancy", "exc-hiv", "exc-hepatitis", "exc-proliferation", "exc-creatinine", "exc-transaminases",
        "exc-bilirubin", "exc-investigator", "exc-prior-cell-therapy", "exc-immunosuppressant-washout",
        "exc-steroid-washout", "exc-other-risk", "exc-deceased",
    ]
    assert Path(trial.path).name == "cd19-baff-car-t.toml"
