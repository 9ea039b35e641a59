"""Each criterion of the bundled CAR-T trial at its edges (as-of 2026-11-24).

A wrong threshold, window, conversion factor or comparator handling fails here.
"""

import pytest

from builders import ATC, ICD10, ICD10CM, LOCAL, RXNORM, SCT, cc, condition, med, obs, patient, procedure, result, run

SLE = cc(SCT, "55464009", "Systemic lupus erythematosus")
PRED = cc(RXNORM, "8640", "prednisone")
MMF = cc(RXNORM, "68149", "mycophenolate mofetil")
HCQ = cc(RXNORM, "5521", "hydroxychloroquine")


# ---------------------------------------------------------------- age


@pytest.mark.parametrize("birth, expected", [
    ("2008-11-24", "not-met"),  # 18th birthday on the as-of date: not over 18
    ("2008-11-23", "met"),
    ("2008-11-25", "not-met"),
    ("1950-06-01", "met"),
    ("2008", "unknown"),  # year only: could be either side
    ("1990", "met"),
    (None, "unknown"),
])
def test_age(trial, birth, expected):
    assert result(trial, "inc-age", patient(birth=birth)) == expected


# ---------------------------------------------------------------- diagnosis


@pytest.mark.parametrize("code, expected", [
    (SLE, "met"),
    (cc(ICD10, "M32.1"), "met"),
    (cc(ICD10CM, "M32.14"), "met"),
    (cc("http://www.nhc.gov.cn/fhir/CodeSystem/icd-10-cn", "M32.100x001"), "met"),
    (cc(LOCAL, "D0012", "系统性红斑狼疮"), "met"),
    (cc(text="Systemic lupus erythematosus"), "met"),
    (cc(SCT, "89155008"), "met"),  # systemic sclerosis
    (cc(ICD10, "M34.1"), "met"),
    (cc(ICD10, "M33.1"), "met"),  # dermatomyositis
    (cc(ICD10, "M33.2"), "not-met"),  # polymyositis is not a target
    (cc(ICD10, "G36.0"), "met"),  # NMO
    (cc(SCT, "68815009"), "met"),  # lupus nephritis
    (cc(SCT, "200938002", "Discoid lupus erythematosus"), "not-met"),
    (cc(SCT, "200936003", "Lupus erythematosus"), "unknown"),  # which form? confirm, do not rule out
    (cc(text="Lupus erythematosus"), "unknown"),
    (cc(text="红斑狼疮"), "unknown"),
    (cc(text="盘状红斑狼疮"), "not-met"),  # discoid: specific, and not a target
    (cc(text="Localized scleroderma"), "not-met"),
    (cc(text="Scleroderma"), "unknown"),
    (cc(ICD10, "M06.9"), "not-met"),
])
def test_diagnosis_codes(trial, code, expected):
    assert result(trial, "inc-diagnosis", condition(code)) == expected


def test_diagnosis_hygiene(trial):
    assert result(trial, "inc-diagnosis", condition(SLE, verification="entered-in-error")) == "not-met"
    assert result(trial, "inc-diagnosis", condition(SLE, verification="refuted")) == "not-met"
    assert result(trial, "inc-diagnosis", condition(SLE, clinical="resolved")) == "met"  # history counts
    assert result(trial, "inc-diagnosis") == "not-met"


def test_diagnosis_text_match_reported(trial):
    o = run(trial, condition(cc(LOCAL, "X1", "系统性红斑狼疮"))).criteria["inc-diagnosis"]
    assert "text match" in o.reason


# ---------------------------------------------------------------- refractory


def test_refractory_two_classes_six_months(trial):
    assert result(trial, "inc-refractory", med(PRED, start="2026-05-24"), med(HCQ, start="2026-11-01")) == "met"
    assert result(trial, "inc-refractory", med(PRED, start="2026-05-25"), med(HCQ, start="2026-11-01")) == "not-met"


def test_refractory_needs_two_classes(trial):
    assert result(trial, "inc-refractory", med(PRED, start="2020-01-01")) == "not-met"
    two_steroids = (med(PRED, start="2020-01-01"), med(cc(ATC, "H02AB04", "methylprednisolone")))
    assert result(trial, "inc-refractory", *two_steroids) == "not-met"


def test_refractory_missing_and_local_codes(trial):
    assert result(trial, "inc-refractory") == "unknown"
    assert result(trial, "inc-refractory", med(cc(RXNORM, "161", "acetaminophen"))) == "not-met"
    local = (med(cc(LOCAL, "Y1", "甲泼尼龙片 4mg"), start="2024-01-01"), med(cc(LOCAL, "Y2", "吗替麦考酚酯胶囊")))
    assert result(trial, "inc-refractory", *local) == "met"


def test_inhaled_steroid_is_not_a_class(trial):
    inhaled = med(cc(RXNORM, "8640", "prednisone"), route=cc(SCT, "447694001", "Respiratory tract route"))
    assert result(trial, "inc-refractory", inhaled, med(HCQ)) == "not-met"


def test_refractory_ignores_entered_in_error(trial):
    assert result(trial, "inc-refractory", med(PRED, status="entered-in-error"), med(HCQ)) == "not-met"


# ---------------------------------------------------------------- blood counts

LYM, NEU, HB, PLT = "26474-7", "26499-4", "718-7", "777-3"


@pytest.mark.parametrize("cid, loinc, value, unit, code, expected", [
    ("inc-lymphocytes", LYM, 0.3, None, "10*9/L", "not-met"),  # > 0.3
    ("inc-lymphocytes", LYM, 0.31, None, "10*9/L", "met"),
    ("inc-lymphocytes", "731-0", 310, "cells/uL", None, "met"),
    ("inc-lymphocytes", LYM, 300, None, "/uL", "not-met"),
    ("inc-neutrophils", NEU, 0.5, "x10^9/L", None, "met"),  # >= 0.5
    ("inc-neutrophils", NEU, 0.49, "G/L", None, "not-met"),
    ("inc-neutrophils", "751-8", 0.5, None, "10*3/uL", "met"),
    ("inc-hemoglobin", HB, 6.0, None, "g/dL", "met"),  # 60 g/L
    ("inc-hemoglobin", HB, 59, None, "g/L", "not-met"),
    ("inc-hemoglobin", "59260-0", 3.72, None, "mmol/L", "not-met"),  # 59.9 g/L
    ("inc-hemoglobin", "59260-0", 3.73, None, "mmol/L", "met"),  # 60.1 g/L
    ("inc-platelets", PLT, 30, None, "10*9/L", "met"),
    ("inc-platelets", PLT, 29000, "/mm3", None, "not-met"),
    ("inc-platelets", PLT, 30, "×10⁹/L", None, "met"),
])
def test_blood_count_thresholds(trial, cid, loinc, value, unit, code, expected):
    assert result(trial, cid, obs(loinc, value, unit=unit, code=code)) == expected


def test_lab_window_ends(trial):
    assert result(trial, "inc-platelets", obs(PLT, 100, code="10*9/L", when="2026-10-25")) == "met"
    assert result(trial, "inc-platelets", obs(PLT, 100, code="10*9/L", when="2026-10-24")) == "unknown"
    assert result(trial, "inc-platelets", obs(PLT, 100, code="10*9/L", when="2026-11-25")) == "unknown"  # after as-of


def test_most_recent_value_decides(trial):
    old = obs(PLT, 100, code="10*9/L", when="2026-11-01")
    new = obs(PLT, 20, code="10*9/L", when="2026-11-20")
    assert result(trial, "inc-platelets", old, new) == "not-met"


def test_lab_hygiene_and_missing_units(trial):
    assert result(trial, "inc-platelets", obs(PLT, 100, code="10*9/L", status="preliminary")) == "unknown"
    assert result(trial, "inc-platelets", obs(PLT, 100, code="10*9/L", status="entered-in-error")) == "unknown"
    o = run(trial, obs(PLT, 100)).criteria["inc-platelets"]
    assert o.result == "unknown" and "no unit" in o.reason
    assert result(trial, "inc-platelets", obs(PLT, 100, unit="bananas")) == "unknown"
    # A newer result without a unit is not skipped in favour of an older one.
    assert result(trial, "inc-platelets", obs(PLT, 100, code="10*9/L", when="2026-11-01"), obs(PLT, 100, when="2026-11-20")) == "unknown"


def test_comparators(trial):
    assert result(trial, "inc-neutrophils", obs(NEU, 0.5, code="10*9/L", comparator="<")) == "not-met"
    assert result(trial, "inc-lymphocytes", obs(LYM, 0.5, code="10*9/L", comparator="<")) == "unknown"
    assert result(trial, "inc-lymphocytes", obs(LYM, 0.3, code="10*9/L", comparator=">")) == "met"
    assert result(trial, "inc-lymphocytes", obs(LYM, 0.2, code="10*9/L", comparator="<")) == "not-met"


def test_value_string_number_has_no_unit(trial):
    o = obs(NEU, when="2026-11-20")
    o["valueString"] = "<0.5"
    out = run(trial, o).criteria["inc-neutrophils"]
    assert out.result == "unknown" and "no unit" in out.reason


def test_local_lab_code_by_chinese_name(trial):
    code = cc(LOCAL, "L001", "淋巴细胞绝对值")
    assert result(trial, "inc-lymphocytes", obs(code, 1.1, unit="10^9/L")) == "met"


def test_percentage_result_is_not_a_count(trial):
    pct = obs(cc(LOCAL, "L002", "淋巴细胞百分比"), 25, unit="%", when="2026-11-21")
    count = obs(LYM, 1.1, code="10*9/L", when="2026-11-20")
    assert result(trial, "inc-lymphocytes", pct, count) == "met"


# ---------------------------------------------------------------- chemistry


@pytest.mark.parametrize("loinc, value, unit, expected", [
    ("2160-0", 2.0, "mg/dL", "not-met"),  # = 176.8 umol/L: not above
    ("2160-0", 2.01, "mg/dL", "met"),
    ("14682-9", 176.8, "umol/L", "not-met"),
    ("14682-9", 176.9, "umol/L", "met"),
])
def test_creatinine(trial, loinc, value, unit, expected):
    assert result(trial, "exc-creatinine", obs(loinc, value, code=unit)) == expected


@pytest.mark.parametrize("loinc, value, unit, expected", [
    ("14631-6", 51, "umol/L", "not-met"),
    ("14631-6", 51.1, "umol/L", "met"),
    ("1975-2", 2.98, "mg/dL", "not-met"),  # 50.96 umol/L
    ("1975-2", 3.0, "mg/dL", "met"),  # 51.3
])
def test_bilirubin(trial, loinc, value, unit, expected):
    assert result(trial, "exc-bilirubin", obs(loinc, value, code=unit)) == expected


def test_transaminases(trial):
    alt = lambda v, **kw: obs("1742-6", v, code="U/L", **kw)
    ast = lambda v, **kw: obs("1920-8", v, code="U/L", **kw)
    assert result(trial, "exc-transaminases", alt(120), ast(30)) == "not-met"  # 3 x 40 is not above
    assert result(trial, "exc-transaminases", alt(121), ast(30)) == "met"
    assert result(trial, "exc-transaminases", alt(30), ast(121)) == "met"
    assert result(trial, "exc-transaminases", alt(30)) == "unknown"  # AST missing
    assert result(trial, "exc-transaminases", alt(200)) == "met"
    ranged = alt(150, referenceRange=[{"high": {"value": 50, "unit": "U/L"}}])
    assert result(trial, "exc-transaminases", ranged, ast(20)) == "not-met"  # 3 x ULN 50 = 150
    assert result(trial, "exc-transaminases", obs("1742-6", 2.1, code="ukat/L"), ast(20)) == "met"  # 126 U/L


# ---------------------------------------------------------------- cardiac


def test_cardiac(trial):
    qtc = lambda v, unit="ms", **kw: obs("8636-3", v, code=unit, **kw)
    assert result(trial, "exc-cardiac") == "unknown"
    assert result(trial, "exc-cardiac", patient(gender="female"), qtc(470)) == "not-met"
    assert result(trial, "exc-cardiac", patient(gender="female"), qtc(471)) == "met"
    assert result(trial, "exc-cardiac", patient(gender="male"), qtc(451)) == "met"
    assert result(trial, "exc-cardiac", patient(gender="male"), qtc(0.45, "s")) == "not-met"
    assert result(trial, "exc-cardiac", patient(gender="unknown"), qtc(460)) == "unknown"
    assert result(trial, "exc-cardiac", patient(gender="male"), qtc(500, when="2026-08-25")) == "unknown"  # 91 days
    assert result(trial, "exc-cardiac", patient(gender="male"), qtc(500, when="2026-08-26")) == "met"
    assert result(trial, "exc-cardiac", condition(cc(SCT, "111975006", "Prolonged QT interval"), clinical="resolved")) == "met"
    assert result(trial, "exc-cardiac", condition(cc(ICD10, "I48.0"))) == "met"


# ---------------------------------------------------------------- infections, pregnancy


def test_pregnancy(trial):
    assert result(trial, "exc-pregnancy") == "not-met"
    assert result(trial, "exc-pregnancy", condition(cc(SCT, "77386006"), onset="2026-09-01")) == "met"
    assert result(trial, "exc-pregnancy", condition(cc(SCT, "77386006"), onset="2026-09-01", clinical="resolved")) == "not-met"
    assert result(trial, "exc-pregnancy", condition(cc(SCT, "77386006"), onset="2024-01-01")) == "not-met"  # stale
    hcg = obs("2106-3", when="2026-11-10", valueCodeableConcept=cc(SCT, "10828004", "Positive"))
    assert result(trial, "exc-pregnancy", hcg) == "met"
    neg = obs("2118-8", when="2026-11-10")
    neg["valueString"] = "阴性"
    assert result(trial, "exc-pregnancy", neg) == "not-met"
    old = obs("2106-3", when="2026-10-01", valueCodeableConcept=cc(SCT, "10828004", "Positive"))
    assert result(trial, "exc-pregnancy", old) == "not-met"


def test_hiv(trial):
    assert result(trial, "exc-hiv") == "not-met"
    assert result(trial, "exc-hiv", condition(cc(ICD10, "B20"), clinical="inactive")) == "met"
    pos = obs("75622-1", when="2019-01-01")
    pos["valueString"] = "阳性"
    assert result(trial, "exc-hiv", pos) == "met"
    neg = obs("75622-1", when="2026-11-01", valueCodeableConcept=cc(SCT, "260385009", "Negative"))
    assert result(trial, "exc-hiv", neg) == "not-met"


def test_hepatitis(trial):
    assert result(trial, "exc-hepatitis") == "not-met"
    assert result(trial, "exc-hepatitis", condition(cc(SCT, "61977001"))) == "met"
    assert result(trial, "exc-hepatitis", condition(cc(ICD10, "B18.1"), clinical="resolved")) == "not-met"
    pos = obs("5196-1", when="2025-01-01", valueCodeableConcept=cc(SCT, "10828004", "Positive"))
    neg = obs("5196-1", when="2026-06-01", valueCodeableConcept=cc(SCT, "260385009", "Negative"))
    assert result(trial, "exc-hepatitis", pos, neg) == "not-met"  # latest decides
    assert result(trial, "exc-hepatitis", pos) == "met"
    assert result(trial, "exc-hepatitis", obs("29615-2", 20, unit="IU/mL", comparator="<")) == "not-met"
    assert result(trial, "exc-hepatitis", obs("29615-2", 3400, unit="IU/mL")) == "met"
    det = obs("11011-4", when="2026-01-01")
    det["valueString"] = "Not detected"
    assert result(trial, "exc-hepatitis", det) == "not-met"


def test_neuro(trial):
    assert result(trial, "exc-neuro") == "not-met"
    assert result(trial, "exc-neuro", condition(cc(ICD10, "G40.909"), clinical="resolved")) == "met"
    assert result(trial, "exc-neuro", condition(cc("http://www.nhc.gov.cn/fhir/CodeSystem/icd-10-cn", "G40.900"))) == "met"
    assert result(trial, "exc-neuro", condition(cc(ICD10, "I63.9"))) == "met"
    assert result(trial, "exc-neuro", condition(cc(LOCAL, "N1", "脑梗死"))) == "met"


# ---------------------------------------------------------------- cell therapy, washouts, deceased

CART = cc(text="CAR-T cell infusion")


def test_prior_cell_therapy(trial):
    assert result(trial, "exc-prior-cell-therapy") == "not-met"
    assert result(trial, "exc-prior-cell-therapy", procedure(CART, when="2026-08-24")) == "met"
    assert result(trial, "exc-prior-cell-therapy", procedure(CART, when="2026-08-23")) == "not-met"
    assert result(trial, "exc-prior-cell-therapy", med(cc(text="tisagenlecleucel"), start="2026-10-01", status="completed")) == "met"
    assert result(trial, "exc-prior-cell-therapy", procedure(CART, status="not-done")) == "not-met"


def test_immunosuppressant_washout(trial):
    assert result(trial, "exc-immunosuppressant-washout", med(MMF, start="2025-01-01")) == "met"  # active, no end
    assert result(trial, "exc-immunosuppressant-washout", med(MMF, start="2025-01-01", end="2026-11-17", status="completed")) == "met"
    assert result(trial, "exc-immunosuppressant-washout", med(MMF, start="2025-01-01", end="2026-11-16", status="completed")) == "not-met"


def test_washout_never_changes_status(trial):
    base = (patient(), condition(SLE), med(PRED, start="2020-01-01", dose=40), med(MMF, start="2020-01-01"))
    r = run(trial, *base)
    assert r.criteria["exc-immunosuppressant-washout"].result == "met"
    assert r.criteria["exc-steroid-washout"].result == "met"
    assert r.status != "ineligible"


@pytest.mark.parametrize("drug, dose, per_day, expected", [
    (PRED, 20, 1, "not-met"),  # 20 mg/day is not above 20
    (PRED, 10, 2, "not-met"),
    (PRED, 10.5, 2, "met"),
    (cc(RXNORM, "6902", "methylprednisolone"), 16, 1, "not-met"),  # 20 mg pred-eq
    (cc(RXNORM, "6902", "methylprednisolone"), 20, 1, "met"),  # 25 mg pred-eq
    (cc(RXNORM, "3264", "dexamethasone"), 3.75, 1, "met"),  # 25 mg pred-eq
    (cc(RXNORM, "3264", "dexamethasone"), 3, 1, "not-met"),  # 20
    (cc(RXNORM, "5492", "hydrocortisone"), 100, 1, "met"),  # 25
])
def test_steroid_washout_dose(trial, drug, dose, per_day, expected):
    assert result(trial, "exc-steroid-washout", med(drug, start="2026-11-01", dose=dose, per_day=per_day)) == expected


def test_steroid_washout_edges(trial):
    inhaled = med(cc(RXNORM, "19831", "budesonide"), dose=800, unit="ug", route=cc(SCT, "447694001", "Respiratory tract route"))
    assert result(trial, "exc-steroid-washout", inhaled) == "not-met"
    assert result(trial, "exc-steroid-washout", med(PRED, start="2026-11-01")) == "unknown"  # no dose
    assert result(trial, "exc-steroid-washout", med(PRED, start="2026-01-01", end="2026-11-16", dose=60, status="completed")) == "not-met"
    tablets = med(cc(LOCAL, "Y1", "甲泼尼龙片 4mg"), start="2026-11-01", dose=6, unit="片")
    o = run(trial, tablets).criteria["exc-steroid-washout"]
    assert o.result == "met" and o.value == 30  # 24 mg methylprednisolone = 30 mg prednisone


def test_deceased(trial):
    assert result(trial, "exc-deceased", patient(deceasedBoolean=True)) == "met"
    assert result(trial, "exc-deceased", patient(deceasedDateTime="2026-11-24")) == "met"
    assert result(trial, "exc-deceased", patient(deceasedDateTime="2026-11-25")) == "not-met"
    assert result(trial, "exc-deceased", patient()) == "not-met"


# ---------------------------------------------------------------- status


def good_patient(*extra):
    return (
        patient(birth="1985-03-02"),
        condition(SLE),
        med(PRED, start="2022-01-01", dose=10),
        med(HCQ, start="2022-01-01"),
        obs(LYM, 1.0, code="10*9/L"), obs(NEU, 2.0, code="10*9/L"), obs(HB, 120, code="g/L"), obs(PLT, 200, code="10*9/L"),
        obs("14682-9", 70, code="umol/L"), obs("14631-6", 10, code="umol/L"),
        obs("1742-6", 20, code="U/L"), obs("1920-8", 25, code="U/L"), obs("8636-3", 420, code="ms"),
        *extra,
    )


def test_status_candidate(trial):
    r = run(trial, *good_patient())
    assert r.status == "candidate", {k: (o.result, o.reason) for k, o in r.criteria.items() if o.result in ("unknown", "not-met")}
    manual = {k for k, o in r.criteria.items() if o.result == "manual"}
    assert manual == {"inc-life-expectancy", "inc-contraception", "inc-consent", "exc-proliferation", "exc-investigator", "exc-other-risk"}


def test_status_potential_candidate_when_data_missing(trial):
    base = [r for r in good_patient() if r.get("code", {}).get("coding", [{}])[0].get("code") != "777-3"]
    assert run(trial, *base).status == "potential-candidate"


def test_status_ineligible(trial):
    assert run(trial, *good_patient(condition(cc(ICD10, "G40.9")))).status == "ineligible"
    assert run(trial, patient(birth="2010-01-01"), *good_patient()[1:]).status == "ineligible"
